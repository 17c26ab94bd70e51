"""MegaDepth loader on a tiny scene written by the test in the exact D2-Net layout.

The scene is a textured world plane seen by cameras with known COLMAP intrinsics and poses; a bright
dot marks one 3D point in every image. The loader's outputs (resized image, depth, K in the pixel-
centre convention, T_0to1) must move the dot of view 0 onto the dot of view 1.
"""

import cv2
import h5py
import numpy as np
import pytest
import torch
from helpers import TINY_LIGHTGLUE

from tiepoint.datasets import get_dataset
from tiepoint.errors import DatasetError
from tiepoint.geometry.depth import sample_depth, warp_with_depth

W, H = 160, 120
F = 150.0
Z = 10.0  # the plane z = Z in world coordinates; cameras look along +z
DOT = np.array([0.3, -0.2, Z])


def _camera(k):
    # small sideways translations, images differ by a few tens of pixels
    R = np.eye(3)
    t = np.array([-0.4 * k, 0.1 * k, 0.0])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _render(T, K):
    """Dot at the projection of DOT, drawn in COLMAP's convention (pixel (i,j) covers [j, j+1))."""
    Xc = T[:3, :3] @ DOT + T[:3, 3]
    u = K[0, 0] * Xc[0] / Xc[2] + K[0, 2] - 0.5  # pixel-centre coordinates of the dot
    v = K[1, 1] * Xc[1] / Xc[2] + K[1, 2] - 0.5
    ys, xs = np.mgrid[0:H, 0:W]
    img = 20 + 200 * np.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * 2.5**2))
    return np.repeat(img[..., None], 3, 2).astype(np.uint8), (u, v), Xc[2]


