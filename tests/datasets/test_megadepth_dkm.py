"""MegaDepth with DKM's recipe (configs/training/dkm_megadepth.yaml): the fixed [h, w] resize with
per-axis intrinsics, the random shift, DKM's scene-weighted sampling, strict depth files, and the
preset training end to end on scenes written by the test.

Each scene is a textured tilted world plane (Z = Z0 + a·X) seen by COLMAP cameras; its depth maps
are exact. The dense ground truth the trainer builds from a loaded pair is compared with the
plane's analytic reprojection computed here in the original images' COLMAP coordinates.
"""

import json

import cv2
import h5py
import numpy as np
import pytest
import torch
from helpers import TINY_DKM

from tiepoint.datasets import get_dataset
from tiepoint.errors import ConfigError, DatasetError
from tiepoint.geometry.dense_gt import dense_gt

W, H = 160, 120  # original images (4:3); DKM's resize below is 2:3
F = 150.0
Z0 = 10.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])  # COLMAP: pixel (i, j) covers [j, j+1)
SIZE = [64, 96]  # h × w, as DKM's resize: [540, 720]


def _t(k):
    return np.array([-0.35 * k, 0.1 * k, 0.2 * k])


def _depth_and_world(t, tilt, u, v):
    """Depth along +z and world point of the ray through COLMAP pixel coordinates (u, v) of the
    camera at translation t (R = I) onto the plane Z_w = Z0 + tilt·X_w."""
    rx, ry = (u - K[0, 2]) / F, (v - K[1, 2]) / F
    z = (Z0 + t[2] - tilt * t[0]) / (1 - tilt * rx)
    return z, np.stack([z * rx - t[0], z * ry - t[1], z - t[2]], -1)


def _texture(Xw):
    x, y = Xw[..., 0], Xw[..., 1]
    rng = np.random.default_rng(7)
    g = np.zeros_like(x)
    for _ in range(12):
        f, th, ph = rng.uniform(1.5, 6), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        g += np.cos(f * (x * np.cos(th) + y * np.sin(th)) + ph)
    return (127 + 100 * g / np.abs(g).max()).astype(np.uint8)


def write_scene(root, name="0001", n=6, tilt=0.3, depth_key="depth", depth_size=(W, H)):
    """A scene in the D2-Net layout: images, h5 depth maps, scene_info/<name>.npz."""
    ys, xs = np.mgrid[0:H, 0:W] + 0.5  # COLMAP coordinates of the pixel centres
    paths, depths, poses = [], [], []
    for k in range(n):
        T = np.eye(4)
        T[:3, 3] = _t(k)
        z, Xw = _depth_and_world(T[:3, 3], tilt, xs, ys)
        ip = f"Undistorted_SfM/{name}/images/{k:03d}.png"
        dp = f"depth_undistorted/{name}/{k:03d}.h5"
        (root / ip).parent.mkdir(parents=True, exist_ok=True)
        (root / dp).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / ip), np.repeat(_texture(Xw)[..., None], 3, 2))
        with h5py.File(root / dp, "w") as f:
            zz = cv2.resize(z, depth_size, interpolation=cv2.INTER_NEAREST)
            f.create_dataset(depth_key, data=zz.astype(np.float32))
        paths.append(ip), depths.append(dp), poses.append(T)
    ov = np.clip(0.9 - 0.15 * np.abs(np.subtract.outer(np.arange(n), np.arange(n))), 0, None)
    (root / "scene_info").mkdir(exist_ok=True)
    obj = lambda xs: np.array([*xs, 0], dtype=object)[:-1]
    np.savez(
        root / f"scene_info/{name}.npz",
        image_paths=obj(paths),
        depth_paths=obj(depths),
        intrinsics=obj([K] * n),
        poses=obj(poses),
        overlap_matrix=ov,
    )
    return root


def dkm_data(root, **conf):
    return {
        "name": "megadepth",
        "data_dir": str(root),
        "resize": SIZE,
        "square_pad": False,
        "min_overlap": 0.01,
        "max_overlap": 1.0,
        "scene_weight_alpha": 0.75,
        "overlap_copies": [0.35],
        "shake_t": 6,
        "train_num_per_scene": 4,
        **conf,
    }


