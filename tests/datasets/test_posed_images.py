"""The generic posed-pairs dataset on the shared real manifest (../shared/data/pose/pairs.txt)."""

import h5py
import numpy as np
import pytest
import torch

from tiepoint.datasets import get_dataset
from tiepoint.errors import DatasetError


def _manifest_rows(path):
    return [
        ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]


def test_posed_pairs_from_the_shared_manifest(data_dir):
    manifest = data_dir / "pose" / "pairs.txt"
    rows = _manifest_rows(manifest)
    ds = get_dataset(
        {
            "name": "posed_images",
            "pairs": str(manifest),
            "val_fraction": 0.0,
            "resize": 320,
            "square_pad": True,
            "shuffle_seed": 0,
        }
    )
    train = ds.get_dataset("train")
    assert len(train) == len(rows)
    by_name = {f"{r[0]}|{r[1]}": r for r in rows}
    for idx in (0, len(train) - 1):
        it = train[idx]
        r = by_name[it["name"]]
        v = np.array(r[2:], np.float64)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = v[8:17].reshape(3, 3), v[17:20]
        assert np.allclose(it["T_0to1"].numpy(), T, atol=1e-5)
        assert np.allclose(it["T_1to0"].numpy(), np.linalg.inv(T), atol=1e-4)
        v0 = it["view0"]
        assert v0["image"].shape == (3, 320, 320)
        w, h = v0["image_size"].tolist()
        assert max(w, h) == 320
        sx, sy = v0["scales"].tolist()
        K = v0["K"].numpy()
        # pixel-centre rule: x' = (x + 0.5)·s − 0.5 applied to the principal point, f scaled by s
        assert K[0, 0] == pytest.approx(v[0] * sx, rel=1e-5) and K[1, 1] == pytest.approx(
            v[1] * sy, rel=1e-5
        )
        assert K[0, 2] == pytest.approx((v[2] + 0.5) * sx - 0.5, abs=1e-3)
        assert K[1, 2] == pytest.approx((v[3] + 0.5) * sy - 0.5, abs=1e-3)
        assert "depth" not in v0  # this data has no depth


def test_posed_pairs_depth_and_split(tmp_path):
    from PIL import Image

    for name in ("a", "b", "c"):
        Image.fromarray(
            (np.random.default_rng(0).uniform(0, 255, (40, 60, 3))).astype(np.uint8)
        ).save(tmp_path / f"{name}.png")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("depth", data=np.full((40, 60), 3.0, np.float32))
    np.save(tmp_path / "b.npy", np.full((40, 60), 4.0, np.float32))
    pose = "1 0 0 0 1 0 0 0 1 0.1 0 0"
    (tmp_path / "pairs.txt").write_text(
        f"a.png b.png 50 50 29.5 19.5 50 50 29.5 19.5 {pose}\n"
        f"b.png c.png 50 50 29.5 19.5 50 50 29.5 19.5 {pose}\n"
    )
    ds = get_dataset(
        {
            "name": "posed_images",
            "pairs": str(tmp_path / "pairs.txt"),
            "depth_dir": str(tmp_path),
            "val_fraction": 0.5,
            "resize": None,
            "square_pad": False,
        }
    )
    train, val = ds.get_dataset("train"), ds.get_dataset("val")
    assert len(train) == len(val) == 1
    items = {it["name"]: it for it in (train[0], val[0])}
    ab = items["a.png|b.png"]
    assert float(ab["view0"]["depth"].mean()) == 3.0 and float(ab["view1"]["depth"].mean()) == 4.0
    assert "depth" not in items["b.png|c.png"]["view0"]  # c has no depth: neither view gets one
    (tmp_path / "bad.txt").write_text("a.png b.png 1 2 3\n")
    with pytest.raises(DatasetError, match="expected 22 fields"):
        get_dataset({"name": "posed_images", "pairs": str(tmp_path / "bad.txt")})
    (tmp_path / "missing.txt").write_text(f"a.png zz.png 50 50 29.5 19.5 50 50 29.5 19.5 {pose}\n")
    with pytest.raises(DatasetError, match="missing"):
        get_dataset({"name": "posed_images", "pairs": str(tmp_path / "missing.txt")})


def test_pipeline_ground_truth_on_posed_pair_without_depth():
    # No depth: keypoints can only be ruled out by the epipolar check. A pure x-translation makes
    # epipolar lines horizontal: a keypoint whose row has no keypoint in the other view is unmatched.
    from tiepoint.models.two_view_pipeline import TwoViewPipeline

    model = TwoViewPipeline(
        {
            "matcher": {"name": "nearest_neighbor"},
            "num_keypoints": 3,
            "ground_truth": {"th_epipolar": 2.0},
        }
    )
    K = torch.tensor([[[100.0, 0, 50], [0, 100, 40], [0, 0, 1]]])
    T = torch.eye(4)[None]
    T[0, 0, 3] = -1.0
    kp0 = torch.tensor([[[30.0, 20], [50, 40], [10, 70]]])
    kp1 = torch.tensor([[[20.0, 20.5], [44, 60], [70, 5]]])
    data = {"T_0to1": T, "K0": K, "K1": K}
    gt = model.ground_truth(data, {"keypoints": kp0}, {"keypoints": kp1})
    assert gt["gt_matches0"][0].tolist() == [-2, -1, -1]
    assert gt["gt_matches1"][0].tolist() == [-2, -1, -1]
