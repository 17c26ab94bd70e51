"""ETH3D as Glue Factory evaluates point and line matching on it (`eval/eth3d.py`).

Data: `ETH3D_undistorted` (SOLD2's copy of the ETH3D DSLR scenes), one folder per scene:

    <scene>/images/dslr_images_undistorted/<name>.JPG
    <scene>/ground_truth_depth/undistorted_depth/<name>.png     uint16, depth·256, ×8 downsized
    <scene>/dslr_calibration_undistorted/{cameras,images,points3D}.txt   COLMAP text model

Protocol: images gray, downsized ×8 (long side // 8, bilinear with antialias); all pairs of a
scene that share ≥ 500 3D points (COLMAP's images.txt); ground truth from depth and pose
(points: 3 px positive / 5 px negative; lines: 50 samples, 5 px, overlap 0.2, visibility 0.5).
Metric: every predicted match of the whole dataset, sorted by score, is a true or false
positive against the ground truth (labels −2 ignored); recall is normalised by the number of
ground-truth positives; AP (×100) is the area under the interpolated PR curve (`AP`, `AP_lines`).
Differences: the camera of an image is the one its undistorted images.txt entry names (Glue
Factory indexes the undistorted cameras with the distorted model's id); Glue Factory's line
evaluation passes an unknown `conf=` and crashes, here it runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .download import Resource

logger = logging.getLogger("tiepoint")

RESOURCE = Resource(
    url="https://cvg-data.inf.ethz.ch/SOLD2/SOLD2_ETH3D_undistorted/ETH3D_undistorted.zip",
    filename="ETH3D_undistorted.zip",
    folder="ETH3D_undistorted",
)
IMAGES = Path("images/dslr_images_undistorted")
DEPTHS = Path("ground_truth_depth/undistorted_depth")
CALIB = Path("dslr_calibration_undistorted")
IGNORE = -2


# ------------------------------------------------------------------------------------ reading
def qvec_to_rotmat(q) -> np.ndarray:
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
            [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
            [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
        ]
    )


def _data_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"eth3d: {path} not found")
    return [ln.rstrip("\n") for ln in path.read_text().splitlines() if not ln.startswith("#")]


def read_cameras(path: Path) -> dict[int, np.ndarray]:
    """COLMAP cameras.txt (PINHOLE: fx fy cx cy) → id → K in tiepoint's convention (pixel centres
    at integers: COLMAP's principal point minus 0.5)."""
    cams = {}
    for i, ln in enumerate(_data_lines(path)):
        f = ln.split()
        if not f:
            continue
        try:
            fx, fy, cx, cy = map(float, f[4:8])
            cams[int(f[0])] = np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1.0]])
        except (ValueError, IndexError):
            raise DatasetError(
                f"eth3d: {path}: camera line {i + 1} is not 'id model w h fx fy cx cy'"
            ) from None
    return cams


def read_images(path: Path) -> dict[str, tuple[np.ndarray, int, set[int]]]:
    """COLMAP images.txt → name → (T_world_to_camera (4,4), camera id, visible 3D point ids)."""
    lines = _data_lines(path)
    out = {}
    for k in range(0, len(lines) - 1, 2):
        f, pts = lines[k].split(), lines[k + 1].split()
        try:
            T = np.eye(4)
            T[:3, :3] = qvec_to_rotmat(list(map(float, f[1:5])))
            T[:3, 3] = list(map(float, f[5:8]))
            ids = {int(i) for i in pts[2::3] if int(i) != -1}
            out[Path(f[9]).name] = (T, int(f[8]), ids)
        except (ValueError, IndexError):
            raise DatasetError(f"eth3d: {path}: entry {k // 2 + 1} is not a COLMAP image") from None
    return out


@dataclass
class ETH3DPair:
    scene: str
    image0: Path
    image1: Path
    depth0: Path
    depth1: Path
    K0: np.ndarray  # of the full-size image, tiepoint convention
    K1: np.ndarray
    T_0to1: np.ndarray
    covisible: int

    @property
    def name(self) -> str:
        return f"{self.scene}/{self.image0.stem}_{self.image1.stem}"


