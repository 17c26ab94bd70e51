"""ZEB as GIM runs it: input sizes, GIM's per-set dump files and GIM's `analysis.py`.

GIM (`test.py`, `trainer/lightning.py`, `tools/metrics.py`, `analysis.py`):
- input size: no downscale (`--img_size 9999`) and each side floored to a multiple of 8, except
  KITTI (long side capped at 1240) and ETH3D (1600), whose loaders skip the floor;
- per pair: OpenCV essential-matrix RANSAC at 0.5 px / mean(fx0, fy1, fx0, fy1) (conf 0.99999) on
  K-normalised points, the `recoverPose` solution with most inliers; R and t angle errors (t as
  min(e, 180 - e)), t_errs2 = |t·|t_gt|/|t| - t_gt|; a failure is inf;
- precision: fraction of matches whose squared symmetric epipolar distance (K-normalised) is below
  5e-4, before and after the RANSAC inlier mask;
- dump: `[T] {model} {set:>15} {version}.txt`, header `identifiers covisible0 covisible1 R_errs
  t_errs t_errs2 Bef.Prec Bef.Num Aft.Prec Aft.Num`, rows deduplicated (last wins) and sorted by
  identifier (`scene#img0#img1`);
- analysis: rows deduplicated again (first wins), nan/inf → 180, error = max(R, t), SuperGlue AUC
  (errors prefixed with 0, recall = linspace, trapezoid to 5°); the README reports ×100 and the
  mean of the 12 sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_write_text
from ..errors import DatasetError
from ..images import target_size
from .benchmarks.zeb import GIM_MAX_SIZE, gim_input
from .metrics import error_auc

# README column, tiepoint's ZEB folder, GIM's dump name — in GIM's column order
ZEB_SETS = (
    ("GL3", "gl3d", "GL3D"),
    ("BLE", "blendedmvs", "BlendedMVS"),
    ("ETI", "eth3di", "ETH3DI"),
    ("ETO", "eth3do", "ETH3DO"),
    ("KIT", "kitti", "KITTI"),
    ("WEA", "robotcarweather", "RobotcarWeather"),
    ("SEA", "robotcarseason", "RobotcarSeason"),
    ("NIG", "robotcarnight", "RobotcarNight"),
    ("MUL", "multifov", "Multi-FoV"),
    ("SCE", "scenenet", "SceneNetRGBD"),
    ("ICL", "iclnuim", "ICL-NUIM"),
    ("GTA", "gtasfm", "GTA-SfM"),
)
DUMP_NAME = {folder: dump for _, folder, dump in ZEB_SETS}
COLUMN = {dump: col for col, _, dump in ZEB_SETS}
MAX_SIZE = GIM_MAX_SIZE  # --img_size in GIM's TEST_*.sh; these loaders do not floor to ×8
HEADER = "identifiers covisible0 covisible1 R_errs t_errs t_errs2 Bef.Prec Bef.Num Aft.Prec Aft.Num"
EPI_THRESHOLD = 5e-4
AUC_THRESHOLD = 5.0


def gim_input_size(zeb_set: str, size: tuple[int, int]) -> tuple[int, int]:
    """(W, H) GIM feeds the model for an image of `size` from set `zeb_set` (tiepoint folder name):
    what `Matcher.extract` loads with the set's `benchmarks.zeb.gim_input` (max_size / multiple)."""
    inp = gim_input(zeb_set)
    cap = inp.get("max_size")
    return target_size(size, cap if cap and max(size) > cap else None, "long", inp.get("multiple"))


# ---- per-pair metrics, GIM's tools/metrics.py


def _normalize(p: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (p - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def estimate_pose(p0, p1, K0, K1, thresh: float = 0.5, conf: float = 0.99999):
    """(R, t, inlier mask) or None: GIM's `estimate_pose`."""
    if len(p0) < 5:
        return None
    n0, n1 = _normalize(p0, K0), _normalize(p1, K1)
    thr = thresh / np.mean([K0[0, 0], K1[1, 1], K0[0, 0], K1[1, 1]])
    E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), threshold=thr, prob=conf, method=cv2.RANSAC)
    if E is None:
        return None
    best, ret = 0, None
    for Ei in np.split(E, len(E) / 3):
        n, R, t, _ = cv2.recoverPose(Ei, n0, n1, np.eye(3), 1e9, mask=mask)
        if n > best:
            ret, best = (R, t[:, 0], mask.ravel() > 0), n
    return ret


