"""DKM's match sampling and coordinate rule: frequencies, balancing, seeds, edge cases, pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiepoint import images
from tiepoint.errors import ConfigError
from tiepoint.models.dense.sampling import (
    kde,
    sample,
    to_normalized_coordinates,
    to_pixel_coordinates,
)


def grid_warp(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Identity warp (H, W, 4) on DKM's grid of cell centres."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, dtype=dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, dtype=dtype)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    g = torch.stack([x, y], -1)
    return torch.cat([g, g], -1)


def draw_frequencies(cert: torch.Tensor, mode: str, trials: int) -> np.ndarray:
    """How often each cell is drawn when one match is asked for, over `trials` seeded draws."""
    warp = torch.arange(len(cert) * 4, dtype=torch.float32).reshape(-1, 4)
    gen = torch.Generator().manual_seed(0)
    counts = np.zeros(len(cert))
    for _ in range(trials):
        m, _ = sample(warp, cert, 1, mode=mode, generator=gen)
        counts[int(m[0, 0]) // 4] += 1
    return counts


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("pow", lambda c: c ** (1 / 3)),
        ("threshold", lambda c: np.where(c > 0.05, 1.0, c)),
        ("naive", lambda c: (c > 0).astype(float)),
    ],
)
def test_draws_follow_each_modes_weights(mode, expected):
    cert = torch.tensor([0.0, 0.001, 0.02, 0.04, 0.3, 0.6, 1.0])
    trials = 6000
    counts = draw_frequencies(cert, mode, trials)
    p = expected(cert.double().numpy())
    p = p / p.sum()
    assert counts[0] == 0  # certainty 0 is never drawn, whatever the mode
    # Pearson's chi-square over the drawable cells; 6 d.o.f., p ≈ 1e-4 at 27.9
    live = p > 0
    chi2 = ((counts[live] - trials * p[live]) ** 2 / (trials * p[live])).sum()
    assert chi2 < 27.9, (counts, trials * p)


def clustered_map(h: int = 96, w: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A block of certainty 1 in the top-left 1/16 of the image; certainty 0.02 (below DKM's
    threshold) everywhere else."""
    cert = torch.full((h, w), 0.02)
    cert[: h // 4, : w // 4] = 1.0
    return grid_warp(h, w), cert


def test_threshold_balanced_spreads_matches_more_evenly_than_plain_threshold():
    warp, cert = clustered_map()
    block_area = 1 / 16
    out = {}
    for mode in ("threshold", "threshold_balanced"):
        m, _ = sample(warp, cert, 1000, mode=mode, generator=torch.Generator().manual_seed(1))
        assert len(m) == 1000 and len(torch.unique(m, dim=0)) == 1000  # without replacement
        in_block = ((m[:, 0] < -0.5) & (m[:, 1] < -0.5)).float().mean().item()
        density = kde(m[:, :2])  # how crowded each chosen match's neighbourhood is
        out[mode] = (in_block, (density.std() / density.mean()).item())
    # unbalanced: most matches in the block (weights 768·1 vs 11520·0.02; ~62 %, not 77 %, as
    # drawing without replacement depletes the block)
    assert out["threshold"][0] > 0.5, out
    # balanced: about the block's share of the image, as a uniform spread would give
    assert abs(out["threshold_balanced"][0] - block_area) < 0.04
    # and the spatial density of the result varies far less
    assert out["threshold_balanced"][1] < 0.5 * out["threshold"][1], out


def test_a_seeded_generator_reproduces_the_draw():
    warp, cert = clustered_map(48, 64)
    a = sample(warp, cert, 300, generator=torch.Generator().manual_seed(7))
    b = sample(warp, cert, 300, generator=torch.Generator().manual_seed(7))
    c = sample(warp, cert, 300, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("mode", ["threshold_balanced", "threshold", "pow", "naive"])
@pytest.mark.parametrize("shape", [(1, 1), (30, 40)])
def test_zero_certainty_gives_zero_matches(mode, shape):
    m, c = sample(grid_warp(*shape), torch.zeros(shape), 500, mode=mode)
    assert m.shape == (0, 4) and c.shape == (0,)


@pytest.mark.parametrize("mode", ["threshold_balanced", "threshold", "pow", "naive"])
def test_asking_for_more_than_the_certain_cells_returns_each_once(mode):
    warp = grid_warp(10, 10)
    cert = torch.zeros(10, 10)
    cert[2, 3:9] = torch.tensor([0.01, 0.2, 0.5, 0.9, 1.0, float("nan")])  # NaN: not drawable
    m, c = sample(warp, cert, 50, mode=mode, generator=torch.Generator().manual_seed(0))
    expected = warp[2, 3:8]
    assert len(m) == 5
    assert torch.equal(m[m[:, 0].argsort()], expected)
    assert torch.equal(c.sort().values, torch.tensor([0.01, 0.2, 0.5, 0.9, 1.0]))  # model's own


def test_one_pixel_with_certainty_is_its_one_match():
    m, c = sample(torch.tensor([[[0.0, 0.0, 0.5, -0.5]]]), torch.ones(1, 1), 10)
    assert m.tolist() == [[0.0, 0.0, 0.5, -0.5]] and c.tolist() == [1.0]


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown sample mode 'treshold_balanced'.*did you mean"):
        sample(grid_warp(2, 2), torch.ones(2, 2), 1, mode="treshold_balanced")


def test_kde_matches_a_direct_sum():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0]])
    e = np.exp(-0.01 / (2 * 0.01))  # neighbours 0.1 apart, σ = 0.1
    far = np.exp(-(0.81 + 1.0) / 0.02)
    expected = [1 + e + np.exp(-2 / 0.02), 1 + e + far, 1 + np.exp(-2 / 0.02) + far]
    np.testing.assert_allclose(kde(x).numpy(), expected, rtol=1e-5)


def test_pixel_coordinates_by_hand():
    m = np.array([[-1, -1, 1, 1], [-0.75, -0.5, 0, 0]], np.float32)
    # image 0 is 4×2: u = −1 is the left edge (x = −0.5), −1 + 1/4 the first pixel's centre (0)
    p0, p1 = to_pixel_coordinates(m, (4, 2), (10, 6))
    np.testing.assert_allclose(p0, [[-0.5, -0.5], [0, 0]])
    np.testing.assert_allclose(p1, [[9.5, 5.5], [4.5, 2.5]])
    t0, t1 = to_pixel_coordinates(torch.from_numpy(m), (4, 2), (10, 6))
    assert torch.equal(t0, torch.from_numpy(p0)) and torch.equal(t1, torch.from_numpy(p1))


def test_dkms_grid_lands_on_tiepoints_resized_pixel_centres():
    """The centre of cell (i, j) of a w×h grid over a W×H image is, in tiepoint's convention,
    pixel (j, i) of the image resized to w×h, mapped back with `images.scale_points`."""
    (w, h), (W, H) = (16, 12), (100, 75)
    warp = grid_warp(h, w, torch.float64)
    p0, _ = to_pixel_coordinates(warp.reshape(-1, 4), (W, H), (W, H))
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    resized = np.stack([jj, ii], -1).reshape(-1, 2).astype(np.float64)
    np.testing.assert_allclose(p0.numpy(), images.scale_points(resized, [W / w, H / h]), atol=1e-9)
    back = to_normalized_coordinates(p0, (W, H))
    torch.testing.assert_close(back, warp.reshape(-1, 4)[:, :2], atol=1e-12, rtol=0)
