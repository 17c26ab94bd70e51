"""End to end on real images: KITTI against GT poses, shards against a local run, bad input."""

import shutil

import h5py
import numpy as np
import pytest

from tiepoint.cli import main as cli_main
from tiepoint.errors import DatasetError
from tiepoint.reconstruction import features_io as fio
from tiepoint.reconstruction import pairs as P
from tiepoint.reconstruction.colmap import MapperOptions
from tiepoint.reconstruction.pipeline import Reconstruction, reconstruct

from .conftest import copy_frames, kitti_frames, kitti_gt_centres, sift_options
from .test_colmap import umeyama


def h5_contents(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
        )
    return out


def assert_same_h5(a, b):
    ca, cb = h5_contents(a), h5_contents(b)
    assert sorted(ca) == sorted(cb)
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)


def trajectory_error(model_dir, kitti_dir, frame_of=lambda name: int(name[:6])):
    """RMS camera-centre error after a similarity alignment, relative to the trajectory length."""
    import pycolmap

    rec = pycolmap.Reconstruction(model_dir)
    gt = kitti_gt_centres(kitti_dir)
    items = sorted(
        (frame_of(rec.image(i).name), rec.image(i).projection_center()) for i in rec.reg_image_ids()
    )
    idx = [i for i, _ in items]
    est = np.array([c for _, c in items])
    ref = gt[idx]
    s, R, t = umeyama(est, ref)
    err = np.linalg.norm((s * (R @ est.T)).T + t - ref, axis=1)
    length = np.linalg.norm(np.diff(ref, axis=0), axis=1).sum()
    return np.sqrt((err**2).mean()) / length, len(idx)


def test_calibration_constant_matches_calib_txt(kitti_dir):
    from .conftest import KITTI_PARAMS

    P0 = np.array(kitti_dir.joinpath("calib.txt").read_text().split()[:12], float).reshape(3, 4)
    assert np.allclose(
        [P0[0, 0], P0[1, 1], P0[0, 2], P0[1, 2]], [float(x) for x in KITTI_PARAMS.split(",")]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "pipeline,pairs", [("sift+nn", "exhaustive"), ("aliked+lightglue", "sequential:3")]
)
def test_kitti_all_frames_register_and_match_gt(
    kitti_dir, tmp_path, pipeline, pairs, official_weights
):
    """All 11 frames register with either mapper, within 1 % of the trajectory length of the GT."""
    if pipeline == "aliked+lightglue":
        pytest.importorskip("tiepoint.models.extractors.aliked")
        official_weights("aliked-n16", "aliked_lightglue")
    for k, mapper in enumerate(["incremental", "global"]):
        opts = sift_options(
            pipeline=pipeline,
            resize=None,
            overrides=[],
            pairs=pairs,
            mapper=MapperOptions(
                mapper=mapper,
                camera_model="PINHOLE",
                camera_params="707.0912,707.0912,601.8873,183.1104",
            ),
        )
        summary, stats = reconstruct(kitti_dir, tmp_path / "out", opts)
        assert summary.registered == 11, summary.report()
        assert set(summary.skipped_files) == {"calib.txt", "poses.txt"}
        rel, n = trajectory_error(tmp_path / "out" / "sparse", kitti_dir)
        assert n == 11 and rel < 0.01, f"{mapper}: trajectory error {rel:.2%} of its length"
        assert (tmp_path / "out" / "points.ply").stat().st_size > 1000
        if k:  # the second run resumed: nothing was extracted or matched again
            assert stats["extract"].computed == 0 and stats["match"].computed == 0


def test_shards_then_merge_equal_a_local_run(kitti_dir, tmp_path):
    names = kitti_frames(kitti_dir, step=2, count=5)
    images = copy_frames(kitti_dir, tmp_path / "images", names)
    opts = {"pairs": "sequential:2"}
    with Reconstruction(images, tmp_path / "local", sift_options(**opts)) as r:
        r.extract()
        r.match(r.make_pairs())
    for i in range(2):  # two batch jobs, in any order
        with Reconstruction(images, tmp_path / "sharded", sift_options(shard=(i, 2), **opts)) as r:
            r.extract()
            st = r.match(r.make_pairs())
            assert st.computed == len(r.make_pairs()) // 2 + (i == 1) * (len(r.make_pairs()) % 2)
            assert not (tmp_path / "sharded" / "matches.h5").exists()  # shards never merge
    with Reconstruction(images, tmp_path / "sharded", sift_options(**opts)) as r:
        assert r.extract().computed == 0
        assert r.match(r.make_pairs()).computed == 0
    assert_same_h5(tmp_path / "local" / "features.h5", tmp_path / "sharded" / "features.h5")
    assert_same_h5(tmp_path / "local" / "matches.h5", tmp_path / "sharded" / "matches.h5")
    assert not (tmp_path / "sharded" / "parts").exists()