def relative_pose_error(T_0to1, R, t) -> tuple[float, float, float]:
    """(t_err°, R_err°, t_err2) as GIM computes them."""
    t_gt = T_0to1[:3, 3]
    n = np.linalg.norm(t) * np.linalg.norm(t_gt)
    t_err = np.rad2deg(np.arccos(np.clip(np.dot(t, t_gt) / n, -1.0, 1.0)))
    t_err = np.minimum(t_err, 180 - t_err)
    t_err2 = np.linalg.norm(t * (np.linalg.norm(t_gt) / np.linalg.norm(t)) - t_gt)
    cos = np.clip((np.trace(R.T @ T_0to1[:3, :3]) - 1) / 2, -1.0, 1.0)
    return float(t_err), float(np.rad2deg(np.abs(np.arccos(cos)))), float(t_err2)


def symmetric_epipolar_errors(p0, p1, T_0to1, K0, K1) -> np.ndarray:
    """Squared symmetric epipolar distance of each match in K-normalised coordinates."""
    t = T_0to1[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = tx @ T_0to1[:3, :3]
    x0 = np.c_[_normalize(p0, K0), np.ones(len(p0))]
    x1 = np.c_[_normalize(p1, K1), np.ones(len(p1))]
    Ep0 = x0 @ E.T
    Etp1 = x1 @ E
    p1Ep0 = np.sum(x1 * Ep0, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return p1Ep0**2 * (
            1.0 / (Ep0[:, 0] ** 2 + Ep0[:, 1] ** 2) + 1.0 / (Etp1[:, 0] ** 2 + Etp1[:, 1] ** 2)
        )


def pair_row(identifier, covis0, covis1, p0, p1, K0, K1, T_0to1) -> dict:
    """One dump row (GIM's `compute_metrics` + `test_epoch_end`) from a pair's matches."""
    p0 = np.asarray(p0, np.float64).reshape(-1, 2)
    p1 = np.asarray(p1, np.float64).reshape(-1, 2)
    ret = estimate_pose(p0, p1, K0, K1)
    if ret is None:
        R_err = t_err = t_err2 = math.inf
        inl = np.zeros(0, bool)
    else:
        R, t, inl = ret
        t_err, R_err, t_err2 = relative_pose_error(T_0to1, R, t)
    epi = symmetric_epipolar_errors(p0, p1, T_0to1, K0, K1)
    bef = epi < EPI_THRESHOLD
    aft = epi[inl] < EPI_THRESHOLD if len(inl) else np.zeros(0, bool)
    return {
        "identifiers": identifier,
        "covisible0": covis0,
        "covisible1": covis1,
        "R_errs": R_err,
        "t_errs": t_err,
        "t_errs2": t_err2,
        "Bef.Prec": float(bef.sum() / max(len(bef), 1)),
        "Bef.Num": int(bef.sum()),
        "Aft.Prec": float(aft.sum() / max(len(aft), 1)),
        "Aft.Num": int(aft.sum()),
    }


# ---- dump files


def dump_path(dump_dir, model: str, dump_set: str, version: str) -> Path:
    if " " in model or " " in version:
        raise DatasetError(f"zeb dump: model '{model}' and version '{version}' must have no spaces")
    return Path(dump_dir) / f"[T] {model} {dump_set:>15} {version}.txt"


def write_dump(path, rows: Iterable[dict]) -> Path:
    """Write rows as GIM does: deduplicated by identifier (last wins), sorted by identifier."""
    last = {}
    for r in rows:
        if " " in str(r["identifiers"]):
            raise DatasetError(f"{path}: identifier '{r['identifiers']}' contains a space")
        last[r["identifiers"]] = r
    keys = HEADER.split()
    lines = [HEADER]
    for ident in sorted(last):
        lines.append(" ".join(str(last[ident][k]) for k in keys))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def read_dump(path) -> dict[str, np.ndarray]:
    """Columns of a dump file, rows deduplicated by identifier (first wins, as `analysis.py`)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ZEB dump ({e})") from None
    if not lines or lines[0].split()[:5] != HEADER.split()[:5]:
        raise DatasetError(f"{path}: not a GIM ZEB dump (header must start '{HEADER[:40]}...')")
    head = lines[0].split()
    seen, cols = set(), {k: [] for k in head}
    for i, line in enumerate(lines[1:], 2):
        f = line.split()
        if not f:
            continue
        if len(f) != len(head):
            raise DatasetError(f"{path}:{i}: expected {len(head)} fields, got {len(f)}")
        if f[0] in seen:
            continue
        seen.add(f[0])
        for k, v in zip(head, f):
            cols[k].append(v)
    out = {"identifiers": np.array(cols["identifiers"])}
    for k in ("R_errs", "t_errs"):
        try:
            out[k] = np.array([float(x) for x in cols[k]], np.float64)
        except ValueError as e:
            raise DatasetError(f"{path}: column {k} has a non-number ({e})") from None
    return out


def gim_auc(R_errs, t_errs, threshold: float = AUC_THRESHOLD) -> float:
    """GIM's `error_auc`: nan/inf → 180, max(R, t), AUC up to `threshold` as a fraction."""
    R = np.nan_to_num(np.asarray(R_errs, np.float64), nan=180.0, posinf=180.0, neginf=180.0)
    t = np.nan_to_num(np.asarray(t_errs, np.float64), nan=180.0, posinf=180.0, neginf=180.0)
    return error_auc(np.maximum(R, t), [threshold])[0]


def find_dumps(dump_dir, model: str, version: str) -> dict[str, Path]:
    """{GIM set name: file} of `model`/`version` in `dump_dir`, in GIM's column order."""
    dump_dir = Path(dump_dir)
    if not dump_dir.is_dir():
        raise DatasetError(f"{dump_dir}: ZEB dump folder not found")
    found = {}
    for p in dump_dir.iterdir():
        parts = p.name.rpartition(".txt")[0].split()
        if p.is_file() and len(parts) >= 4 and parts[1] == model and parts[-1] == version:
            found[parts[2]] = p
    return {name: found[name] for _, _, name in ZEB_SETS if name in found}


def models_in(dump_dir) -> list[tuple[str, str]]:
    """(model, version) pairs that have dump files in `dump_dir`."""
    if not Path(dump_dir).is_dir():
        raise DatasetError(f"{dump_dir}: ZEB dump folder not found")
    out = set()
    for p in Path(dump_dir).glob("*.txt"):
        parts = p.name.rpartition(".txt")[0].split()
        if len(parts) >= 4 and parts[0] == "[T]":
            out.add((parts[1], parts[-1]))
    return sorted(out)


def analyse(dump_dir, model: str, version: str, sets: Sequence[str] | None = None) -> dict:
    """{GIM set name: AUC@5° ×100} for `model`/`version`, plus 'mean' over the sets found."""
    files = find_dumps(dump_dir, model, version)
    if sets:
        unknown = [s for s in sets if s not in files]
        if unknown:
            raise DatasetError(f"{dump_dir}: no dump of {model} {version} for {unknown}")
        files = {s: files[s] for s in sets}
    if not files:
        have = ", ".join(f"{m} {v}" for m, v in models_in(dump_dir)) or "none"
        raise DatasetError(f"{dump_dir}: no dump files of '{model}' version '{version}' ({have})")
    res = {}
    for name, path in files.items():
        d = read_dump(path)
        res[name] = 100 * gim_auc(d["R_errs"], d["t_errs"])
    res["mean"] = float(np.mean(list(res.values())))
    return res


def format_analysis(rows: dict[str, dict]) -> str:
    """A README-style table: one row per 'model version', columns GL3..GTA and the mean."""
    cols = [c for c, _, name in ZEB_SETS if any(name in r for r in rows.values())]
    names = {c: n for c, _, n in ZEB_SETS}
    lines = [f"{'model':28s} " + " ".join(f"{c:>5s}" for c in cols) + "  mean"]
    for label, r in rows.items():
        cells = [f"{r[names[c]]:5.1f}" if names[c] in r else "    -" for c in cols]
        lines.append(f"{label:28s} " + " ".join(cells) + f" {r['mean']:5.1f}")
    return "\n".join(lines)


def dumps_from_run(pairs, predictions_h5, dump_dir, model: str, version: str) -> list[Path]:
    """Write GIM's per-set dump files for a tiepoint ZEB run (its pairs and predictions.h5)."""
    import h5py
    from tqdm import tqdm

    from .predictions import load_prediction

    by_set: dict[str, list[dict]] = {}
    with h5py.File(predictions_h5, "r") as f:
        for p in tqdm(pairs, desc="zeb dump", unit="pair"):
            d = load_prediction(f, p)
            ident = p.extra.get("identifier") or "#".join(
                [p.name.replace("/", "_"), Path(p.image0).name, Path(p.image1).name]
            )
            row = pair_row(
                ident,
                p.extra.get("covisible0", 0.0),
                p.extra.get("covisible1", 0.0),
                d.points0,
                d.points1,
                p.K0,
                p.K1,
                p.T_0to1,
            )
            by_set.setdefault(p.group, []).append(row)
    out = []
    for group, rows in by_set.items():
        name = DUMP_NAME.get(group, group)
        out.append(write_dump(dump_path(dump_dir, model, name, version), rows))
    return out


__all__ = [
    "ZEB_SETS",
    "analyse",
    "dump_path",
    "dumps_from_run",
    "format_analysis",
    "gim_auc",
    "gim_input_size",
    "pair_row",
    "read_dump",
    "write_dump",
]
