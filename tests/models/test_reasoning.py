"""Descriptor Reasoning: blocks against independent computations, sampling against a hand
computation, the matching rule, the release loader on zips in the official layout, and the
one-line errors. (Parity with the reference code: benchmarks/reasoning_parity.py.)"""

from __future__ import annotations

import math
import zipfile

import pytest
import torch
from helpers import REASONING_CONFIG, random_reasoning_release, random_reasoning_state

from tiepoint.errors import ConfigError, ImageError, WeightsError
from tiepoint.models import get_model
from tiepoint.models.matchers.reasoning import Reasoning
from tiepoint.models.matchers.reasoning_checkpoint import read_release
from tiepoint.models.matchers.reasoning_head import (
    ReasoningBlock,
    ReasoningHead,
    mutual_nn,
    reasoning_similarity,
    resize_long_edge,
    sample_semantic,
)


def _reference_keys(layers: int) -> set[str]:
    """`ReasoningBase.state_dict()` key names, spelled out from the reference's modules."""
    keys = {
        f"{m}.{p}"
        for m in ("dino_reprojection", "extractor_reprojection", "joint_features")
        for p in ("weight", "bias")
    }
    block = ["attention.in_proj_weight", "attention.in_proj_bias", "attention.out_proj.weight"]
    block += ["attention.out_proj.bias", "fc.weight", "fc.bias"]
    block += [f"mlp.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    stacks = ("texture_attentions", "semantic_attentions")
    return keys | {f"{s}.{i}.{k}" for s in stacks for i in range(layers) for k in block}


def test_head_has_the_reference_layout():
    s = ReasoningHead(64, 384, layers=3).state_dict()
    assert set(s) == _reference_keys(3)
    assert s["dino_reprojection.weight"].shape == (256, 384)
    assert s["extractor_reprojection.weight"].shape == (256, 64)
    assert s["texture_attentions.2.mlp.0.weight"].shape == (512, 512)
    assert s["semantic_attentions.0.mlp.4.weight"].shape == (256, 512)
    assert s["joint_features.weight"].shape == (256, 512)


def test_block_against_loop():
    """MHA (2 heads) by explicit per-head loops over the packed in-projection, then fc, then
    cur + MLP([attn, cur]) with no normalisation anywhere."""
    torch.manual_seed(0)
    blk = ReasoningBlock(dim=8, heads=2)
    q_in, cur = torch.randn(1, 5, 8), torch.randn(1, 6, 8)
    w, bias = blk.attention.in_proj_weight, blk.attention.in_proj_bias
    q = q_in[0] @ w[:8].T + bias[:8]
    k = cur[0] @ w[8:16].T + bias[8:16]
    v = cur[0] @ w[16:].T + bias[16:]
    # the residual is on the keys' side, so queries and keys must number the same
    with pytest.raises(RuntimeError):
        blk(q_in, cur)
    cur5 = cur[:, :5]
    k5, v5 = k[:5], v[:5]
    heads5 = torch.zeros(5, 8)
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        for i in range(5):
            logits = torch.stack([(q[i, sl] * k5[j, sl]).sum() / 2 for j in range(5)])
            heads5[i, sl] = (torch.softmax(logits, 0)[:, None] * v5[:, sl]).sum(0)
    attn = blk.fc(blk.attention.out_proj(heads5))
    mlp = blk.mlp
    hidden = torch.relu(mlp[0](torch.cat([attn, cur5[0]], -1)))
    expected = cur5[0] + mlp[4](torch.relu(mlp[2](hidden)))
    torch.testing.assert_close(blk(q_in, cur5)[0], expected, atol=1e-5, rtol=1e-5)


def test_stacks_query_order_and_semantic_independence():
    torch.manual_seed(1)
    head = ReasoningHead(16, 32, dim=8, layers=3, heads=1)
    desc, sem = torch.randn(1, 4, 16), torch.randn(1, 4, 32)
    out = head(desc, sem)
    s, loc = head.dino_reprojection(sem), head.extractor_reprojection(desc)
    t = head.texture_attentions
    x0 = t[0](s, loc)  # even layers query with the semantics
    x1 = t[1](loc, x0)  # odd layers with the projected local descriptors
    x2 = t[2](s, x1)
    torch.testing.assert_close(out["all_reasoning_features"], torch.stack([x0, x1, x2]))
    assert out["all_semantic_features"].shape == (3, 1, 4, 8)
    # the semantic stack never sees the local descriptors
    other = head(torch.randn(1, 4, 16), sem)
    torch.testing.assert_close(other["semantic_features"], out["semantic_features"])
    assert not torch.allclose(other["reasoning_features"], out["reasoning_features"])


def test_sampling_against_hand_computation():
    """A map of 3×4 patches: at a patch centre (14j+7, 14i+7) bicubic returns the node itself; a
    point a quarter patch right of a centre, in a map constant along rows and cubic-convolved
    along x, gives the hand-computed 1-D cubic value. Each point comes out L2-normalised."""
    fmap = torch.zeros(1, 2, 3, 4)
    fmap[0, 0] = torch.arange(12.0).reshape(3, 4) + 1
    fmap[0, 1] = 2.0
    kpts = torch.tensor([[[14 * 2 + 7, 14 * 1 + 7], [7.0, 7.0]]])
    out = sample_semantic(kpts, fmap)
    raw = torch.tensor([[7.0, 2.0], [1.0, 2.0]])
    torch.testing.assert_close(out[0], raw / raw.norm(dim=1, keepdim=True))
    # a quarter patch to the right of centre (1, 1): t = 0.25 along x, rows unchanged
    a, t = -0.75, 0.25

    def k(d):
        d = abs(d)
        return (
            ((a + 2) * d - (a + 3)) * d * d + 1
            if d <= 1
            else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        )

    row = [5.0, 6.0, 7.0, 8.0]  # row 1 of channel 0
    value = sum(k(t - j) * row[min(max(1 + j, 0), 3)] for j in (-1, 0, 1, 2))
    out = sample_semantic(torch.tensor([[[14 * 1 + 7 + 3.5, 14 * 1 + 7]]]), fmap)
    expected = torch.tensor([value, 2.0])
    torch.testing.assert_close(out[0, 0], expected / expected.norm())


def test_resize_long_edge():
    img = torch.rand(1, 3, 480, 640)
    out, scale = resize_long_edge(img, 896)
    assert out.shape[-2:] == (672, 896) and scale == 672 / 480
    out, scale = resize_long_edge(torch.rand(1, 3, 1000, 333), 896)
    assert out.shape[-2:] == (896, 298) and scale == 896 / 1000  # int() truncates


def test_matching_rule_product_and_mutual():
    """Texture alone pairs 0↔0; the semantic factor flips it to 0↔1 when conditioning is on;
    hand-checked 2×2 similarities."""
    f0 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    f1 = torch.tensor([[[1.0, 0.0], [0.8, 0.6]]])
    s0 = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    s1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    m0, _ = mutual_nn(reasoning_similarity(f0, s0, f1, s1, conditioning=False))
    assert m0.tolist() == [[0, -1]]  # 1→1 is not mutual: column 1 prefers row 0 (0.8 > 0.6)
    sim = reasoning_similarity(f0, s0, f1, s1, conditioning=True)
    torch.testing.assert_close(sim, torch.tensor([[[0.0, 0.8], [0.0, 0.0]]]))
    m0, _ = mutual_nn(sim)
    assert m0.tolist() == [[1, -1]]
    m0, m1 = mutual_nn(torch.tensor([[[0.9, 0.1], [0.8, 0.2], [0.1, 0.7]]]))
    assert m0.tolist() == [[0, -1, 1]] and m1.tolist() == [[0, 2]]


# ------------------------------------------------------------------------- release files
def _matcher(release, **extra):
    conf = {"name": "reasoning", "weights": str(release), "dino_weights": None, "long_side": 112}
    return get_model("matcher", {**conf, **extra})


def test_release_zip_loads_newest_checkpoint_and_drops_prefixes(tmp_path):
    states = random_reasoning_release(tmp_path / "xfeat.zip")
    assert all(set(s) == _reference_keys(2) for s in states.values())
    rel = read_release(tmp_path / "xfeat.zip")
    assert rel.extractor == "xfeat" and rel.source.endswith("checkpoint_1_1000.pt")
    assert rel.arch["layers"] == 2 and rel.arch["semantic_conditioning"] is True
    model = _matcher(tmp_path / "xfeat.zip")
    assert isinstance(model, Reasoning) and len(model.head.texture_attentions) == 2
    for k, v in states["xfeat/checkpoint_1_1000.pt"].items():
        assert torch.equal(model.head.state_dict()[k], v), k
    older = _matcher(tmp_path / "xfeat.zip", checkpoint="checkpoint_0_0.pt")
    first = states["xfeat/checkpoint_0_0.pt"]["joint_features.weight"]
    assert torch.equal(older.head.joint_features.weight, first)
    # the unpacked folder works the same
    with zipfile.ZipFile(tmp_path / "xfeat.zip") as zf:
        zf.extractall(tmp_path / "unpacked")
    folder = _matcher(tmp_path / "unpacked" / "xfeat", checkpoint="checkpoint_1_1000.pt")
    assert torch.equal(folder.head.joint_features.weight, model.head.joint_features.weight)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_release_files_are_one_line_errors(tmp_path):
    random_reasoning_release(tmp_path / "noconf.zip", config=None)
    with pytest.raises(WeightsError) as e:
        read_release(tmp_path / "noconf.zip")
    assert "model_config.yaml" in _one_line(e) and "noconf.zip" in str(e.value)
    bad = {**REASONING_CONFIG, "extractor": {"model_name": "sift"}}
    random_reasoning_release(tmp_path / "sift.zip", config=bad)
    with pytest.raises(ConfigError) as e:
        read_release(tmp_path / "sift.zip")
    assert "sift" in _one_line(e) and "xfeat" in str(e.value)  # names the valid choices
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(WeightsError, match="not a zip"):
        read_release(tmp_path / "junk.zip")


def test_dimension_mismatch_and_tiny_image_are_one_line_errors(tmp_path):
    random_reasoning_release(tmp_path / "xfeat.zip")
    model = _matcher(tmp_path / "xfeat.zip").eval()
    image, kpts = torch.rand(1, 3, 60, 80), torch.rand(1, 10, 2) * 50
    with pytest.raises(ConfigError) as e:
        model.refine(image, kpts, torch.randn(1, 10, 128))  # ALIKED-size descriptors
    assert "128" in _one_line(e) and "64" in str(e.value)
    with pytest.raises(ImageError) as e:  # long side 112 → 112×2 px: under one 14-px patch
        model.refine(torch.rand(1, 3, 3, 200), kpts, torch.randn(1, 10, 64))
    assert "smaller than one" in _one_line(e)
    # and the matcher refuses raw descriptors it cannot refine
    data = {"keypoints0": kpts, "keypoints1": kpts}
    data |= {"descriptors0": torch.randn(1, 10, 64), "descriptors1": torch.randn(1, 10, 64)}
    with pytest.raises(ConfigError) as e:
        model(data)
    assert "refined" in _one_line(e)


def test_refine_then_match_equals_matching_with_images(tmp_path):
    """Cached refinement (descriptors = texture ‖ semantic, 512-D) matches exactly as refining
    inside the matcher from the images does."""
    random_reasoning_release(tmp_path / "xfeat.zip")
    model = _matcher(tmp_path / "xfeat.zip").eval()
    torch.manual_seed(0)
    ims = [torch.rand(1, 3, 70, 90), torch.rand(1, 3, 80, 60)]
    kp = [torch.rand(1, 40, 2) * 55, torch.rand(1, 30, 2) * 55]
    desc = [torch.nn.functional.normalize(torch.randn(1, n, 64), dim=-1) for n in (40, 30)]
    with torch.no_grad():
        refined = [model.refine(i, k, d)["descriptors"] for i, k, d in zip(ims, kp, desc)]
        assert refined[0].shape == (1, 40, 512)
        cached = model(
            {
                "keypoints0": kp[0],
                "keypoints1": kp[1],
                "descriptors0": refined[0],
                "descriptors1": refined[1],
            }
        )
        direct = model(
            {
                "keypoints0": kp[0],
                "keypoints1": kp[1],
                "descriptors0": desc[0],
                "descriptors1": desc[1],
                "image0": ims[0],
                "image1": ims[1],
            }
        )
    assert torch.equal(cached["matches0"], direct["matches0"])
    f0, s0 = refined[0][..., :256], refined[0][..., 256:]
    f1, s1 = refined[1][..., :256], refined[1][..., 256:]
    m0, m1 = mutual_nn(reasoning_similarity(f0, s0, f1, s1, True))
    assert torch.equal(cached["matches0"], m0) and torch.equal(cached["matches1"], m1)
    assert (cached["matches0"] > -1).any()


def test_pipeline_extract_caches_refined_descriptors(tmp_path, data_dir):
    """`xfeat+reasoning` through the public Matcher: `extract` returns the refined 512-D
    descriptors (so features are cacheable) and `match` equals matching those cached features."""
    from helpers import require

    from tiepoint import Matcher

    random_reasoning_release(tmp_path / "xfeat.zip")
    folder = require(data_dir / "homography" / "oxford_bikes")
    overrides = ["matcher.dino_weights=null", "matcher.long_side=112", "preprocessing.resize=320"]
    overrides.append("extractor.max_num_keypoints=300")
    m = Matcher(
        "xfeat+reasoning", device="cpu", weights=tmp_path / "xfeat.zip", overrides=overrides
    )
    assert m.matcher.arch["layers"] == 2
    f0, f1 = m.extract(folder / "img1.png"), m.extract(folder / "img2.png")
    assert f0.descriptors.shape == (len(f0.keypoints), 512)
    assert 100 < len(f0.keypoints) <= 300
    again = m.match_features(f0, f1)
    direct = m.match(folder / "img1.png", folder / "img2.png")
    assert (again.matches == direct.matches).all() and len(direct.matches) > 0


def test_head_state_dict_file_loads_too(tmp_path):
    """Besides release zips, a plain state dict of the head (tiepoint's layout) loads."""
    state = random_reasoning_state(5)
    torch.save(state, tmp_path / "head.pt")
    conf = {"name": "reasoning", "features": "xfeat", "layers": 2, "dino_weights": None}
    model = get_model("matcher", {**conf, "weights": str(tmp_path / "head.pt")})
    assert torch.equal(model.head.joint_features.weight, state["joint_features.weight"])
    with pytest.raises(WeightsError) as e:  # a 5-layer model cannot take a 2-layer file
        get_model("matcher", {**conf, "layers": 5, "weights": str(tmp_path / "head.pt")})
    assert "head.pt" in _one_line(e) and "missing keys" in str(e.value)


def test_dual_softmax_nll_against_hand_computation():
    """Raw (un-normalised) scores t·t' × s·s'; mean over GT pairs of −log row-softmax and
    −log column-softmax, halved (the reference's `(nll(pred0) + nll(pred1)) / 2`)."""
    from tiepoint.models.matchers.reasoning_head import dual_softmax_nll

    f0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    f1 = torch.tensor([[1.0, 1.0], [0.0, 1.0], [3.0, 0.0]])
    s0, s1 = torch.ones(2, 1), torch.tensor([[1.0], [2.0], [1.0]])
    idx0, idx1 = torch.tensor([0, 1]), torch.tensor([2, 1])
    d = [[1.0, 0.0, 3.0], [2.0, 4.0, 0.0]]  # (f0·f1ᵀ) × (s0·s1ᵀ), by hand

    def lsm(row, i):
        return row[i] - math.log(sum(math.exp(v) for v in row))

    rows = [lsm(d[0], 2), lsm(d[1], 1)]
    cols = [lsm([d[0][2], d[1][2]], 0), lsm([d[0][1], d[1][1]], 1)]
    expected = -(sum(rows) / 2 + sum(cols) / 2) / 2
    got = dual_softmax_nll(f0, s0, f1, s1, idx0, idx1, conditioning=True)
    assert abs(got.item() - expected) < 1e-5