def test_empty_folder_and_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="found 0 usable image"):
        reconstruct(tmp_path / "empty", tmp_path / "out", sift_options())
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    (tmp_path / "junk" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"broken.jpg \(not an image\).*notes.txt"):
        reconstruct(tmp_path / "junk", tmp_path / "out", sift_options())
    # the CLI prints it as one line with exit code 2
    assert cli_main(["reconstruct", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2


def test_non_images_are_skipped_and_subfolder_duplicates_kept_apart(kitti_dir, data_dir, tmp_path):
    frames = kitti_frames(kitti_dir, count=6)
    images = tmp_path / "images"
    # the same file name in two subfolders: a/f0.png .. and b/f0.png .. are different frames
    copy_frames(kitti_dir, images, frames[:3], rename=lambda n: f"a/f{frames.index(n)}.png")
    copy_frames(kitti_dir, images, frames[3:], rename=lambda n: f"b/f{frames.index(n) - 3}.png")
    (images / "README.md").write_text("frames of a drive")
    (images / "a" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (images / "b" / "empty.jpg").write_bytes(b"")
    # and one picture of something else entirely, which must be reported as such
    shutil.copyfile(data_dir / "homography/oxford_boat/img1.png", images / "b" / "z_boat.png")
    summary, _ = reconstruct(images, tmp_path / "out", sift_options(pairs="sequential:3"))
    assert set(summary.skipped_files) == {"README.md", "a/truncated.png", "b/empty.jpg"}
    assert "b/empty.jpg: empty file" in summary.report()
    names = fio.list_h5_names(tmp_path / "out" / "features.h5", "keypoints")
    assert names == {
        "a/f0.png",
        "a/f1.png",
        "a/f2.png",
        "b/f0.png",
        "b/f1.png",
        "b/f2.png",
        "b/z_boat.png",
    }
    # hloc pair key flattens the folders: a/f2.png ↔ b/f0.png is "a-f2.png/b-f0.png"
    with h5py.File(tmp_path / "out" / "matches.h5") as f:
        assert "matches0" in f["a-f2.png"]["b-f0.png"]
    assert summary.registered == 6, summary.report()
    assert summary.unregistered == {
        "b/z_boat.png": "no geometrically verified pair: does not overlap any other image"
    }
    frame_of = {
        f"{d}/f{k}.png": int(frames[3 * (d == "b") + k][:6]) for d in "ab" for k in range(3)
    }
    rel, n = trajectory_error(tmp_path / "out" / "sparse", kitti_dir, frame_of.get)
    assert n == 6 and rel < 0.01, f"trajectory error {rel:.2%}"
    assert "b/z_boat.png: no geometrically verified pair" in summary.report()


def test_names_that_collide_in_hloc_pair_keys_are_refused(kitti_dir, tmp_path):
    images = copy_frames(
        kitti_dir,
        tmp_path / "images",
        ["000000.png", "000005.png"],
        rename=lambda n: "sub/a.png" if n == "000000.png" else "sub-a.png",
    )
    with pytest.raises(DatasetError, match="same hloc pair key 'sub-a.png'"):
        reconstruct(images, tmp_path / "out", sift_options())


def test_images_that_do_not_overlap_give_a_report_not_a_crash(data_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for src in [
        "homography/oxford_boat/img1.png",
        "pose/scannet_sample/scene0711_00_frame-001680.jpg",
        "pose/kitti_seq1/000000.png",
        "homography/oxford_bikes/img1.png",
    ]:
        shutil.copyfile(data_dir / src, images / src.replace("/", "_"))
    opts = sift_options(mapper=MapperOptions())
    summary, _ = reconstruct(images, tmp_path / "out", opts)
    assert summary.registered == 0
    assert len(summary.unregistered) == 4
    report = summary.report()
    assert report.startswith("no model:"), report
    assert "the images do not seem to overlap (0/6 pairs verified)" in report
    assert not (tmp_path / "out" / "sparse").exists()
    # the CLI exits with 1 (no model) after printing the report, not with a traceback
    assert (
        cli_main(
            [
                "reconstruct",
                str(images),
                str(tmp_path / "out"),
                "extractor.max_num_keypoints=2048",
                "--pipeline",
                "sift+nn",
                "--resize",
                "1024",
            ]
        )
        == 1
    )


def test_separate_steps_from_the_cli_with_retrieval_pairs(kitti_dir, tmp_path):
    images = copy_frames(kitti_dir, tmp_path / "images", kitti_frames(kitti_dir, count=6))
    out = tmp_path / "out"
    common = ["extractor.max_num_keypoints=2048", "--pipeline", "sift+nn", "--resize", "1024"]
    assert cli_main(["extract", str(images), str(out), *common]) == 0
    assert fio.list_h5_names(out / "features.h5", "keypoints") == set(
        kitti_frames(kitti_dir, count=6)
    )
    assert cli_main(["pairs", str(images), str(out), *common, "--pairs", "retrieval:1"]) == 0
    pairs = P.read_pairs(out / "pairs.txt")
    # frames are 5 video frames (~6 m) apart: VLAD's nearest neighbour is always an adjacent frame
    frame = {n: int(n[:6]) for n in kitti_frames(kitti_dir)}
    assert all(abs(frame[a] - frame[b]) == 5 for a, b in pairs), pairs
    assert {n for p in pairs for n in p} == set(frame) & set(
        fio.list_h5_names(out / "features.h5", "keypoints")
    )
    assert (out / "global-feats.h5").exists()
    assert cli_main(["match-pairs", str(images), str(out), *common]) == 0
    assert len(fio.list_h5_names(out / "matches.h5", "matches0")) == len(pairs)
    # a step run with another configuration is refused instead of mixing results
    assert cli_main(["match-pairs", str(images), str(out), "--pipeline", "sift+nn"]) == 2
