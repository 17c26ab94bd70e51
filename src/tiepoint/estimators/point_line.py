"""Homography from points and line segments in one robust fit (LO-RANSAC/MSAC, then refinement).

The role of GlueStick's `homography_est` (not on the package index), written from the geometry:
  point  p0 ↔ p1:            p1 ~ H p0                     — two linear equations in H;
  segment (a0,b0) ↔ line l1:  l1ᵀ H a0 = 0,  l1ᵀ H b0 = 0   — two more (the mapped end points lie
                              on the matched line, i.e. l1 ~ H^-T l0 where the segments coincide).
So a minimal sample is any 4 correspondences, points and lines mixed, solved by a normalised DLT.
Residuals in pixels: a point's symmetric transfer error (max of both directions); a segment's
largest distance of its end points to the other line, both ways (so the segments need not share
end points, only their supporting lines). MSAC scores each sample; every new best is locally
optimised (iterated least squares on its inliers, thresholds annealed) and the final model is
refined by Levenberg–Marquardt on the geometric residuals of all inliers.
"""

from __future__ import annotations

import numpy as np

from ..geometry.homography import warp_points


def _norm(coords: np.ndarray) -> np.ndarray:
    c = coords.mean(0)
    d = np.linalg.norm(coords - c, axis=1).mean()
    s = np.sqrt(2) / max(d, 1e-12)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def _hom(p: np.ndarray) -> np.ndarray:
    return np.concatenate([p, np.ones_like(p[..., :1])], -1)


def line_through(segments: np.ndarray) -> np.ndarray:
    """(L,2,2) segments → (L,3) homogeneous lines with (a² + b²) = 1 (point distance = |l·x|)."""
    ln = np.cross(_hom(segments[:, 0]), _hom(segments[:, 1]))
    return ln / np.linalg.norm(ln[:, :2], axis=1, keepdims=True).clip(min=1e-12)


def _rows(p0, p1, s0, l1) -> np.ndarray:
    """DLT rows (2 per point, 2 per segment) for vec(H) in row-major order."""
    rows = []
    if len(p0):
        x, y, u, v = p0[:, 0], p0[:, 1], p1[:, 0], p1[:, 1]
        z, o = np.zeros_like(x), np.ones_like(x)
        rows.append(np.stack([-x, -y, -o, z, z, z, u * x, u * y, u], 1))
        rows.append(np.stack([z, z, z, -x, -y, -o, v * x, v * y, v], 1))
    if len(s0):
        for e in (0, 1):  # l1ᵀ H a = Σ_ij l1_i H_ij a_j
            a = _hom(s0[:, e])
            rows.append((l1[:, :, None] * a[:, None, :]).reshape(-1, 9))
    return np.concatenate(rows, 0) if rows else np.zeros((0, 9))


def _solve(rows: np.ndarray) -> np.ndarray | None:
    if len(rows) < 8:
        return None
    _, s, vt = np.linalg.svd(rows)
    if s[-2] < 1e-8 * max(s[0], 1e-300):  # not unique (collinear points, concurrent lines...)
        return None
    H = vt[-1].reshape(3, 3)
    return H if np.isfinite(H).all() else None


class _Problem:
    """Correspondences in normalised coordinates, and residuals in pixels."""

    def __init__(self, p0, p1, s0, s1):
        self.p0, self.p1, self.s0, self.s1 = p0, p1, s0, s1
        all0 = np.concatenate([p0, s0.reshape(-1, 2)])
        all1 = np.concatenate([p1, s1.reshape(-1, 2)])
        self.T0, self.T1 = _norm(all0), _norm(all1)
        self.q0, self.q1 = warp_points(self.T0, p0), warp_points(self.T1, p1)
        self.t0 = warp_points(self.T0, s0.reshape(-1, 2)).reshape(-1, 2, 2)
        self.t1 = warp_points(self.T1, s1.reshape(-1, 2)).reshape(-1, 2, 2)
        self.m0, self.m1 = line_through(self.t0), line_through(self.t1)
        self.L0, self.L1 = line_through(s0), line_through(s1)
        self.np, self.nl = len(p0), len(s0)

    def fit(self, pi: np.ndarray, li: np.ndarray, weights=None) -> np.ndarray | None:
        """H in pixels from the points `pi` and lines `li` (index arrays) by normalised DLT."""
        rows = [_rows(self.q0[pi], self.q1[pi], self.t0[li], self.m1[li])]
        Hn = _solve(np.concatenate(rows))
        if Hn is None:
            return None
        H = np.linalg.inv(self.T1) @ Hn @ self.T0
        return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else None

    def residuals(self, H) -> tuple[np.ndarray, np.ndarray]:
        """Pixel residuals (points (P,), lines (L,)); non-invertible H gives inf."""
        try:
            Hi = np.linalg.inv(H)
        except np.linalg.LinAlgError:
            return np.full(self.np, np.inf), np.full(self.nl, np.inf)
        with np.errstate(all="ignore"):
            rp = np.zeros(self.np)
            if self.np:
                e0 = np.linalg.norm(warp_points(H, self.p0) - self.p1, axis=1)
                e1 = np.linalg.norm(warp_points(Hi, self.p1) - self.p0, axis=1)
                rp = np.maximum(e0, e1)
            rl = np.zeros(self.nl)
            if self.nl:
                a01 = warp_points(H, self.s0.reshape(-1, 2)).reshape(-1, 2, 2)
                a10 = warp_points(Hi, self.s1.reshape(-1, 2)).reshape(-1, 2, 2)
                d1 = np.abs((_hom(a01) * self.L1[:, None]).sum(-1)).max(1)
                d0 = np.abs((_hom(a10) * self.L0[:, None]).sum(-1)).max(1)
                rl = np.maximum(d0, d1)
        rp = np.where(np.isfinite(rp), rp, np.inf)
        rl = np.where(np.isfinite(rl), rl, np.inf)
        return rp, rl