def read_eth3d(root: Path, min_covisibility: int = 500) -> list[ETH3DPair]:
    """All pairs i < j of each scene (sorted names) sharing ≥ `min_covisibility` 3D points."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"eth3d: {root} not found (tiepoint eth3d --download fetches it)")
    pairs = []
    scenes = sorted(p for p in root.iterdir() if (p / CALIB).is_dir())
    if not scenes:
        raise DatasetError(f"eth3d: no scene folder with {CALIB} under {root}")
    for scene in scenes:
        cams = read_cameras(scene / CALIB / "cameras.txt")
        imgs = read_images(scene / CALIB / "images.txt")
        names = sorted(p.name for p in (scene / IMAGES).iterdir() if p.name in imgs)
        for a, n0 in enumerate(names):
            for n1 in names[a + 1 :]:
                (T0, c0, v0), (T1, c1, v1) = imgs[n0], imgs[n1]
                n = len(v0 & v1)
                if n < min_covisibility:
                    continue
                if c0 not in cams or c1 not in cams:
                    raise DatasetError(f"eth3d: {scene.name}: camera {c0}/{c1} not in cameras.txt")
                pairs.append(
                    ETH3DPair(
                        scene.name,
                        scene / IMAGES / n0,
                        scene / IMAGES / n1,
                        scene / DEPTHS / f"{Path(n0).stem}.png",
                        scene / DEPTHS / f"{Path(n1).stem}.png",
                        cams[c0],
                        cams[c1],
                        T1 @ np.linalg.inv(T0),
                        n,
                    )
                )
    return pairs


def load_view(image: Path, depth: Path, K: np.ndarray, downsize: int = 8):
    """Gray image downsized (long side // `downsize`) as (1,1,h,w) tensor, depth (h,w) float32
    (0 = unknown), and K for that size."""
    import cv2

    from .. import images
    from ..geometry.pose import scale_intrinsics

    t, size = images.to_tensor(image, name=str(image))
    t = images.rgb_to_gray(t)
    long = max(size) // downsize
    t, _ = images.resize_image(t, long, "long", size=images.target_size(size, long, "long"))
    h, w = t.shape[-2:]
    d = cv2.imread(str(depth), cv2.IMREAD_ANYDEPTH)
    if d is None:
        raise DatasetError(f"eth3d: cannot read depth {depth}")
    d = d.astype(np.float32) / 256.0
    if d.shape != (h, w):
        raise DatasetError(f"eth3d: depth {depth} is {d.shape[::-1]}, image downsized to {(w, h)}")
    return t, d, scale_intrinsics(K, (w / size[0], h / size[1]))


# ------------------------------------------------------------------------------------ metric
def tp_fp(pred_matches0, gt_matches0, scores0):
    """Per-feature predictions → (tp, fp, scores) of the predicted matches, and #GT positives;
    features labelled IGNORE in the ground truth are left out (Glue Factory's `get_tp_fp_pts`)."""
    pred, gt, s = (np.asarray(a).reshape(-1) for a in (pred_matches0, gt_matches0, scores0))
    keep = gt != IGNORE
    pred, gt, s = pred[keep], gt[keep], s[keep]
    made = pred != -1
    return pred[made] == gt[made], pred[made] != gt[made], s[made], int((gt != -1).sum())


def average_precision(recall: np.ndarray, fp_rate: np.ndarray) -> float:
    """Area under the PR curve with precision made monotone (VOC style), recall padded 0 → 1."""
    precision = recall / np.maximum(recall + fp_rate, 1e-9)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    i = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[i + 1] - r[i]) * p[i + 1]))


def aggregate_pr(tps, fps, scores, num_pos: int) -> dict:
    """Dataset-wide PR curve and AP×100 from the per-pair lists."""
    tp, fp, s = (np.concatenate(x) if len(x) else np.zeros(0) for x in (tps, fps, scores))
    order = np.argsort(-s, kind="stable")
    n = max(num_pos, 1)
    recall = np.cumsum(tp[order]) / n
    fpr = np.cumsum(fp[order]) / n
    return {
        "AP": 100 * average_precision(recall, fpr),
        "curve_recall": recall,
        "curve_precision": recall / np.maximum(recall + fpr, 1e-9),
        "num_pos": num_pos,
        "num_predicted": int(len(s)),
    }