def image_shift(moved: torch.Tensor, still: torch.Tensor, r: int = 6) -> tuple[int, int]:
    """The integer (tx, ty) that moves the content of `still` onto `moved` (exhaustive search)."""
    a, b = moved.mean(0).numpy(), still.mean(0).numpy()
    h, w = a.shape
    best = None
    for ty in range(-r, r + 1):
        for tx in range(-r, r + 1):
            d = np.abs(a[r + ty : h - r + ty, r + tx : w - r + tx] - b[r : h - r, r : w - r]).mean()
            best = min(best or (d, tx, ty), (d, tx, ty))
    return best[1], best[2]


def analytic_warp(item, tilt, hw, shift):
    """Where each cell centre of an hw grid over view 0 lands in view 1, from the plane itself:
    normalised coordinates (h, w, 2) and validity (h, w), undoing the resize and the content
    `shift` with the original COLMAP intrinsics (not the loader's K, nor its depth maps)."""
    k0, k1 = (int(item[f"view{v}"]["name"][:3]) for v in (0, 1))
    h, w = hw
    sx, sy = SIZE[1] / W, SIZE[0] / H
    tx, ty = shift
    gy, gx = np.mgrid[0:h, 0:w] + 0.5
    xr, yr = gx / w * SIZE[1] - 0.5 - tx, gy / h * SIZE[0] - 0.5 - ty  # resized, unshifted
    u, v = (xr + 0.5) / sx, (yr + 0.5) / sy  # original COLMAP coordinates
    inside0 = (u > 0) & (u < W) & (v > 0) & (v < H)
    _, Xw = _depth_and_world(_t(k0), tilt, u, v)
    Xc = Xw + _t(k1)
    u1, v1 = F * Xc[..., 0] / Xc[..., 2] + K[0, 2], F * Xc[..., 1] / Xc[..., 2] + K[1, 2]
    inside1 = (u1 > 0) & (u1 < W) & (v1 > 0) & (v1 < H)
    x1, y1 = u1 * sx - 0.5 + tx, v1 * sy - 0.5 + ty  # resized and shifted, pixel centres
    norm = np.stack([(x1 + 0.5) / SIZE[1] * 2 - 1, (y1 + 0.5) / SIZE[0] * 2 - 1], -1)
    return norm, inside0 & inside1 & (np.abs(norm) < 1).all(-1)


def test_fixed_resize_and_shift_give_the_plane_reprojection(tmp_path):
    write_scene(tmp_path, tilt=0.3)
    train = get_dataset(dkm_data(tmp_path)).get_dataset("train")
    still = get_dataset(dkm_data(tmp_path, shake_t=0)).get_dataset("train")
    assert train.items == still.items
    shifts = set()
    for idx in range(len(train)):
        it = train[idx]
        v0 = it["view0"]
        shift = image_shift(v0["image"], still[idx]["view0"]["image"])
        assert shift == image_shift(it["view1"]["image"], still[idx]["view1"]["image"])
        shifts.add(shift)
        assert v0["image"].shape == (3, *SIZE) and v0["depth"].shape == tuple(SIZE)
        sx, sy = SIZE[1] / W, SIZE[0] / H
        assert v0["K"][0, 0] == pytest.approx(F * sx) and v0["K"][1, 1] == pytest.approx(F * sy)
        batch = {k: (v[None] if torch.is_tensor(v) else v) for k, v in it.items()}
        batch["view0"] = {k: v[None] for k, v in v0.items() if torch.is_tensor(v)}
        batch["view1"] = {k: v[None] for k, v in it["view1"].items() if torch.is_tensor(v)}
        for hw in ((8, 12), (32, 48), tuple(SIZE)):
            warp, prob = dense_gt(batch, hw)
            want, valid = analytic_warp(it, 0.3, hw, shift)
            got = prob[0].numpy() > 0
            # the loader's depth is the nearest original pixel's: cells differ at most at borders
            assert (got & ~valid).sum() <= 0.03 * got.size, hw
            assert (valid & ~got).sum() <= 0.06 * valid.sum() + 2, hw
            both = got & valid
            assert both.sum() > 0.2 * got.size
            err_px = np.abs(warp[0].numpy()[both] - want[both]) * np.array(SIZE[::-1]) / 2
            # (nearest-neighbour depth on the tilted plane: ~0.005 px median, 0.02 px max)
            assert np.median(err_px) < 0.02 and err_px.max() < 0.1, (hw, err_px.max())
    assert len(shifts) > 1 and max(max(abs(a), abs(b)) for a, b in shifts) <= 6


