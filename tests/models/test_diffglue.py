"""DiffGlue: diffusion schedule against closed forms, AGA against an explicit weighted sum, the loss
against a direct NumPy computation, seeding, the official checkpoint layout, and LightGlue start."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiepoint.errors import ConfigError, WeightsError
from tiepoint.models.matchers.diffglue import AssignmentGuidedAttention, DiffGlue, DiffGlueLayer
from tiepoint.models.matchers.diffusion import (
    DiffusionSchedule,
    assignment_to_x0,
    ddim_sample,
    kept_timesteps,
    timestep_embedding,
)
from tiepoint.models.matchers.lightglue import LightGlue, TransformerLayer

SMALL = {"input_dim": 16, "descriptor_dim": 32, "num_heads": 2, "n_layers": 3}


def _pair(b=1, m=12, n=10, dim=16, seed=0, matched=6):
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([[320.0, 240.0]]).repeat(b, 1)
    k0 = torch.rand(b, m, 2, generator=g) * size[:, None]
    k1 = torch.rand(b, n, 2, generator=g) * size[:, None]
    k1[:, :matched] = k0[:, :matched] + 1.0
    d0 = torch.randn(b, m, dim, generator=g)
    d1 = torch.randn(b, n, dim, generator=g)
    d1[:, :matched] = d0[:, :matched] + 0.1 * torch.randn(b, matched, dim, generator=g)
    return {
        "keypoints0": k0,
        "keypoints1": k1,
        "descriptors0": d0,
        "descriptors1": d1,
        "image_size0": size,
        "image_size1": size,
    }


def _gt(b, m, n, matched=6, ignore0=(), ignore1=()):
    """Point i ↔ i for i < matched, the rest unmatched (−1), optional ignored (−2) points."""
    a = torch.zeros(b, m, n, dtype=torch.bool)
    a[:, torch.arange(matched), torch.arange(matched)] = True
    m0 = torch.full((b, m), -1)
    m1 = torch.full((b, n), -1)
    m0[:, :matched] = torch.arange(matched)
    m1[:, :matched] = torch.arange(matched)
    for i in ignore0:
        m0[:, i] = -2
    for j in ignore1:
        m1[:, j] = -2
    return {"gt_assignment": a, "gt_matches0": m0, "gt_matches1": m1}


# ----------------------------------------------------------------------------- diffusion


def _alpha_bar_closed_form(t: int, T: int = 4096) -> float:
    """log ᾱ_t = Σ_s log(1−β_s) = −Σβ − Σβ²/2 − Σβ³/3 − …, with the power sums of the arithmetic
    sequence β_s = a + δ·s in closed form (the β⁴ remainder is < 1e-6 here)."""
    a, b = 1e-4 * 1000 / T, 0.02 * 1000 / T
    delta = (b - a) / (T - 1)
    n = t + 1
    s1 = t * n / 2  # Σ s
    s2 = t * n * (2 * t + 1) / 6  # Σ s²
    s3 = s1**2  # Σ s³
    p1 = n * a + delta * s1
    p2 = n * a**2 + 2 * a * delta * s1 + delta**2 * s2
    p3 = n * a**3 + 3 * a**2 * delta * s1 + 3 * a * delta**2 * s2 + delta**3 * s3
    return math.exp(-p1 - p2 / 2 - p3 / 3)


def test_linear_schedule_alpha_bar_matches_closed_form():
    s = DiffusionSchedule(steps=4096)
    assert float(s.betas[0]) == pytest.approx(1e-4 * 1000 / 4096, rel=1e-12)  # 2.44e-5
    assert float(s.betas[-1]) == pytest.approx(0.02 * 1000 / 4096, rel=1e-12)  # 4.88e-3
    assert float(s.alphas_cumprod[0]) == pytest.approx(1 - 1e-4 * 1000 / 4096, rel=1e-12)
    for t in (0, 2048, 4095):
        assert float(s.alphas_cumprod[t]) == pytest.approx(_alpha_bar_closed_form(t), rel=1e-5)
    assert float(s.alphas_cumprod[2048]) == pytest.approx(0.0788, abs=5e-4)
    assert float(s.alphas_cumprod[4095]) == pytest.approx(4.25e-5, rel=1e-2)


def test_network_time_is_rescaled_to_0_1000():
    s = DiffusionSchedule(steps=4096)
    t = torch.tensor([0, 2048, 4095])
    torch.testing.assert_close(s.network_time(t), torch.tensor([0.0, 500.0, 4095 * 1000 / 4096]))
    e = timestep_embedding(torch.tensor([0.0, 3.0]), 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))  # cos first
    freqs = torch.tensor([10000 ** (-i / 4) for i in range(4)])
    torch.testing.assert_close(e[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))


def test_gt_maps_to_plus_minus_one_with_fixed_corner():
    gt = _gt(2, 5, 4, matched=2, ignore0=(3,), ignore1=(2,))
    x0 = assignment_to_x0(gt["gt_assignment"], gt["gt_matches0"], gt["gt_matches1"], scale=2.0)
    assert x0.shape == (2, 1, 6, 5)
    x = x0[0, 0]
    assert x[-1, -1] == 0
    assert set(x.flatten()[:-1].unique().tolist()) == {-1.0, 1.0}
    assert x[0, 0] == 1 and x[1, 1] == 1 and x[0, 1] == -1
    assert x[2, -1] == 1 and x[4, -1] == 1  # unmatched → own dustbin is +1
    assert x[3, -1] == -1 and x[-1, 2] == -1  # ignored → 0 → −1 everywhere
    assert x[0, -1] == -1 and x[-1, 3] == 1
    # rows of matched/unmatched points hold exactly one +1; ignored rows none
    assert (x[:-1] == 1).sum(1).tolist() == [1, 1, 1, 0, 1]


def test_q_sample_formula_and_corner_never_noised():
    s = DiffusionSchedule(steps=4096)
    gt = _gt(3, 5, 4, matched=2)
    x0 = assignment_to_x0(gt["gt_assignment"], gt["gt_matches0"], gt["gt_matches1"])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 2048, 4095])
    xt = s.q_sample(x0, t, noise)
    assert torch.all(xt[..., -1, -1] == 0)
    for b in range(3):
        a = _alpha_bar_closed_form(int(t[b]))
        expect = math.sqrt(a) * x0[b, 0, 1, 2] + math.sqrt(1 - a) * noise[b, 0, 1, 2]
        assert float(xt[b, 0, 1, 2]) == pytest.approx(float(expect), rel=1e-4, abs=1e-6)


def test_kept_timesteps_and_ddim_recover_the_forward_trajectory():
    assert kept_timesteps(4096, 1) == [0]
    assert kept_timesteps(4096, 2) == [4095, 0]
    assert kept_timesteps(4096, 3) == [4095, 2048, 0]
    s = DiffusionSchedule(steps=4096)
    gt = _gt(1, 6, 5, matched=3)
    x0 = assignment_to_x0(gt["gt_assignment"], gt["gt_matches0"], gt["gt_matches1"])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    # with a perfect x̂₀, a deterministic DDIM step stays on the forward path of the same noise
    for t, t_prev in ((4095, 2048), (2048, 7), (7, 0)):
        x_t = s.q_sample(x0, torch.tensor([t]), eps)
        x_prev = s.ddim_step(x_t, x0, t, t_prev)
        torch.testing.assert_close(
            x_prev, s.q_sample(x0, torch.tensor([t_prev]), eps), atol=1e-5, rtol=1e-5
        )
    calls = []

    def oracle(x_t, t):
        calls.append(int(t[0]))
        return x0 * 3.0, {"t": int(t[0])}  # out of range on purpose: the sampler clamps

    x_T = s.initial_noise(x0.shape, torch.Generator().manual_seed(0), "cpu")
    assert x_T.abs().max() <= 1 and x_T[..., -1, -1] == 0
    final, out = ddim_sample(oracle, s, x_T, sampling_steps=4)
    assert calls == [4095, 2730, 1365, 0] and out["t"] == 0
    torch.testing.assert_close(final, x0)


# ----------------------------------------------------------------------------- network


def test_aga_is_an_explicit_softmax_weighted_sum():
    torch.manual_seed(0)
    aga = AssignmentGuidedAttention(8).double()
    x0, x1 = torch.randn(1, 5, 8).double(), torch.randn(1, 4, 8).double()
    A = torch.rand(1, 5, 4).double()
    y0, y1 = aga(x0, x1, A)
    Wv, bv = aga.to_v.weight.detach().numpy(), aga.to_v.bias.detach().numpy()
    Wo, bo = aga.to_out.weight.detach().numpy(), aga.to_out.bias.detach().numpy()
    a, v0, v1 = A[0].numpy(), x0[0].numpy() @ Wv.T + bv, x1[0].numpy() @ Wv.T + bv
    with torch.no_grad():
        for i in range(5):
            w = np.exp(a[i]) / np.exp(a[i]).sum()  # row softmax over image-1 points
            msg = sum(w[j] * v1[j] for j in range(4)) @ Wo.T + bo
            ref = x0[0, i] + aga.ffn(torch.cat([x0[0, i], torch.from_numpy(msg)]))
            torch.testing.assert_close(y0[0, i], ref)
        for j in range(4):
            w = np.exp(a[:, j]) / np.exp(a[:, j]).sum()  # column softmax over image-0 points
            msg = sum(w[i] * v0[i] for i in range(5)) @ Wo.T + bo
            ref = x1[0, j] + aga.ffn(torch.cat([x1[0, j], torch.from_numpy(msg)]))
            torch.testing.assert_close(y1[0, j], ref)


def test_passthrough_layer_is_exactly_lightglue_self_then_cross():
    torch.manual_seed(0)
    layer, lg = DiffGlueLayer(32, 2, 128).eval(), TransformerLayer(32, 2).eval()
    lg.self_attn.load_state_dict(layer.self_attn[0].state_dict())
    lg.cross_attn.load_state_dict(layer.cross_attn[0].state_dict())
    layer.make_passthrough()
    d0, d1 = torch.randn(1, 7, 32), torch.randn(1, 6, 32)
    enc0 = torch.randn(2, 1, 1, 7, 16)
    enc1 = torch.randn(2, 1, 1, 6, 16)
    with torch.no_grad():
        a = layer(d0, d1, enc0, enc1, torch.randn(1, 128), torch.rand(1, 7, 6))
        b = lg(d0, d1, enc0, enc1)
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=0)


def test_same_seed_same_matches_other_seed_other_assignment():
    torch.manual_seed(0)
    model = DiffGlue(**SMALL, filter_threshold=0.0).eval()
    data = _pair()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(data)
        torch.manual_seed(2)  # the global RNG must not matter
        b = model(data)
        other = DiffGlue(**SMALL, filter_threshold=0.0, seed=5).eval()
        other.load_state_dict(model.state_dict())
        c = other(data)
    assert torch.equal(a["matches0"], b["matches0"]) and torch.equal(
        a["log_assignment"], b["log_assignment"]
    )
    assert not torch.allclose(a["log_assignment"], c["log_assignment"])


def test_sampling_steps_call_the_network_k_times():
    model = DiffGlue(**SMALL, sampling_steps=3).eval()
    seen = []
    orig = model.denoise

    def spy(x_t, t, data, keep_all=False):
        seen.append(int(t[0]))
        return orig(x_t, t, data, keep_all)

    model.denoise = spy
    with torch.no_grad():
        out = model(_pair())
    assert seen == [4095, 2048, 0] and out["matches0"].shape == (1, 12)


# ----------------------------------------------------------------------------- loss


def test_loss_equals_a_direct_computation():
    torch.manual_seed(0)
    model = DiffGlue(**SMALL, diffusion_loss_weight=7.0).train()
    data = {**_pair(m=6, n=5, matched=3), **_gt(1, 6, 5, matched=3, ignore0=(4,))}
    pred = model(data)
    losses, _ = model.loss(pred, data)

    gt = _gt(1, 6, 5, matched=3, ignore0=(4,))
    W = np.zeros((7, 6))
    W[:6, :5] = gt["gt_assignment"][0].numpy()
    W[:6, 5] = (gt["gt_matches0"][0] == -1).numpy()
    W[6, :5] = (gt["gt_matches1"][0] == -1).numpy()

    def nll(la):
        pos = -(la[:6, :5] * W[:6, :5]).sum() / W[:6, :5].sum()
        neg = -((la[:6, 5] * W[:6, 5]).sum() + (la[6, :5] * W[6, :5]).sum()) / (
            W[:6, 5].sum() + W[6, :5].sum()
        )
        return 0.5 * pos + 0.5 * neg

    sig = lambda z: 1 / (1 + np.exp(-z))
    bce = lambda z, y: -(y * np.log(sig(z)) + (1 - y) * np.log(1 - sig(z))).mean()
    with torch.no_grad():
        heads = [
            model.log_assignment[i](pred["ref_descriptors0"][:, i], pred["ref_descriptors1"][:, i])[
                0
            ][0].numpy()
            for i in range(3)
        ]
        final = pred["log_assignment"][0].numpy()
        conf = 0.0
        for i in range(3):
            z0 = (
                model.token_confidence[i]
                .token[0](pred["ref_descriptors0"][0, i])
                .squeeze(-1)
                .numpy()
            )
            z1 = (
                model.token_confidence[i]
                .token[0](pred["ref_descriptors1"][0, i])
                .squeeze(-1)
                .numpy()
            )
            y0 = (heads[i][:-1].argmax(1) == final[:-1].argmax(1)).astype(float)
            y1 = (heads[i][:, :-1].argmax(0) == final[:, :-1].argmax(0)).astype(float)
            conf += (bce(z0, y0) + bce(z1, y1)) / 2 / 3
    x0 = np.where(W[None] > 0, 1.0, -1.0)[0]
    x0[4, :] = -1  # ignored point: −1 in its row, dustbin included
    x0[6, 5] = 0
    xhat = (np.exp(final) - 0.5) * 2
    xhat[6, 5] = final[6, 5]
    mse = ((x0 - xhat) ** 2).mean()
    nll_total = (nll(final) + sum(nll(h) for h in heads)) / 4  # last layer twice, / (1 + n)
    assert np.allclose(heads[-1], final, atol=1e-6)
    assert float(losses["diffusion_mse"][0].detach()) == pytest.approx(mse, rel=1e-5)
    assert float(losses["confidence"][0]) == pytest.approx(conf, rel=1e-5)
    assert float(losses["matcher_total"][0]) == pytest.approx(nll_total + conf, rel=1e-5)
    assert float(losses["total"][0].detach()) == pytest.approx(
        nll_total + conf + 7.0 * mse, rel=1e-5
    )
    losses["total"].mean().backward()
    assert model.transformers[0].adj_attn[0].to_v.weight.grad.abs().sum() > 0
    assert model.time_embed[0].weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_a_few_steps_fit_one_pair():
    torch.manual_seed(0)
    model = DiffGlue(**SMALL, diffusion_loss_weight=10.0).train()
    data = {**_pair(m=10, n=10, matched=6, seed=3), **_gt(1, 10, 10, matched=6)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = model.loss(model(data), data)[0]["total"].mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        m0 = model(data)["matches0"][0]
    assert float(loss.detach()) < 0.5 * first
    assert (m0[:6] == torch.arange(6)).all() and (m0[6:] == -1).all()


def test_training_without_ground_truth_is_a_clear_error():
    model = DiffGlue(**SMALL).train()
    with pytest.raises(ConfigError, match="gt_assignment"):
        model(_pair())


# ----------------------------------------------------------------------------- weights


def _official_keys(n_layers: int, d: int, input_dim: int) -> dict[str, tuple]:
    """The matcher part of SP_DiffGlue.tar / ALIKED_DiffGlue.tar, written out from the reference's
    module tree (not from ours): name → shape."""
    ffn = {
        "ffn.0.weight": (2 * d, 2 * d),
        "ffn.0.bias": (2 * d,),
        "ffn.1.weight": (2 * d,),
        "ffn.1.bias": (2 * d,),
        "ffn.3.weight": (d, 2 * d),
        "ffn.3.bias": (d,),
    }
    keys = {
        "time_embed.0.weight": (4 * d, d), "time_embed.0.bias": (4 * d,),
        "time_embed.2.weight": (4 * d, 4 * d), "time_embed.2.bias": (4 * d,),
        "posenc.Wr.weight": (d // 4 // 2, 2),  # rotary frequencies: head_dim/2 for 4 heads, (x, y) in
    }  # fmt: skip
    if input_dim != d:
        keys.update({"input_proj.weight": (d, input_dim), "input_proj.bias": (d,)})
    for i in range(n_layers):
        p = f"transformers.{i}."
        keys.update(
            {p + "self_attn.0.Wqkv.weight": (3 * d, d), p + "self_attn.0.Wqkv.bias": (3 * d,)}
        )
        keys.update(
            {p + "self_attn.0.out_proj.weight": (d, d), p + "self_attn.0.out_proj.bias": (d,)}
        )
        keys.update({p + "self_attn.0." + k: s for k, s in ffn.items()})
        keys.update({p + "embd_layers.0.1.weight": (d, 4 * d), p + "embd_layers.0.1.bias": (d,)})
        for name in ("to_v", "to_out"):
            keys.update(
                {p + f"adj_attn.0.{name}.weight": (d, d), p + f"adj_attn.0.{name}.bias": (d,)}
            )
        keys.update({p + "adj_attn.0." + k: s for k, s in ffn.items()})
        keys.update({p + "desc_compact.0.0.weight": (d, 2 * d), p + "desc_compact.0.0.bias": (d,)})
        for name in ("to_qk", "to_v", "to_out"):
            keys.update(
                {p + f"cross_attn.0.{name}.weight": (d, d), p + f"cross_attn.0.{name}.bias": (d,)}
            )
        keys.update({p + "cross_attn.0." + k: s for k, s in ffn.items()})
        keys.update(
            {
                f"log_assignment.{i}.matchability.weight": (1, d),
                f"log_assignment.{i}.matchability.bias": (1,),
            }
        )
        keys.update(
            {
                f"log_assignment.{i}.final_proj.weight": (d, d),
                f"log_assignment.{i}.final_proj.bias": (d,),
            }
        )
        keys.update(
            {
                f"token_confidence.{i}.token.0.weight": (1, d),
                f"token_confidence.{i}.token.0.bias": (1,),
            }
        )
    return keys


@pytest.mark.parametrize("features,input_dim", [("aliked", 128), ("superpoint", 256)])
def test_official_checkpoint_layout_loads_exactly(tmp_path, features, input_dim):
    keys = _official_keys(9, 256, input_dim)
    g = torch.Generator().manual_seed(0)
    state = {f"matcher.{k}": torch.randn(s, generator=g) for k, s in keys.items()}
    state["extractor.net.conv.weight"] = torch.randn(
        3, 3
    )  # the pipeline file also holds the extractor
    ckpt = {
        "model": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "lr_scheduler": {"last_epoch": 39},
        "conf": {
            "model": {
                "matcher": {
                    "name": "matchers.diffglue",
                    "input_dim": input_dim,
                    "n_layers": 9,
                    "scale": 2,
                }
            }
        },
        "epoch": 39,
        "losses": {"total": np.float64(0.5)},  # Glue Factory stores NumPy scalars here
        "eval": {"loss/total": np.float64(0.4)},
    }
    path = tmp_path / f"{features}_DiffGlue.tar"
    torch.save(ckpt, path)
    model = DiffGlue(features=features, weights=str(path))
    own = model.state_dict()
    assert set(own) == set(keys)  # no missing, no unexpected
    for k in keys:
        assert torch.equal(own[k], state[f"matcher.{k}"]), k


def test_wrong_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "sp.tar"
    torch.save(
        {"model": {f"matcher.{k}": torch.zeros(s) for k, s in _official_keys(9, 256, 256).items()}},
        path,
    )
    with pytest.raises(WeightsError, match="shape mismatches|missing"):
        DiffGlue(features="aliked", weights=str(path))  # SuperPoint file, ALIKED model
    with pytest.raises(WeightsError, match="does not exist"):
        DiffGlue(features="aliked", weights=str(tmp_path / "nope.tar"))
    bad = tmp_path / "garbage.tar"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable"):
        DiffGlue(features="aliked", weights=str(bad))
    with pytest.raises(ConfigError, match="unknown DiffGlue features"):
        DiffGlue(features="sift")


def test_lightglue_start_copies_every_tensor_and_matches_identically(tmp_path):
    torch.manual_seed(0)
    lg = LightGlue(pretrained=False, **SMALL, depth_confidence=-1, width_confidence=-1).eval()
    path = tmp_path / "lg.pth"
    torch.save(lg.state_dict(), path)
    dg = DiffGlue(**SMALL, weights=str(path)).eval()
    data = _pair(m=40, n=35, matched=20)
    with torch.no_grad():
        a, b = lg(data), dg(data)
    torch.testing.assert_close(a["log_assignment"], b["log_assignment"], atol=1e-5, rtol=1e-5)
    assert torch.equal(a["matches0"], b["matches0"])
    with pytest.raises(WeightsError, match="LightGlue weights"):
        DiffGlue(**{**SMALL, "n_layers": 4}, weights=str(path))


@pytest.mark.slow
def test_official_lightglue_start_reproduces_lightglue_on_a_real_pair(
    official_weights, data_dir, tmp_path
):
    """DiffGlue started from the official ALIKED LightGlue gives LightGlue's matches on Oxford boat 1→3."""
    from tiepoint.api import Matcher

    official_weights("aliked-n16", "aliked_lightglue")
    over = ["extractor.max_num_keypoints=512"]
    dg = Matcher("aliked+diffglue", resize=480, device="cpu", overrides=over)
    lg = Matcher(
        "aliked+lightglue",
        resize=480,
        device="cpu",
        overrides=over + ["matcher.depth_confidence=-1", "matcher.width_confidence=-1"],
    )
    seq = data_dir / "homography" / "oxford_boat"
    f0, f1 = dg.extract(seq / "img1.png"), dg.extract(seq / "img3.png")
    r_dg, r_lg = dg.match_features(f0, f1), lg.match_features(f0, f1)
    assert len(r_lg) > 100
    assert np.array_equal(r_dg.matches, r_lg.matches)
    np.testing.assert_allclose(r_dg.scores, r_lg.scores, atol=1e-5)

    # a DiffGlue checkpoint given as `weights=` replaces the LightGlue start (tiepoint training layout)
    with torch.no_grad():
        for layer in dg.matcher.transformers:
            layer.desc_compact[0][0].weight[:, 256:].normal_(std=0.02)
    r_changed = dg.match_features(f0, f1)
    path = tmp_path / "checkpoint_best.tar"
    torch.save(
        {"model": {f"matcher.{k}": v for k, v in dg.matcher.state_dict().items()}, "conf": {}}, path
    )
    again = Matcher("aliked+diffglue", resize=480, device="cpu", overrides=over, weights=path)
    r_again = again.match_features(f0, f1)
    assert not np.array_equal(r_changed.matches, r_lg.matches)
    assert np.array_equal(r_again.matches, r_changed.matches)


def test_trains_inside_the_two_view_pipeline_with_homography_ground_truth():
    """The training pipeline hands DiffGlue the GT it noises; loss and metrics come back per pair."""
    from tiepoint.models.two_view_pipeline import TwoViewPipeline

    torch.manual_seed(0)
    pipe = TwoViewPipeline(
        {"extractor": None, "num_keypoints": 12, "matcher": {"name": "diffglue", **SMALL}}
    ).train()
    data = _pair(b=2, m=12, n=12, matched=12)
    data["keypoints1"] = data["keypoints0"] + torch.tensor([5.0, -3.0])  # a pure translation
    H = torch.eye(3).repeat(2, 1, 1)
    H[:, 0, 2], H[:, 1, 2] = 5.0, -3.0
    pred = pipe({**data, "H_0to1": H})
    assert pred["gt_matches0"][0].tolist() == list(range(12))
    assert pred["diffusion_t"].shape == (2,) and pred["adj_mat"].shape == (2, 1, 13, 13)
    losses, metrics = pipe.loss(pred, {**data, "H_0to1": H})
    assert losses["total"].shape == (2,) and torch.isfinite(losses["total"]).all()
    assert set(metrics) >= {"match_recall", "match_precision"}
