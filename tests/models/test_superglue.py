"""SuperGlue blocks against analytic constraints, hand-made cases and the official file layout."""

from __future__ import annotations

import math

import pytest
import torch

from tiepoint.errors import ConfigError, WeightsError
from tiepoint.models.matchers.superglue import (
    MultiHeadedAttention,
    SuperGlue,
    log_optimal_transport,
    normalize_keypoints,
)

TINY = {"descriptor_dim": 32, "keypoint_encoder": [8, 16], "gnn_layers": ["self", "cross"] * 2}


def test_sinkhorn_meets_the_marginals_including_the_dustbins():
    torch.manual_seed(0)
    b, m, n = 2, 5, 7
    scores = torch.randn(b, m, n) * 3
    alpha = torch.tensor(0.7)
    la = log_optimal_transport(scores, alpha, iters=200)
    p = la.exp()
    assert p.shape == (b, m + 1, n + 1)
    # every point is assigned exactly once; a dustbin can take all points of the other image
    torch.testing.assert_close(p[:, :m].sum(2), torch.ones(b, m), atol=1e-4, rtol=0)
    torch.testing.assert_close(p[:, :, :n].sum(1), torch.ones(b, n), atol=1e-4, rtol=0)
    torch.testing.assert_close(p[:, m].sum(1), torch.full((b,), float(n)), atol=1e-3, rtol=0)
    torch.testing.assert_close(p[:, :, n].sum(1), torch.full((b,), float(m)), atol=1e-3, rtol=0)
    # and it only rescales rows and columns of exp(couplings): log P − C = u_i + v_j
    c = torch.cat(
        [
            torch.cat([scores, alpha.expand(b, m, 1)], -1),
            alpha.expand(b, 1, n + 1),
        ],
        1,
    )
    r = la - c
    inter = r - r[:, :1] - r[:, :, :1] + r[:, :1, :1]
    torch.testing.assert_close(inter, torch.zeros_like(inter), atol=1e-4, rtol=0)


def test_sinkhorn_of_a_clear_permutation_puts_the_mass_on_it():
    # strong diagonal, weak dustbin: the plan is (nearly) the identity and nothing is binned
    la = log_optimal_transport(torch.eye(4)[None] * 20 - 10, torch.tensor(-10.0), iters=1000)
    p = la.exp()[0]
    torch.testing.assert_close(p[:4, :4], torch.eye(4), atol=1e-3, rtol=0)


def test_mutual_argmax_extraction_on_hand_made_scores():
    sg = SuperGlue(TINY, filter_threshold=0.2)
    # a log-assignment: 0↔1 mutual and confident, 1→0 but 0's best is row 2 (not mutual),
    # 2↔0 mutual, 3↔2 mutual but below the threshold
    p = torch.tensor(
        [
            [0.05, 0.90, 0.01, 0.04],
            [0.50, 0.05, 0.05, 0.40],
            [0.80, 0.05, 0.05, 0.10],
            [0.05, 0.05, 0.15, 0.75],
            [0.10, 0.10, 0.10, 0.10],
        ]
    )
    from tiepoint.models.matchers.lightglue import filter_matches

    m0, m1, s0, s1 = filter_matches(p.log()[None], sg.conf.filter_threshold)
    assert m0[0].tolist() == [1, -1, 0, -1]
    assert m1[0].tolist() == [2, 0, -1]
    torch.testing.assert_close(s0[0], torch.tensor([0.9, 0.0, 0.8, 0.0]))
    torch.testing.assert_close(s1[0], torch.tensor([0.8, 0.9, 0.0]))


def test_keypoints_normalised_by_0_7_of_the_long_side():
    kpts = torch.tensor([[[0.0, 0.0], [700.0, 280.0]]])
    out = normalize_keypoints(kpts, torch.tensor([[700.0, 560.0]]))
    # centre (350, 280), scale 0.7 · 700 = 490
    expected = torch.tensor([[[-350 / 490, -280 / 490], [350 / 490, 0.0]]])
    torch.testing.assert_close(out, expected)


def test_attention_uses_the_official_interleaved_head_layout():
    """Reference math: channels viewed as (head_dim, heads), einsum softmax per head."""
    torch.manual_seed(1)
    att = MultiHeadedAttention(4, 16)
    x, src = torch.randn(2, 16, 5), torch.randn(2, 16, 7)
    q, k, v = (p(t).view(2, 4, 4, -1) for p, t in zip(att.proj, (x, src, src)))  # (B, d, H, N)
    w = torch.einsum("bdhn,bdhm->bhnm", q, k) / math.sqrt(4)
    msg = torch.einsum("bhnm,bdhm->bdhn", w.softmax(-1), v).reshape(2, 16, -1)
    out = att(x.transpose(1, 2), src.transpose(1, 2), src.transpose(1, 2))  # ours: (B,N,D)
    torch.testing.assert_close(out.transpose(1, 2), att.merge(msg), atol=1e-5, rtol=1e-5)


