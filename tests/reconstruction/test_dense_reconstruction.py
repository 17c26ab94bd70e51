"""Reconstruction with a dense pipeline, end to end: a real picture seen as a plane by several
calibrated cameras (synthetic views warped by the plane's homographies), matched by an oracle
dense model that gives each pair's exact warp, quantised into keypoints, mapped by COLMAP."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from tiepoint.errors import ConfigError
from tiepoint.reconstruction.colmap import MapperOptions
from tiepoint.reconstruction.pipeline import Options, Reconstruction, reconstruct

from .test_colmap import umeyama

W, H, F = 640, 480, 500.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])


def rot(ax, ay, az):
    ax, ay, az = np.deg2rad([ax, ay, az])
    Rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    Ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    Rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


# cameras X_i = R_i X + t_i looking at the plane Z = 1 of camera 0
POSES = [
    (rot(0, 0, 0), np.zeros(3)),
    (rot(2, -6, 1), np.array([0.15, 0.0, 0.02])),
    (rot(-3, 5, -1), np.array([-0.12, 0.05, 0.0])),
    (rot(4, 2, 2), np.array([0.02, -0.14, 0.05])),
]


def plane_homography(R, t):
    """Image 0 pixels → image i pixels for points of the plane n·X = 1, n = (0, 0, 1)."""
    return K @ (R + np.outer(t, [0, 0, 1.0])) @ np.linalg.inv(K)


@pytest.fixture(scope="module")
def planar_scene(data_dir, tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("planar")
    src = Image.open(data_dir / "homography" / "oxford_boat" / "img1.png").convert("RGB")
    ref = np.asarray(src.resize((W, H), Image.BILINEAR))
    names, Hs = [], []
    for k, (R, t) in enumerate(POSES):
        Hk = plane_homography(R, t)
        img = cv2.warpPerspective(ref, Hk, (W, H), flags=cv2.INTER_LINEAR)
        names.append(f"view{k}.png")
        Image.fromarray(img).save(root / names[-1])
        Hs.append((Hk / Hk[2, 2]).ravel().tolist())
    pipe = {
        "dense": {
            "name": "dense_scene_oracle:PlanarSceneOracle",
            "images": [str(root / n) for n in names],
            "H": Hs,
            "size0": [W, H],
            "size1": [W, H],
            "num_matches": 1500,
        }
    }
    return root, pipe


def _options(pipe, **kw):
    mapper = MapperOptions(camera_model="PINHOLE", camera_params=f"{F},{F},{W / 2},{H / 2}")
    return Options(pipeline=pipe, device="cpu", resize=0, mapper=mapper, **kw)


def test_dense_reconstruction_registers_every_view(planar_scene, tmp_path):
    import pycolmap

    root, pipe = planar_scene
    summary, stats = reconstruct(root, tmp_path / "out", _options(pipe))
    assert summary.registered == len(POSES), summary.report()
    assert summary.mean_track_length > 2.2 and summary.mean_reprojection_error < 0.5
    # features.h5: quantised keypoints + scores, no descriptors; matches one-to-one in them
    with h5py.File(tmp_path / "out" / "features.h5") as f:
        g = f["view0.png"]
        assert set(g) == {"keypoints", "scores", "image_size"} and len(g["keypoints"]) > 1000
    # camera centres against the truth, up to a similarity
    rec = pycolmap.Reconstruction(summary.model_path)
    est = {rec.image(i).name: rec.image(i).projection_center() for i in rec.reg_image_ids()}
    names = sorted(est)
    gt = np.array([-POSES[int(n[4])][0].T @ POSES[int(n[4])][1] for n in names])
    est = np.array([est[n] for n in names])
    s, R, t = umeyama(est, gt)
    err = np.linalg.norm((s * (R @ est.T)).T + t - gt, axis=1)
    assert err.max() < 0.01, err  # baselines are ~0.15
    # a rerun finds every pair matched
    summary2, stats2 = reconstruct(root, tmp_path / "out", _options(pipe))
    assert stats2["match"].computed == 0 and summary2.registered == len(POSES)


def test_dense_pipelines_refuse_retrieval_and_a_changed_cell(planar_scene, tmp_path):
    root, pipe = planar_scene
    with (
        Reconstruction(root, tmp_path, _options(pipe, pairs="retrieval:2")) as r,
        pytest.raises(ConfigError, match="retrieval pairs need local features"),
    ):
        r.make_pairs()
    with Reconstruction(root, tmp_path, _options(pipe, pairs="sequential:1")) as r:
        r.match(r.make_pairs())
    with pytest.raises(ConfigError, match="another configuration"):
        Reconstruction(root, tmp_path, _options(pipe, dense_cell=4.0))


def test_dense_cell_flag_reaches_the_options(tmp_path, capsys):
    import argparse

    from tiepoint.cli import main as cli_main
    from tiepoint.reconstruction.cli import _common, _options

    parser = argparse.ArgumentParser()
    _common(parser)
    args = parser.parse_args([str(tmp_path), str(tmp_path / "out"), "--dense-cell", "3.5"])
    assert _options(args).dense_cell == 3.5
    assert _options(parser.parse_args([str(tmp_path), str(tmp_path / "o")])).dense_cell == 2.0
    code = cli_main(["reconstruct", str(tmp_path), str(tmp_path / "out"), "--dense-cell", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--dense-cell 0.0: must be > 0" in err and "\n" not in err
