"""GlueStick blocks against independent computations, the loss by hand, the official key layout."""

from __future__ import annotations

import math

import pytest
import torch

from tiepoint.errors import ConfigError, WeightsError
from tiepoint.models import model_class
from tiepoint.models.matchers.gluestick import (
    EndPtEncoder,
    GlueStick,
    LineLayer,
    line_scores_from_junctions,
    log_double_softmax,
)

TINY = {"descriptor_dim": 32, "keypoint_encoder": [8, 16], "gnn_layers": ["self", "cross"] * 2}


def _pair(n=(12, 9), nl=(4, 3), d=32, seed=0, line_desc=True):
    g = torch.Generator().manual_seed(seed)
    data = {}
    for i, (k, ln) in enumerate(zip(n, nl)):
        data[f"keypoints{i}"] = torch.rand(1, k, 2, generator=g) * 60
        data[f"descriptors{i}"] = torch.nn.functional.normalize(
            torch.randn(1, k, d, generator=g), dim=-1
        )
        data[f"keypoint_scores{i}"] = torch.rand(1, k, generator=g)
        data[f"lines{i}"] = torch.rand(1, ln, 2, 2, generator=g) * 60
        data[f"line_scores{i}"] = torch.rand(1, ln, generator=g)
        if line_desc:
            data[f"line_descriptors{i}"] = torch.nn.functional.normalize(
                torch.randn(1, ln, 2, d, generator=g), dim=-1
            )
        data[f"image_size{i}"] = torch.tensor([[64.0, 64.0]])
    return data


def _randomise(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return model.eval()


def test_line_message_passing_equals_a_loop_over_lines():
    torch.manual_seed(0)
    d, n = 8, 6
    layer = _randomise(LineLayer(d))
    desc = torch.randn(1, n, d)
    junc = torch.tensor([[0, 1, 1, 2, 4, 1]])  # 3 lines; junction 1 is shared by all of them
    enc = torch.randn(1, 6, d)
    out = layer.update(desc, enc, junc)
    expect = desc.clone()
    msgs: dict[int, list[torch.Tensor]] = {}
    for line in range(3):
        for e in range(2):
            a, b = int(junc[0, 2 * line + e]), int(junc[0, 2 * line + 1 - e])
            x = torch.cat([desc[0, a], desc[0, b], enc[0, 2 * line + e]])
            msgs.setdefault(a, []).append(layer.mlp(x[None, None])[0, 0])
    for j, ms in msgs.items():
        expect[0, j] += torch.stack(ms).mean(0)
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
    # nodes on no line (3, 5) are unchanged
    torch.testing.assert_close(out[0, [3, 5]], desc[0, [3, 5]])


def test_endpoint_encoder_inputs_follow_the_official_order():
    enc = EndPtEncoder(4, [6])
    seen = []
    orig = enc.encoder.forward
    enc.encoder.forward = lambda x: (seen.append(x), orig(x))[1]
    lines = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]], [[7.0, 7.0], [8.0, 6.0]]]])
    enc(lines, torch.tensor([[0.3, 0.9]]))
    x = seen[0][0]
    # endpoint, offset to the other endpoint, and the score tiled (line k mod L) as officially
    expect = torch.tensor(
        [
            [0.0, 1.0, 2.0, 4.0, 0.3],
            [2.0, 5.0, -2.0, -4.0, 0.9],
            [7.0, 7.0, 1.0, -1.0, 0.3],
            [8.0, 6.0, -1.0, 1.0, 0.9],
        ]
    )
    torch.testing.assert_close(x, expect)


def test_dual_softmax_rows_and_columns_are_distributions():
    torch.manual_seed(0)
    s = torch.randn(2, 5, 7) * 3
    la = log_double_softmax(s, torch.tensor(0.4))
    p = la.exp()
    row = torch.cat([s, torch.full((2, 5, 1), 0.4)], 2).softmax(2)
    col = torch.cat([s, torch.full((2, 1, 7), 0.4)], 1).softmax(1)
    # real entries: geometric mean of the two softmaxes; dustbins: each softmax's own
    torch.testing.assert_close(p[:, :5, :7], (row[:, :, :7] * col[:, :5]).sqrt())
    torch.testing.assert_close(p[:, :5, 7], row[:, :, 7])
    torch.testing.assert_close(p[:, 5, :7], col[:, 5])
    # a clear permutation with a low dustbin puts (nearly) all mass on it
    q = log_double_softmax(torch.eye(4)[None] * 20, torch.tensor(0.0)).exp()[0]
    torch.testing.assert_close(q[:4, :4], torch.eye(4), atol=1e-6, rtol=0)