# ------------------------------------------------------------------------------------ evaluation
Predict = Callable[..., dict]  # (image0 (1,1,h,w), image1) → dict of numpy arrays


def _score_pair(pair: ETH3DPair, predict: Predict, downsize: int) -> dict[str, np.ndarray]:
    """tp/fp/scores/num_pos (and `*_lines`) of one pair."""
    import torch

    from ..geometry.gt import gt_matches_from_pose_depth
    from ..geometry.lines import gt_line_matches_from_pose_depth

    im0, d0, K0 = load_view(pair.image0, pair.depth0, pair.K0, downsize)
    im1, d1, K1 = load_view(pair.image1, pair.depth1, pair.K1, downsize)
    pred = predict(im0, im1)
    T = torch.from_numpy(pair.T_0to1)[None].double()
    Kt0, Kt1 = torch.from_numpy(K0)[None], torch.from_numpy(K1)[None]
    D0, D1 = torch.from_numpy(d0)[None].double(), torch.from_numpy(d1)[None].double()
    gt = gt_matches_from_pose_depth(
        torch.as_tensor(pred["keypoints0"]).double()[None],
        torch.as_tensor(pred["keypoints1"]).double()[None],
        T, Kt0, Kt1, D0, D1, pos_th=3.0, neg_th=5.0,
    )  # fmt: skip
    jobs = [("", pred["matches0"], gt["matches0"][0].numpy(), pred["matching_scores0"])]
    if "line_matches0" in pred:
        lgt = gt_line_matches_from_pose_depth(
            torch.as_tensor(pred["lines0"]).double()[None],
            torch.as_tensor(pred["lines1"]).double()[None],
            T, Kt0, Kt1, D0, D1,
        )  # fmt: skip
        jobs.append(
            (
                "_lines",
                pred["line_matches0"],
                lgt["line_matches0"][0].numpy(),
                pred["line_matching_scores0"],
            )
        )
    res = {}
    for key, m, g, s in jobs:
        tp, fp, sc, npos = tp_fp(m, g, s)
        res |= {f"tp{key}": tp, f"fp{key}": fp, f"scores{key}": sc, f"num_pos{key}": npos}
    return res


def evaluate(
    pairs: Iterable[ETH3DPair], predict: Predict, downsize: int = 8, cache: Path | None = None
) -> dict:
    """Run `predict` on every pair and score its points (and lines, when it returns
    `line_matches0`). `predict` returns `keypoints0/1` (N,2), `matches0` (N0,), `matching_scores0`
    in downsized pixels, optionally `lines0/1` (L,2,2), `line_matches0`, `line_matching_scores0`.
    With `cache` (an h5 file), each scored pair is stored there and skipped by a rerun."""
    import h5py
    from tqdm import tqdm

    acc = {k: ([], [], [], [0]) for k in ("", "_lines")}
    pairs = list(pairs)
    f = h5py.File(cache, "a") if cache is not None else None
    try:
        for pair in tqdm(pairs, desc="eth3d", disable=len(pairs) < 2):
            key = pair.name.replace("/", "|")
            if f is not None and key in f and f[key].attrs.get("done"):
                res = {k: f[key][k][()] for k in f[key]}
            else:
                res = _score_pair(pair, predict, downsize)
                if f is not None:
                    if key in f:
                        del f[key]
                    g = f.create_group(key)
                    for k, v in res.items():
                        g.create_dataset(k, data=v)
                    g.attrs["done"] = True
                    f.flush()
            for suffix, a in acc.items():
                if f"tp{suffix}" in res:
                    a[0].append(np.asarray(res[f"tp{suffix}"], bool))
                    a[1].append(np.asarray(res[f"fp{suffix}"], bool))
                    a[2].append(np.asarray(res[f"scores{suffix}"], np.float64))
                    a[3][0] += int(res[f"num_pos{suffix}"])
    finally:
        if f is not None:
            f.close()
    out = {"pairs": len(pairs)}
    for key, (tps, fps, ss, npos) in acc.items():
        if key == "" or tps:
            out.update({f"{k}{key}": v for k, v in aggregate_pr(tps, fps, ss, npos[0]).items()})
    return out