def test_dkm_sampling_weights_scenes_and_copies(tmp_path):
    write_scene(tmp_path, "0001", n=6)  # 15 pairs, 12 above overlap 0.35
    write_scene(tmp_path, "0002", n=3)  # 3 pairs, all above 0.35
    train = get_dataset(dkm_data(tmp_path)).get_dataset("train")
    items, w = train.candidates()
    counts = {}
    for (scene, *_), wi in zip(items, w):
        counts.setdefault(scene, []).append(wi)
    assert {s: len(v) for s, v in counts.items()} == {"0001": 27, "0002": 6}
    assert sorted(set(np.round(counts["0001"], 9))) == sorted(np.round([15**-0.75, 12**-0.75], 9))
    assert np.allclose(counts["0002"], 3**-0.75)
    assert len(train) == 8  # 4 per scene, 2 scenes
    first = list(train.items)
    assert all(x in items for x in first)
    train.set_epoch(1)
    assert train.items != first
    # over many epochs a scene's share follows its weight (n^0.25 per copy), not its size
    share = np.mean(
        [np.mean([x[0] == "0002" for x in (train.set_epoch(e) or train.items)]) for e in range(200)]
    )
    total = 15**0.25 + 12**0.25 + 2 * 3**0.25
    assert 0.5 * (2 * 3**0.25 / total) < share < 1.5 * (2 * 3**0.25 / total)


def test_bad_depth_files_and_configs_are_one_line_errors(tmp_path):
    write_scene(tmp_path / "a", depth_key="z")
    ds = get_dataset(dkm_data(tmp_path / "a"))
    with pytest.raises(DatasetError, match=r"\d{3}.h5: no dataset 'depth' in this depth file.*'z'"):
        ds.get_dataset("train")[0]
    write_scene(tmp_path / "b", depth_size=(80, 60))
    ds = get_dataset(dkm_data(tmp_path / "b"))
    with pytest.raises(DatasetError, match=r"depth map is 80×60, but its image .* is 160×120"):
        ds.get_dataset("train")[0]
    with pytest.raises(ConfigError, match=r"resize \[64, 96\].*square_pad: false"):
        get_dataset(dkm_data(tmp_path / "b", square_pad=True))
    with pytest.raises(ConfigError, match="overlap_copies needs data.scene_weight_alpha"):
        get_dataset(dkm_data(tmp_path / "b", scene_weight_alpha=None))


def test_dkm_megadepth_preset_trains_end_to_end(tmp_path):
    """The packaged preset, with a tiny DKM at 64×96 and the test's scenes: a few steps."""
    from tiepoint.training import build_conf
    from tiepoint.training.trainer import Trainer

    write_scene(tmp_path / "md", "0001", n=6, tilt=0.3)
    write_scene(tmp_path / "md", "0002", n=4, tilt=-0.2)
    overrides = {
        "data": {
            "data_dir": str(tmp_path / "md"),
            "train_scenes": ["0001", "0002"],
            "val_scenes": ["0002"],
            "train_num_per_scene": 6,
            "val_num_per_scene": 2,
            "resize": SIZE,
            "shake_t": 4,
            "batch_size": 2,
            "num_workers": 0,
        },
        "model": {"dense": TINY_DKM},
        "train": {"max_iterations": 4, "eval_every_iter": 4, "log_every_iter": 1},
    }
    conf = build_conf("dkm_megadepth", overrides)
    assert conf.data.scene_weight_alpha == 0.75 and list(conf.data.overlap_copies) == [0.35]
    assert conf.model.dense.encoder == "resnet18" and list(conf.model.dense.resize) == SIZE
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = Trainer(tmp_path / "exp", conf, progress=False)
        t.run()
    finally:
        torch.set_num_threads(n)
    losses = dict(t.loss_history)
    assert sorted(losses) == list(range(1, 5))
    assert all(np.isfinite(v) and v > 0 for v in losses.values()), losses
    hist = json.loads((tmp_path / "exp" / "val_history.json").read_text())
    assert [h["step"] for h in hist] == [0, 4]
    for h in hist:
        assert np.isfinite(h["loss/total"]) and np.isfinite(h["epe"]) and 0 <= h["pck@5"] <= 1