def test_line_score_is_the_best_endpoint_pairing():
    torch.manual_seed(0)
    sim = torch.randn(1, 5, 6)
    j0 = torch.tensor([[0, 3, 4, 1]])
    j1 = torch.tensor([[5, 2, 0, 0]])
    out = line_scores_from_junctions(sim, j0, j1)
    for a in range(2):
        for b in range(2):
            p0, q0 = int(j0[0, 2 * a]), int(j0[0, 2 * a + 1])
            p1, q1 = int(j1[0, 2 * b]), int(j1[0, 2 * b + 1])
            best = max(sim[0, p0, p1] + sim[0, q0, q1], sim[0, p0, q1] + sim[0, q0, p1]) / 2
            torch.testing.assert_close(out[0, a, b], best)


def test_loss_by_hand_on_a_tiny_case():
    model = GlueStick(TINY)
    la = torch.log(torch.tensor([[[0.7, 0.1, 0.2], [0.2, 0.3, 0.5], [0.1, 0.6, 0.0]]]))
    lla = torch.log(torch.tensor([[[0.9, 0.1], [0.4, 0.0]]]))
    pred = {
        "log_assignment": la,
        "line_log_assignment": lla,
        "matches0": torch.tensor([[0, -1]]),
        "matching_scores0": torch.tensor([[0.7, 0.0]]),
        "line_matches0": torch.tensor([[0]]),
        "line_matching_scores0": torch.tensor([[0.9]]),
    }
    data = {
        "gt_matches0": torch.tensor([[0, -1]]),
        "gt_matches1": torch.tensor([[0, -2]]),
        "gt_line_matches0": torch.tensor([[-1]]),
        "gt_line_matches1": torch.tensor([[-1]]),
    }
    losses, metrics = model.loss(pred, data)

    point = 0.5 * -math.log(0.7) + 0.5 * -math.log(0.5)  # point 1 of image 0 → dustbin
    line = 0.5 * 0.0 + 0.5 * (-math.log(0.1) - math.log(0.4)) / 2  # both lines unmatched
    assert losses["total"].shape == (1,)
    assert losses["total"].item() == pytest.approx(point + line, rel=1e-5)
    assert metrics["match_precision"].item() == 1.0
    assert metrics["line_match_precision"].item() == 0.0


def test_both_input_forms_give_the_same_matches():
    torch.manual_seed(0)
    model = _randomise(GlueStick(TINY, filter_threshold=0.0))
    data = _pair()
    with torch.no_grad():
        a = model(data)
        ref = dict(data)  # reference layout: endpoints prepended by hand, lines_junc_idx
        for i in "01":
            nl = data[f"lines{i}"].shape[1]
            ref[f"keypoints{i}"] = torch.cat(
                [data[f"lines{i}"].flatten(1, 2), ref[f"keypoints{i}"]], 1
            )
            ref[f"descriptors{i}"] = torch.cat(
                [data[f"line_descriptors{i}"].flatten(1, 2), ref[f"descriptors{i}"]], 1
            )
            ref[f"keypoint_scores{i}"] = torch.cat(
                [data[f"line_scores{i}"].repeat_interleave(2, 1), ref[f"keypoint_scores{i}"]], 1
            )
            ref[f"lines_junc_idx{i}"] = torch.arange(2 * nl).reshape(1, nl, 2)
            del ref[f"line_descriptors{i}"]
        b = model(ref)
    torch.testing.assert_close(a["line_log_assignment"], b["line_log_assignment"])
    torch.testing.assert_close(a["log_assignment"], b["log_assignment"][:, 8:, 6:])
    assert torch.equal(a["line_matches0"], b["line_matches0"])
    assert (a["line_matches0"] >= 0).any()


def test_padding_lines_are_never_matched():
    model = _randomise(GlueStick(TINY, filter_threshold=0.0))
    data = _pair(n=(10, 10), nl=(4, 4))
    for k in ("keypoints", "descriptors", "keypoint_scores", "lines", "line_scores"):
        data[f"{k}1"] = data[f"{k}0"]
    data["line_descriptors1"] = data["line_descriptors0"]
    with torch.no_grad():
        full = model(data)["line_matches0"]
        data["valid_lines0"] = torch.tensor([[True, False, True, True]])
        data["valid_lines1"] = torch.tensor([[True, True, True, False]])
        p = model(data)
    assert (full >= 0).sum() >= 3
    m0, m1 = p["line_matches0"][0], p["line_matches1"][0]
    assert m0[1] == -1 and p["line_matching_scores0"][0, 1] == 0 and (m0 != 3).all()
    assert m1[3] == -1 and (m1 != 1).all()
    for i in range(4):  # the rest is unchanged
        if i != 1 and int(full[0, i]) != 3:
            assert m0[i] == full[0, i]