def matcher_predict(matcher) -> Predict:
    """Adapter: a `tiepoint.Matcher` (sparse pipeline) as `predict` (images used as given)."""

    def predict(im0, im1) -> dict:
        f0, f1 = matcher.extract(im0, resize=0), matcher.extract(im1, resize=0)
        r = matcher.match_features(f0, f1)
        out = {"keypoints0": f0.keypoints, "keypoints1": f1.keypoints}
        for key, n, m, s, prefix in (
            ("matches0", len(f0.keypoints), r.matches, r.scores, ""),
            ("line_matches0", None, r.line_matches, r.line_scores, "line_"),
        ):
            if m is None:
                continue
            n = n if n is not None else len(f0.lines)
            m0, s0 = np.full(n, -1, np.int64), np.zeros(n, np.float32)
            m0[m[:, 0]], s0[m[:, 0]] = m[:, 1], s
            out[key], out[f"{prefix}matching_scores0"] = m0, s0
        if r.line_matches is not None:
            out["lines0"], out["lines1"] = f0.lines, f1.lines
        return out

    return predict


def summary(results: dict) -> dict:
    return {k: v for k, v in results.items() if not k.startswith("curve_")}


def write_results(results: dict, out: Path, name: str) -> Path:
    """`<out>/<name>.json` (AP, counts, PR curves) and `<out>/<name>_pr.png`."""
    from ..atomic import atomic_write_text
    from ..viz.pr import plot_pr_curves

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in results.items()}
    path = out / f"{name}.json"
    atomic_write_text(path, json.dumps(data))
    plot_pr_curves({name: results}, out / f"{name}_pr.png", title="ETH3D points")
    if "AP_lines" in results:
        plot_pr_curves({name: results}, out / f"{name}_pr_lines.png", "_lines", "ETH3D lines")
    return path


# ------------------------------------------------------------------------------------ command
def cmd_eth3d(args) -> int:
    from omegaconf import OmegaConf

    from ..api import Matcher
    from .download import data_root, fetch_dataset

    root = Path(args.root) if args.root else data_root() / RESOURCE.folder
    if args.download:
        root = fetch_dataset(RESOURCE, root.parent)
    elif not root.is_dir():
        raise DatasetError(
            f"eth3d: {root} not found: use --download, or download {RESOURCE.url} and extract "
            f"it so that {root} holds the scene folders"
        )
    pairs = read_eth3d(root, args.min_covisibility)
    if args.max_pairs:
        pairs = pairs[: args.max_pairs]
    matcher = Matcher(
        args.pipeline, device=args.device, weights=args.weights, overrides=args.overrides
    )
    name = args.name or matcher.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / f"{name}_pairs.h5"
    stamp = json.dumps([OmegaConf.to_container(matcher.conf), args.weights, args.downsize])
    if cache.exists():
        import h5py

        with h5py.File(cache, "a") as f:
            if f.attrs.get("conf") != stamp:  # another model under this name: start over
                logger.info("%s was written for another configuration; starting over", cache)
                for k in list(f):
                    del f[k]
            f.attrs["conf"] = stamp
    else:
        import h5py

        with h5py.File(cache, "w") as f:
            f.attrs["conf"] = stamp
    results = evaluate(pairs, matcher_predict(matcher), args.downsize, cache)
    path = write_results(results, Path(args.out), name)
    aps = ", ".join(f"{k} {v:.2f}" for k, v in results.items() if k.startswith("AP"))
    print(f"eth3d {name}: {results['pairs']} pairs, {aps} → {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eth3d", help="ETH3D point/line matching AP (Glue Factory's protocol)")
    p.add_argument("--pipeline", default="aliked+lightglue")
    p.add_argument("--root", default=None, help="ETH3D_undistorted folder (default: data root)")
    p.add_argument("--download", action="store_true", help="fetch the dataset (resumable)")
    p.add_argument("--out", default="outputs/eth3d")
    p.add_argument("--name", default=None, help="results name (default: the pipeline)")
    p.add_argument("--min-covisibility", type=int, default=500)
    p.add_argument("--downsize", type=int, default=8)
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--weights", default=None)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. extractor.name=sift+lsd")
    p.set_defaults(func=cmd_eth3d)