def _make_scene(root, n=6):
    K = np.array(
        [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]
    )  # COLMAP: principal point at the image centre
    img_paths, depth_paths, Ks, poses = [], [], [], []
    for k in range(n):
        T = _camera(k)
        img, _, z = _render(T, K)
        ip = f"Undistorted_SfM/0001/images/{k:03d}.jpg"
        dp = f"phoenix/S6/zl548/MegaDepth_v1/0001/dense0/depths/{k:03d}.h5"  # stored path does not exist:
        (root / ip).parent.mkdir(parents=True, exist_ok=True)  # the loader must use depth_subpath
        cv2.imwrite(str(root / ip), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
        dd = root / "depth_undistorted/0001"
        dd.mkdir(parents=True, exist_ok=True)
        with h5py.File(dd / f"{k:03d}.h5", "w") as f:
            f.create_dataset("depth", data=np.full((H, W), z, np.float32))
        img_paths.append(ip), depth_paths.append(dp), Ks.append(K), poses.append(T)
    # an image not in the reconstruction (None entries, as in real scene_info files)
    img_paths.append(None), depth_paths.append(None), Ks.append(None), poses.append(None)
    m = n + 1
    overlap = np.zeros((m, m))
    for i in range(n):
        for j in range(n):
            overlap[i, j] = max(0.0, 0.9 - 0.15 * abs(i - j))  # 0.75, 0.6, 0.45, 0.3, 0.15
    (root / "scene_info").mkdir()
    obj = lambda xs: np.array(xs + [0], dtype=object)[:-1]
    np.savez(
        root / "scene_info/0001.npz",
        image_paths=obj(img_paths),
        depth_paths=obj(depth_paths),
        intrinsics=obj(Ks),
        poses=obj(poses),
        overlap_matrix=overlap,
    )
    return K


def _dot(image):
    g = image.mean(0).numpy().astype(np.float64) * 255
    w = np.clip(g - 60, 0, None)
    ys, xs = np.mgrid[0 : g.shape[0], 0 : g.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_megadepth_loader_geometry(tmp_path):
    _make_scene(tmp_path)
    ds = get_dataset(
        {
            "name": "megadepth",
            "data_dir": str(tmp_path),
            "resize": 96,
            "square_pad": True,
            "train_num_per_scene": 9,
            "min_overlap": 0.1,
            "max_overlap": 0.7,
        }
    )
    train = ds.get_dataset("train")
    assert len(train) > 0
    for idx in range(len(train)):
        it = train[idx]
        v0, v1 = it["view0"], it["view1"]
        assert v0["image"].shape == (3, 96, 96) and v0["depth"].shape == (96, 96)
        assert v0["image_size"].tolist() == [96, 72]
        assert (v0["depth"][72:] == 0).all() and (
            v0["depth"][:72] > 0
        ).all()  # square padding = unknown depth
        s = 96 / W  # expected K in the pixel-centre convention after resizing
        assert torch.allclose(
            v0["K"],
            torch.tensor(
                [
                    [F * s, 0, (W / 2 - 0.5 + 0.5) * s - 0.5],
                    [0, F * s, (H / 2 - 0.5 + 0.5) * s - 0.5],
                    [0, 0, 1],
                ]
            ).float(),
        )
        d0, d1 = _dot(v0["image"]), _dot(v1["image"])
        p = torch.tensor(d0)[None, None]
        z, ok = sample_depth(p, v0["depth"][None].double())
        p1, vis = warp_with_depth(
            p,
            z,
            ok,
            it["T_0to1"][None].double(),
            v0["K"][None].double(),
            v1["K"][None].double(),
            v1["depth"][None].double(),
        )
        assert vis.all()
        assert np.linalg.norm(p1[0, 0].numpy() - d1) < 0.3, (p1, d1)
        assert 0.1 < it["overlap"] <= 0.7


def test_megadepth_pairs_redrawn_each_epoch(tmp_path):
    _make_scene(tmp_path, n=12)
    conf = {
        "name": "megadepth",
        "data_dir": str(tmp_path),
        "resize": 64,
        "train_num_per_scene": 6,
        "min_overlap": 0.1,
        "max_overlap": 0.7,
        "num_overlap_bins": 3,
    }
    a, b = get_dataset(conf).get_dataset("train"), get_dataset(conf).get_dataset("train")
    assert a.items == b.items  # same epoch, same pairs (any process)
    ov = np.array([x[3] for x in a.items])
    edges = np.linspace(0.1, 0.7, 4)
    assert [int(((ov > lo) & (ov <= hi)).sum()) for lo, hi in zip(edges[:-1], edges[1:])] == [
        2,
        2,
        2,
    ]
    b.set_epoch(1)
    assert a.items != b.items
    assert all(
        x[1] != 12 and x[2] != 12 for x in a.items + b.items
    )  # the unreconstructed image is skipped


def test_megadepth_bad_layout(tmp_path):
    with pytest.raises(DatasetError, match="scene_info"):
        get_dataset({"name": "megadepth", "data_dir": str(tmp_path)})


def test_megadepth_trains_with_depth_ground_truth(tmp_path):
    # end to end on the fixture: posed views with depth → pose/depth GT → a few training steps,
    # directly and from a feature cache (where depth is stored at the keypoints)
    import torch

    from tiepoint.training import build_conf
    from tiepoint.training.trainer import Trainer

    _make_scene(tmp_path / "md", n=8)
    torch.set_num_threads(1)
    for cache in (False, True):
        conf = build_conf(
            {
                "data": {
                    "name": "megadepth",
                    "data_dir": str(tmp_path / "md"),
                    "resize": 96,
                    "train_num_per_scene": 8,
                    "val_scenes": [],
                    "batch_size": 2,
                },
                "data_val": {
                    "name": "megadepth",
                    "data_dir": str(tmp_path / "md"),
                    "resize": 96,
                    "train_scenes": [],
                    "val_scenes": ["0001"],
                    "val_num_per_scene": 3,
                },
                "model": {
                    "extractor": {"name": "sift", "max_num_keypoints": 32},
                    "ground_truth": {"th_positive": 3, "th_negative": 5, "th_epipolar": 5},
                    "matcher": TINY_LIGHTGLUE,
                },
                "train": {
                    "epochs": 1,
                    "max_iterations": 2,
                    "eval_every_iter": 0,
                    "feature_cache": {"enabled": cache},
                },
            }
        )
        t = Trainer(tmp_path / f"exp{cache}", conf, progress=False)
        t.run()
        assert t.step == 2 and "match_recall" in t.last_eval