def official_state(d: int, enc: list[int], n_layers: int, seed: int = 0) -> dict:
    """A state dict in the layout of Magic Leap's superglue_{indoor,outdoor}.pth, built by hand."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g) * 0.1
    state = {}
    chans = [3, *enc, d]
    for i in range(1, len(chans)):
        j = 3 * (i - 1)  # Conv1d, BatchNorm1d, ReLU per hidden layer
        state[f"kenc.encoder.{j}.weight"] = rnd(chans[i], chans[i - 1], 1)
        state[f"kenc.encoder.{j}.bias"] = rnd(chans[i])
        if i < len(chans) - 1:
            bn = f"kenc.encoder.{j + 1}"
            state[f"{bn}.weight"], state[f"{bn}.bias"] = 1 + rnd(chans[i]), rnd(chans[i])
            state[f"{bn}.running_mean"], state[f"{bn}.running_var"] = (
                rnd(chans[i]),
                1 + rnd(chans[i]).abs(),
            )
            state[f"{bn}.num_batches_tracked"] = torch.tensor(7)
    for layer in range(n_layers):
        p = f"gnn.layers.{layer}"
        for conv in ["attn.merge", *(f"attn.proj.{k}" for k in range(3))]:
            state[f"{p}.{conv}.weight"], state[f"{p}.{conv}.bias"] = rnd(d, d, 1), rnd(d)
        state[f"{p}.mlp.0.weight"], state[f"{p}.mlp.0.bias"] = rnd(2 * d, 2 * d, 1), rnd(2 * d)
        state[f"{p}.mlp.1.weight"], state[f"{p}.mlp.1.bias"] = 1 + rnd(2 * d), rnd(2 * d)
        state[f"{p}.mlp.1.running_mean"], state[f"{p}.mlp.1.running_var"] = (
            rnd(2 * d),
            1 + rnd(2 * d).abs(),
        )
        state[f"{p}.mlp.1.num_batches_tracked"] = torch.tensor(7)
        state[f"{p}.mlp.3.weight"], state[f"{p}.mlp.3.bias"] = rnd(d, 2 * d, 1), rnd(d)
    state["final_proj.weight"], state["final_proj.bias"] = rnd(d, d, 1), rnd(d)
    state["bin_score"] = torch.tensor(2.3)
    return state


def test_loads_an_official_layout_file_strictly(tmp_path):
    state = official_state(32, [8, 16], 4)
    path = tmp_path / "superglue_outdoor.pth"
    torch.save(state, path)
    sg = SuperGlue(TINY, weights=str(path)).eval()
    own = sg.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(own[k], v)
    # a training checkpoint of the pipeline (matcher.-prefixed, wrapped) loads the same way
    ckpt = tmp_path / "ckpt.tar"
    torch.save({"model": {f"matcher.{k}": v for k, v in state.items()}}, ckpt)
    sg2 = SuperGlue(TINY, weights=str(ckpt)).eval()
    data = {
        "keypoints0": torch.rand(1, 9, 2) * 100,
        "keypoints1": torch.rand(1, 11, 2) * 100,
        "keypoint_scores0": torch.rand(1, 9),
        "keypoint_scores1": torch.rand(1, 11),
        "descriptors0": torch.randn(1, 9, 32),
        "descriptors1": torch.randn(1, 11, 32),
        "image_size0": torch.tensor([[100.0, 100.0]]),
        "image_size1": torch.tensor([[100.0, 100.0]]),
    }
    with torch.no_grad():
        a, b = sg(data), sg2(data)
    torch.testing.assert_close(a["log_assignment"], b["log_assignment"])
    assert a["log_assignment"].shape == (1, 10, 12)


def test_checkpoint_for_the_wrong_descriptor_dimension_is_one_clear_line(tmp_path):
    path = tmp_path / "sg128.pth"
    torch.save(official_state(16, [8, 16], 4), path)
    with pytest.raises(WeightsError) as e:
        SuperGlue(TINY, weights=str(path))
    msg = str(e.value)
    assert "\n" not in msg and "final_proj.weight" in msg and "16-d" in msg and str(path) in msg
    sg = SuperGlue(TINY)
    bad = {
        "keypoints0": torch.rand(1, 3, 2),
        "keypoints1": torch.rand(1, 3, 2),
        "descriptors0": torch.randn(1, 3, 64),
        "descriptors1": torch.randn(1, 3, 64),
    }
    with pytest.raises(ConfigError, match="descriptor_dim=32"):
        sg(bad)


def test_loss_is_per_pair_and_trains_the_dustbin():
    torch.manual_seed(0)
    sg = SuperGlue(TINY).train()
    b, n = 3, 6
    kp = torch.rand(b, n, 2) * 50
    desc = torch.nn.functional.normalize(torch.randn(b, n, 32), dim=-1)
    data = {
        "keypoints0": kp,
        "keypoints1": kp + 1,
        "keypoint_scores0": torch.rand(b, n),
        "keypoint_scores1": torch.rand(b, n),
        "descriptors0": desc,
        "descriptors1": desc,
        "image_size0": torch.tensor([[50.0, 50.0]]).expand(b, 2),
        "image_size1": torch.tensor([[50.0, 50.0]]).expand(b, 2),
    }
    gt0 = torch.tensor([[0, 1, 2, -1, -1, -2]] * b)
    gt = {
        "gt_matches0": gt0,
        "gt_matches1": gt0.clone(),
        "gt_assignment": torch.zeros(b, n, n),
    }
    gt["gt_assignment"][:, [0, 1, 2], [0, 1, 2]] = 1
    pred = sg(data)
    losses, metrics = sg.loss(pred, {**data, **gt})
    assert losses["total"].shape == (b,) and metrics["match_recall"].shape == (b,)
    # by hand: mean over the 3 positives and the 4 dustbin terms, balanced ½ / ½
    la = pred["log_assignment"]
    pos = -(la[:, 0, 0] + la[:, 1, 1] + la[:, 2, 2]) / 3
    neg = -(la[:, 3, n] + la[:, 4, n] + la[:, n, 3] + la[:, n, 4]) / 4
    torch.testing.assert_close(losses["total"], 0.5 * pos + 0.5 * neg)
    losses["total"].mean().backward()
    assert sg.bin_score.grad is not None and sg.bin_score.grad.abs() > 0


def test_presets_name_the_official_weights_and_pipeline_registered():
    from tiepoint.api import pipeline_weights

    assert SuperGlue.weight_names({"preset": "indoor"}) == ["superglue_indoor"]
    assert SuperGlue.weight_names({"preset": "outdoor", "pretrained": False}) == []
    assert SuperGlue.weight_names({}) == []
    assert pipeline_weights("superpoint+superglue") == ["superpoint", "superglue_outdoor"]
    from tiepoint.weights import WEIGHTS

    assert "non-commercial" in WEIGHTS["superglue_outdoor"].licence
    assert WEIGHTS["superglue_indoor"].url.startswith(
        "https://github.com/magicleap/SuperGluePretrainedNetwork/"
    )


def test_unknown_preset_is_a_did_you_mean_error():
    with pytest.raises(
        ConfigError, match=r"unknown SuperGlue preset 'indor' \(did you mean 'indoor'\?\)"
    ):
        SuperGlue.build_conf({"preset": "indor"})


def test_no_keypoints_gives_empty_matches():
    sg = SuperGlue(TINY).eval()
    data = {
        "keypoints0": torch.zeros(1, 0, 2),
        "keypoints1": torch.rand(1, 4, 2),
        "descriptors0": torch.zeros(1, 0, 32),
        "descriptors1": torch.randn(1, 4, 32),
    }
    out = sg(data)
    assert out["matches0"].shape == (1, 0) and out["matches1"].tolist() == [[-1] * 4]


def test_cli_states_the_magic_leap_licence(capsys):
    from tiepoint.cli import main

    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sg = [ln for ln in lines if ln.startswith("superglue_")]
    assert len(sg) == 2 and all("non-commercial" in ln for ln in sg)
    assert not any("non-commercial" in ln for ln in lines if ln.startswith("aliked-n16"))
    assert main(["models"]) == 0
    (line,) = [
        ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("superpoint+superglue")
    ]
    assert "licence" in line and "non-commercial" in line


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    data = {
        "keypoints0": torch.rand(2, 5, 2) * 40,
        "keypoints1": torch.rand(2, 6, 2) * 40,
        "keypoint_scores0": torch.rand(2, 5),
        "keypoint_scores1": torch.rand(2, 6),
        "descriptors0": torch.randn(2, 5, 32),
        "descriptors1": torch.randn(2, 6, 32),
    }
    weight = torch.randn(2, 6, 7)  # an arbitrary linear function of the log-assignment
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        sg = SuperGlue(TINY, checkpointed=ckpt).train()
        (sg(data)["log_assignment"] * weight).sum().backward()
        grads.append({k: p.grad.clone() for k, p in sg.named_parameters()})
    assert grads[0]["gnn.layers.0.attn.proj.0.weight"].abs().max() > 1e-4
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4)