@pytest.mark.parametrize("nk,nl", [((0, 9), (4, 3)), ((12, 9), (0, 3)), ((0, 0), (0, 0))])
def test_no_keypoints_or_no_lines_give_empty_matches(nk, nl):
    model = GlueStick(TINY).eval()
    data = _pair(nk, nl)
    with torch.no_grad():
        p = model(data)
    assert p["matches0"].shape == (1, nk[0]) and p["matches1"].shape == (1, nk[1])
    assert p["line_matches0"].shape == (1, nl[0]) and p["line_matches1"].shape == (1, nl[1])
    assert (p["line_matches0"] == -1).all() and (p["line_matches1"] == -1).all()
    if nl[0] == 0:
        assert p["log_assignment"].shape == (1, nk[0] + 1, nk[1] + 1)


def test_missing_endpoint_descriptors_is_one_clear_error():
    data = _pair(line_desc=False)
    with pytest.raises(ConfigError, match="lines_junc_idx0 .* or line_descriptors0"):
        GlueStick(TINY)(data)


def test_loader_reads_an_official_layout_file_and_names_bad_keys(tmp_path):
    src = _randomise(GlueStick(TINY))
    state = {f"module.matcher.{k}": v for k, v in src.state_dict().items()}
    path = tmp_path / "checkpoint_GlueStick_MD.tar"
    torch.save({"model": state}, path)  # as the released .tar: DataParallel + pipeline prefixes
    dst = GlueStick({**TINY, "weights": str(path)}).eval()
    data = _pair()
    with torch.no_grad():
        torch.testing.assert_close(dst(data)["log_assignment"], src(data)["log_assignment"])
    bad = dict(src.state_dict())
    bad["gnn.line_layers.0.mlp.9.weight"] = bad.pop("gnn.line_layers.0.mlp.0.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="gnn.line_layers.0.mlp") as e:
        GlueStick({**TINY, "weights": str(tmp_path / "bad.pth")})
    assert "\n" not in str(e.value)
    wide = GlueStick({**TINY, "descriptor_dim": 64})
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(WeightsError, match="final_proj.weight is for 64-d"):
        GlueStick({**TINY, "weights": str(tmp_path / "wide.pth")})


def test_registered_with_the_official_weights():
    assert model_class("matcher", "gluestick") is GlueStick
    assert GlueStick.weight_names({"preset": "md"}) == ["gluestick_md"]
    from tiepoint.weights import WEIGHTS

    w = WEIGHTS["gluestick_md"]
    assert w.url.startswith("https://github.com/cvg/GlueStick/releases/") and w.unverified


def test_wrong_descriptor_size_is_clear():
    data = _pair(d=16)
    with pytest.raises(ConfigError, match="descriptors0 of size 16"):
        GlueStick(TINY)(data)


def test_intermediate_line_supervision_adds_weighted_terms(tmp_path):
    torch.manual_seed(0)
    plain = GlueStick(TINY)
    torch.save(plain.state_dict(), tmp_path / "official.pth")  # no inter_line_proj keys
    model = GlueStick(
        {**TINY, "inter_supervision": [0, 1], "weights": str(tmp_path / "official.pth")}
    )
    data = _pair(n=(10, 10), nl=(3, 3))
    gt = {
        "gt_matches0": torch.tensor([[0, 1, -1, -1, -2, 5, -1, -1, -1, -1]]),
        "gt_matches1": torch.tensor([[0, 1, -1, -1, -1, 5, -1, -1, -1, -1]]),
        "gt_line_matches0": torch.tensor([[1, -1, 0]]),
        "gt_line_matches1": torch.tensor([[2, 0, -1]]),
    }
    pred = model.train()(data)
    assert "line_0_log_assignment" in pred and "line_1_log_assignment" in pred
    losses, _ = model.loss(pred, {**data, **gt})
    losses_plain, _ = plain.loss(
        {k: v for k, v in pred.items() if "_0_" not in k and "_1_" not in k}, {**data, **gt}
    )
    expect = losses_plain["total"] + 0.3 * losses["line_0_nll"] + 0.6 * losses["line_1_nll"]
    torch.testing.assert_close(losses["total"], expect)
    assert "line_0_log_assignment" not in model.eval()(data)


def test_a_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = GlueStick(TINY).train()
    data = _pair(n=(10, 10), nl=(3, 3))
    keys = (
        "keypoints",
        "descriptors",
        "keypoint_scores",
        "lines",
        "line_scores",
        "line_descriptors",
    )
    for k in keys:  # image 1 = image 0: GT is the identity for points and lines
        data[f"{k}1"] = data[f"{k}0"]
    gt = {
        "gt_matches0": torch.arange(10)[None],
        "gt_matches1": torch.arange(10)[None],
        "gt_line_matches0": torch.arange(3)[None],
        "gt_line_matches1": torch.arange(3)[None],
    }
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    first = None
    for _ in range(15):
        losses, _ = model.loss(model(data), {**data, **gt})
        opt.zero_grad()
        losses["total"].mean().backward()
        opt.step()
        first = losses["total"].item() if first is None else first
    assert losses["total"].item() < 0.7 * first
