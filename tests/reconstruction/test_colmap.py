"""COLMAP import, verification and mapping on a synthetic scene with known cameras."""

import h5py
import numpy as np
import pycolmap
import pytest
from PIL import Image

from tiepoint.errors import ConfigError
from tiepoint.reconstruction import colmap
from tiepoint.reconstruction import features_io as fio
from tiepoint.reconstruction import pairs as P

W, H, F = 640, 480, 500.0


def umeyama(src, dst):
    """Similarity (s, R, t) minimising |s R src + t - dst|²."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (a**2).sum() * len(src)
    return s, R, mu_d - s * R @ mu_s


def synthetic_scene(tmp_path, n_views=6, n_points=400, seed=0):
    """Cameras on an arc looking at a point cloud; keypoints with pixel centres at integers."""
    rng = np.random.default_rng(seed)
    X = rng.uniform([-2, -1.5, 4], [2, 1.5, 7], (n_points, 3))
    names, centres, kpts = [], [], {}
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for v in range(n_views):
        ang = np.deg2rad(-15 + 6 * v)
        R = np.array([[np.cos(ang), 0, -np.sin(ang)], [0, 1, 0], [np.sin(ang), 0, np.cos(ang)]])
        c = np.array([5.5 * np.sin(ang), 0.1 * v, 5.5 - 5.5 * np.cos(ang)])
        Xc = (X - c) @ R.T
        uv = Xc[:, :2] / Xc[:, 2:] * F + [W / 2 - 0.5, H / 2 - 0.5]  # centre convention
        uv += rng.normal(0, 0.3, uv.shape)
        name = f"v{v}.png"
        Image.new("L", (W, H)).save(img_dir / name)
        names.append(name)
        centres.append(c)
        kpts[name] = uv.astype(np.float32)
    with h5py.File(tmp_path / "features.h5", "w") as f:
        for n in names:
            g = f.create_group(n)
            g["keypoints"] = kpts[n]
            g["descriptors"] = np.zeros((4, n_points), np.float32)
            g["image_size"] = np.array([W, H])
    pairs = P.exhaustive(names)
    with h5py.File(tmp_path / "matches.h5", "w") as f:
        for a, b in pairs:
            m0 = np.arange(n_points, dtype=np.int32)
            out = rng.random(n_points) < 0.1  # 10 % wrong matches
            m0[out] = rng.permutation(n_points)[: out.sum()]
            g = f.create_group(fio.names_to_pair(a, b))
            g["matches0"] = m0
            g["matching_scores0"] = np.ones(n_points, np.float32)
    return img_dir, names, pairs, np.array(centres), kpts


@pytest.mark.parametrize("mapper", ["incremental", "global"])
def test_synthetic_scene_maps_to_the_true_cameras(tmp_path, mapper):
    img_dir, names, pairs, centres, kpts = synthetic_scene(tmp_path)
    opts = colmap.MapperOptions(
        mapper=mapper, camera_model="SIMPLE_PINHOLE", camera_params=f"{F},{W / 2},{H / 2}"
    )
    db = tmp_path / "database.db"
    ids = colmap.build_database(
        db, img_dir, names, tmp_path / "features.h5", tmp_path / "matches.h5", pairs, opts
    )
    with pycolmap.Database.open(db) as d:
        # COLMAP's origin is the pixel corner: stored keypoints are ours + 0.5
        np.testing.assert_allclose(d.read_keypoints(ids["v2.png"])[:, :2], kpts["v2.png"] + 0.5)
        assert d.read_matches(ids["v0.png"], ids["v1.png"]).shape == (400, 2)
    with colmap.colmap_logging(tmp_path / "colmap.log", verbose=False):
        verified = colmap.verify(db, pairs, opts)
        assert len(verified) == len(pairs)
        # wrong matches are removed: about 90 % of 400 remain
        assert all(300 < v <= 400 for v in verified.values())
        models, used = colmap.run_mapping(db, img_dir, tmp_path / "models", opts, len(names))
    assert used == mapper  # no fallback on a scene every mapper can map
    summary, best = colmap.summarize(models, names, pairs, verified, opts, used)
    assert summary.registered == len(names) and not summary.unregistered
    assert summary.mean_reprojection_error < 1.0
    est = {best.image(i).name: best.image(i).projection_center() for i in best.reg_image_ids()}
    src = np.array([est[n] for n in names])
    s, R, t = umeyama(src, centres)
    err = np.linalg.norm((s * (R @ src.T)).T + t - centres, axis=1)
    assert err.max() < 0.01 * np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()


def test_incremental_mapping_of_too_few_images_falls_back_to_global(tmp_path, caplog):
    """An initial angle above every pair's (≤ 30° here; COLMAP halves it twice: 42.5°) leaves
    incremental mapping without a model; the global mapper then maps all views."""
    img_dir, names, pairs, centres, _ = synthetic_scene(tmp_path)
    opts = colmap.MapperOptions(
        camera_model="SIMPLE_PINHOLE",
        camera_params=f"{F},{W / 2},{H / 2}",
        extra={"mapper.init_min_tri_angle": 170.0},  # also stops the 4° retry: the user's value
    )
    db = tmp_path / "database.db"
    colmap.build_database(
        db, img_dir, names, tmp_path / "features.h5", tmp_path / "matches.h5", pairs, opts
    )
    with colmap.colmap_logging(tmp_path / "colmap.log", verbose=False):
        verified = colmap.verify(db, pairs, opts)
        models, used = colmap.run_mapping(db, img_dir, tmp_path / "models", opts, len(names))
    assert used == "global"
    assert "incremental mapping registered only 0/6 images; trying the global mapper" in caplog.text
    summary, best = colmap.summarize(models, names, pairs, verified, opts, used)
    assert summary.registered == len(names) and summary.mapper == "global"
    assert "(global)" in summary.report()
    est = np.array([best.image(i).projection_center() for i in sorted(best.reg_image_ids())])
    order = [names.index(best.image(i).name) for i in sorted(best.reg_image_ids())]
    s, R, t = umeyama(est, centres[order])
    err = np.linalg.norm((s * (R @ est.T)).T + t - centres[order], axis=1)
    assert err.max() < 0.01 * np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()


def test_unknown_mapper_option_names_the_closest_key():
    with pytest.raises(ConfigError, match="init_min_num_inliers"):
        colmap.apply_options(
            pycolmap.IncrementalPipelineOptions(),
            {"mapper.init_min_num_inlier": 5},
            "IncrementalPipelineOptions",
        )
    # a key hloc's validation refuses is accepted by the class that receives it
    o = colmap.apply_options(
        pycolmap.IncrementalPipelineOptions(),
        colmap.parse_option_args(
            ["ba_refine_focal_length=False", "mapper.init_min_num_inliers=50"]
        ),
        "x",
    )
    assert o.ba_refine_focal_length is False and o.mapper.init_min_num_inliers == 50


def test_bad_camera_options_are_named():
    with pytest.raises(ConfigError, match="PINHOLE takes 4 values"):
        colmap.MapperOptions(camera_model="PINHOLE", camera_params="700,600,180").check()
    with pytest.raises(ConfigError, match="--camera-model 'PINHOL'"):
        colmap.MapperOptions(camera_model="PINHOL").check()
    with pytest.raises(ConfigError, match="--mapper"):
        colmap.MapperOptions(mapper="hierarchical").check()
    colmap.MapperOptions(camera_model="SIMPLE_RADIAL", camera_params="700,600,180,0").check()


def test_write_model_replaces_outputs_atomically(tmp_path):
    (tmp_path / "sparse").mkdir()
    (tmp_path / "sparse" / "stale.txt").write_text("old")
    (tmp_path / "points.ply").write_text("old")
    colmap.write_model(pycolmap.Reconstruction(), tmp_path / "sparse", tmp_path / "points.ply")
    assert (tmp_path / "points.ply").read_bytes().startswith(b"ply\n")
    assert not (tmp_path / "sparse" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.ply", "sparse"]  # no temp left
