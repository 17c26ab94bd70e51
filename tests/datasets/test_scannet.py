"""ScanNet preparation on a synthetic scene in the raw ScanNet layout: a textured plane seen by
cameras translated along x, exact depth; the kept pairs must be those whose covisibility,
computed analytically here, lies in (0.4, 0.8)."""

import cv2
import h5py
import numpy as np
import pytest
import torch

from tiepoint.datasets import get_dataset
from tiepoint.datasets.scannet import prepare_scannet
from tiepoint.errors import DatasetError

W, H, F, Z = 160, 120, 100.0, 2.0  # colour size, focal (px), plane depth (m)
TX = {0: 0.0, 15: 0.3, 30: 1.1, 60: 1.75, 75: 2.5}  # camera x (m) of the frames kept
K = np.array([[F, 0, W / 2, 0], [0, F, H / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def texture(x, y):
    """A plane texture at world coordinates (m)."""
    return 127 + 60 * np.sin(7 * x) * np.cos(5 * y) + 60 * np.sin(23 * x + 11 * y)


def write_scene(root):
    for d in ("color", "depth", "pose", "intrinsic"):
        (root / d).mkdir(parents=True)
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", K)
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", K)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    for i in range(0, 80, 5):  # every 5th frame exported; the preparation keeps every 15th
        tx = TX.get(i, 0.05 * i)
        img = texture((u - W / 2) * Z / F + tx, (v - H / 2) * Z / F)
        cv2.imwrite(
            str(root / "color" / f"{i}.jpg"), np.repeat(img[..., None], 3, -1).astype(np.uint8)
        )
        depth = np.full((H // 2, W // 2), Z * 1000, np.uint16)  # half resolution, as ScanNet's
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth)
        P = np.eye(4)
        P[0, 3] = tx
        if i == 45:  # lost tracking: ScanNet writes -inf poses; the frame is dropped
            P[:] = -np.inf
        np.savetxt(root / "pose" / f"{i}.txt", P)


def analytic_covis(a, b):
    """Grid points of frame a (32×32 over the image) that land inside frame b; the grid's first
    row and column have no depth (the reference zeroes them)."""
    g = np.linspace(0, 1, 32)
    xs, ys = g * (W - 1), g * (H - 1)
    shift = F * (TX[b] - TX[a]) / Z
    cols = ((xs - shift > 0) & (xs - shift < W) & (xs > 0.5)).sum()
    rows = (ys > 0.5).sum()
    return cols * rows / 1024


def test_prepare_scannet_keeps_the_covisible_pairs(tmp_path):
    raw = tmp_path / "raw"
    write_scene(raw / "scene0000_00")
    done = prepare_scannet(raw, tmp_path / "h5", progress=False)
    ids = sorted(TX)
    want = {
        (a, b) for k, a in enumerate(ids) for b in ids[k + 1 :] if 0.4 < analytic_covis(a, b) < 0.8
    }
    assert len(want) >= 3 and len(want) < 10  # the scene has both kinds
    path = tmp_path / "h5" / "scene0000_00.h5"
    with h5py.File(path, "r") as f:
        got = {tuple(p) for p in f["pairs"][()].tolist()}
        assert got == want
        for (a, b), c in zip(f["pairs"][()], f["covis"][()]):
            assert c == pytest.approx(analytic_covis(a, b), abs=1.5 / 32)
        # short side 512, square crop, K scaled by 512 / 120
        img = f[f"images/{a}"][()]
        assert img.shape == (512, 512, 3)
        np.testing.assert_allclose(f["K"][()][0, 0], F * 512 / H, rtol=1e-6)
        np.testing.assert_allclose(f[f"depth/{a}"][()], Z, rtol=1e-3)
        a, b = f["pairs"][()][0]
        T = f["T_0to1"][()][0]  # camera 0 → camera 1 for a camera moved by +Δx: x shifts by −Δx
        np.testing.assert_allclose(T[0, 3], TX[a] - TX[b], atol=1e-6)
    assert done == {"scene0000_00": len(want)}
    # resumable: a prepared scene is not redone
    mtime = path.stat().st_mtime_ns
    assert prepare_scannet(raw, tmp_path / "h5", progress=False) == {}
    assert path.stat().st_mtime_ns == mtime
    # the training dataset reads it: depth reprojects view0's pixels onto view1's texture
    ds = get_dataset({"name": "scannet", "data_dir": str(tmp_path / "h5")}).get_dataset("train")
    item = ds[0]
    assert item["view0"]["image"].shape == (3, 512, 512)
    assert torch.allclose(item["T_0to1"] @ item["T_1to0"], torch.eye(4), atol=1e-5)
    # and the reasoning model trains on it: depth + pose give 3 px ground-truth pairs
    from tiepoint.datasets.base import collate
    from tiepoint.models.two_view_pipeline import TwoViewPipeline

    matcher = {"name": "reasoning", "features": "xfeat", "pretrained": False, "layers": 1}
    matcher |= {"semantic_backbone": "vit_tiny14", "dino_weights": None, "long_side": 112}
    model = TwoViewPipeline(
        {"extractor": {"name": "xfeat", "max_num_keypoints": 128}, "matcher": matcher}
    )
    batch = collate([item])
    pred = model(batch)
    losses, metrics = model.loss(pred, batch)
    assert losses["num_gt"][0] >= 8 and torch.isfinite(losses["total"]).all()
    assert "match_precision" in metrics


def test_bad_layout_is_a_one_line_error(tmp_path):
    (tmp_path / "scene0001_00" / "color").mkdir(parents=True)
    with pytest.raises(DatasetError, match="pose folder"):
        prepare_scannet(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(DatasetError, match="no scene"):
        prepare_scannet(tmp_path / "scene0001_00", tmp_path / "out", progress=False)