def _msac(rp, rl, th, lth) -> float:
    return float(np.minimum(rp**2, th**2).sum() / th**2 + np.minimum(rl**2, lth**2).sum() / lth**2)


def _local_opt(prob: _Problem, H, th, lth, steps: int = 4):
    """Iterated least squares on the inliers, the threshold shrinking from 3× to 1×."""
    best, best_cost = H, _msac(*prob.residuals(H), th, lth)
    for k in np.linspace(3.0, 1.0, steps):
        rp, rl = prob.residuals(best)
        pi, li = np.flatnonzero(rp < k * th), np.flatnonzero(rl < k * lth)
        if 2 * (len(pi) + len(li)) < 8:
            break
        cand = prob.fit(pi, li)
        if cand is None:
            continue
        cost = _msac(*prob.residuals(cand), th, lth)
        if cost < best_cost:
            best, best_cost = cand, cost
    return best, best_cost


def _refine(prob: _Problem, H, th, lth):
    """Levenberg–Marquardt on the inliers' geometric residuals (point transfer both ways, line
    end-point distances both ways), H[2,2] fixed to 1."""
    from scipy.optimize import least_squares

    rp, rl = prob.residuals(H)
    pi, li = np.flatnonzero(rp < th), np.flatnonzero(rl < lth)
    if 2 * (len(pi) + len(li)) <= 8:
        return H
    p0, p1, s0, s1 = prob.p0[pi], prob.p1[pi], prob.s0[li], prob.s1[li]
    L0, L1 = prob.L0[li], prob.L1[li]

    def fun(h):
        Hh = np.append(h, 1.0).reshape(3, 3)
        Hi = np.linalg.inv(Hh)
        out = [
            (warp_points(Hh, p0) - p1).ravel(),
            (warp_points(Hi, p1) - p0).ravel(),
            ((_hom(warp_points(Hh, s0.reshape(-1, 2))).reshape(-1, 2, 3) * L1[:, None]).sum(-1)),
            ((_hom(warp_points(Hi, s1.reshape(-1, 2))).reshape(-1, 2, 3) * L0[:, None]).sum(-1)),
        ]
        return np.concatenate([o.ravel() for o in out])

    try:
        res = least_squares(fun, (H / H[2, 2]).ravel()[:8], method="lm", max_nfev=200)
    except (np.linalg.LinAlgError, ValueError):
        return H
    Hr = np.append(res.x, 1.0).reshape(3, 3)
    old = _msac(*prob.residuals(H), th, lth)
    return Hr if np.isfinite(Hr).all() and _msac(*prob.residuals(Hr), th, lth) <= old else H


def homography(
    p0: np.ndarray,
    p1: np.ndarray,
    th: float,
    lines0: np.ndarray | None = None,
    lines1: np.ndarray | None = None,
    line_threshold: float | None = None,
    confidence: float = 0.9999,
    max_iters: int = 10000,
    min_iters: int = 100,
    seed: int = 0,
    return_line_inliers: bool = False,
):
    """(H or None, point inliers (P,)[, line inliers (L,)]); `lines*` are matched (L,2,2) segments
    (line i of image 0 ↔ line i of image 1). `line_threshold` defaults to `th`."""
    p0, p1 = np.asarray(p0, np.float64).reshape(-1, 2), np.asarray(p1, np.float64).reshape(-1, 2)
    s0 = np.zeros((0, 2, 2)) if lines0 is None else np.asarray(lines0, np.float64).reshape(-1, 2, 2)
    s1 = np.zeros((0, 2, 2)) if lines1 is None else np.asarray(lines1, np.float64).reshape(-1, 2, 2)
    if len(s0) != len(s1):
        raise ValueError(f"lines0 and lines1 must match one to one, got {len(s0)} and {len(s1)}")
    keep = (np.linalg.norm(s0[:, 1] - s0[:, 0], axis=1) > 0) & (
        np.linalg.norm(s1[:, 1] - s1[:, 0], axis=1) > 0
    )
    lth = th if line_threshold is None else float(line_threshold)
    n_p, n_l = len(p0), len(s0)
    fail = (None, np.zeros(n_p, bool)) + ((np.zeros(n_l, bool),) if return_line_inliers else ())
    kept = np.flatnonzero(keep)
    prob = _Problem(p0, p1, s0[kept], s1[kept])
    n = prob.np + prob.nl
    if n < 4:
        return fail
    rng = np.random.default_rng(seed)
    best, best_cost, it, needed = None, np.inf, 0, max_iters
    while it < min(needed, max_iters):
        it += 1
        sample = rng.choice(n, 4, replace=False)
        pi, li = sample[sample < prob.np], sample[sample >= prob.np] - prob.np
        H = prob.fit(pi, li)
        if H is None:
            continue
        cost = _msac(*prob.residuals(H), th, lth)
        if cost < best_cost:
            H, cost = _local_opt(prob, H, th, lth)
            best, best_cost = H, cost
            rp, rl = prob.residuals(best)
            w = ((rp < th).sum() + (rl < lth).sum()) / n
            if w > 0:
                den = np.log(max(1 - w**4, 1e-12))
                needed = max(
                    min_iters, int(np.ceil(np.log(1 - confidence) / den)) if den < 0 else 0
                )
    if best is None:
        return fail
    best = _refine(prob, best, th, lth)
    rp, rl = prob.residuals(best)
    if (rp < th).sum() + (rl < lth).sum() < 4:
        return fail
    line_in = np.zeros(n_l, bool)
    line_in[kept] = rl < lth
    out = (best / best[2, 2], rp < th)
    return out + ((line_in,) if return_line_inliers else ())
