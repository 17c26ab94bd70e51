"""GIM pseudo-labels on a video with exact homographies: precision, layout, resume, masks."""

import numpy as np
import pytest

from tiepoint.errors import VideoError
from tiepoint.video import labels as L
from tiepoint.video.labels import Labeler, filter_labels, label_set, label_video, read_labels
from tiepoint.video.synthetic import transfer_error


@pytest.fixture(scope="module")
def sift():
    return Labeler("gim-rootsift", device="cpu")


def precision(labels: dict, video, px=3.0):
    err = np.concatenate([transfer_error(v, video.gt(*k)) for k, v in labels.items()])
    assert np.median(err) < 0.6
    return float(np.mean(err < px)), len(err)


def test_gim_file_names():
    # GIM writes f"{np.array([idx0, idx1])}.npy": numpy pads the columns to equal width
    assert L.label_filename(6965, 6970) == "[6965 6970].npy"
    assert L.label_filename(5, 15) == "[ 5 15].npy"


def test_labels_are_precise_at_every_skip_and_stored_in_gims_layout(
    sift, synthetic_video, synthetic_frames, tmp_path
):
    fs = synthetic_frames
    dirs = label_video(sift, fs, tmp_path, skips=(0, 1, 2), progress=False)
    names = [(d.parent.name, d.name) for d in dirs]
    assert names == [
        (f"WALK SIFT [R] F [S] {s}", f"walk WH  320  240 RG    0    1 SP {s} 4")
        for s in (10, 20, 40)
    ]
    for d, skip in zip(dirs, fs.skips):
        labels = read_labels(d)
        nums, idxs = np.load(d / "nums.npy"), np.load(d / "idxs.npy")
        assert nums.dtype == idxs.dtype == np.int64 and idxs.shape == (len(fs.pairs(skip)), 2)
        assert [tuple(p) for p in idxs] == fs.pairs(skip)  # every pair labelled, in order
        assert list(nums) == [len(v) for v in labels.values()]
        assert all(v.dtype == np.float32 and v.shape[1] == 4 for v in labels.values())
        assert sorted(p.name for p in d.iterdir()) == sorted(
            [L.label_filename(*k) for k in labels] + ["idxs.npy", "nums.npy"]
        )
        # measured 0.94 / 0.94 / 0.97: a planar scene leaves F underdetermined, so some gross
        # mismatches fit an F at 0.5 px (at 640×480: 0.988 / 0.985 / 0.977, docs/video.md)
        prec, n = precision(labels, synthetic_video)
        assert prec > 0.9 and n > 100 * len(labels), (skip, prec, n)


def test_killed_labelling_resumes_to_identical_files(sift, synthetic_frames, tmp_path, monkeypatch):
    fs = synthetic_frames
    clean = label_set(sift, fs, tmp_path / "clean", 10, progress=False)
    match, calls = Labeler.match, []

    def dying(self, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return match(self, *a, **k)

    monkeypatch.setattr(Labeler, "match", dying)
    with pytest.raises(KeyboardInterrupt):
        label_set(sift, fs, tmp_path / "resumed", 10, progress=False)
    monkeypatch.setattr(Labeler, "match", match)
    part = L.label_dir(tmp_path / "resumed", fs, "SIFT", 10, False)
    assert len(np.load(part / "idxs.npy")) == 2  # the index covers what was written
    (part / ".[20 30].npy.x1y2.npy").write_bytes(b"half")  # a write a SIGKILL cut short
    resumed = label_set(sift, fs, tmp_path / "resumed", 10, progress=False)
    names = sorted(p.name for p in clean.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir()) and len(names) == 6
    for n in names:
        assert (clean / n).read_bytes() == (resumed / n).read_bytes(), n


def test_masks_keep_labels_out_of_masked_areas(synthetic_frames, tmp_path):
    fs = synthetic_frames
    left = lambda frame, rgb: np.arange(rgb.shape[1])[None].repeat(rgb.shape[0], 0) < 160
    for mode in ("keypoints", "image"):
        lab = Labeler("gim-rootsift", mask_mode=mode, device="cpu")
        d = label_set(lab, fs, tmp_path / mode, 10, masks=left, progress=False)
        labels = np.concatenate(list(read_labels(d).values()))
        assert len(labels) > 200
        assert labels[:, [0, 2]].max() < 160.5, mode
    # a folder of mask images (non-zero = keep), at half resolution: resized to the frame
    folder = tmp_path / "masks"
    folder.mkdir()
    import cv2

    for i in fs.listing:
        m = np.zeros((120, 160), np.uint8)
        m[:, 80:] = 255
        cv2.imwrite(str(folder / f"{i}.png"), m)
    d = label_set(
        Labeler("gim-rootsift", device="cpu"),
        fs,
        tmp_path / "dir",
        10,
        masks=folder,
        progress=False,
    )
    labels = np.concatenate(list(read_labels(d).values()))
    assert len(labels) > 200 and labels[:, [0, 2]].min() > 158.5


def test_bad_masks(sift, synthetic_frames, tmp_path, caplog):
    caplog.set_level("INFO")
    fs = synthetic_frames
    with pytest.raises(
        VideoError, match=r"mask of frame 0: mask of size \(100, 100\) does not fit"
    ):
        label_set(
            sift, fs, tmp_path, 10, masks=lambda i, rgb: np.ones((100, 100), bool), progress=False
        )
    with pytest.raises(VideoError, match="no mask for frame 0"):
        label_set(sift, fs, tmp_path, 10, masks=tmp_path, progress=False)
    empty = lambda i, rgb: np.full(rgb.shape[:2], i != 10)  # frame 10 entirely masked
    d = label_set(sift, fs, tmp_path / "e", 10, masks=empty, progress=False)
    assert [tuple(p) for p in np.load(d / "idxs.npy")] == [(20, 30), (30, 40)]
    assert "empty mask" in caplog.text


def test_static_points_and_outliers_are_removed():
    from helpers import rotation

    from tiepoint.geometry.epipolar import fundamental_from_pose, sym_epipolar_distance

    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 300], [0, 500, 300], [0, 0, 1]])
    R, t = rotation(3, -8, 5), np.array([0.6, 0.1, 0.2])
    X = np.c_[rng.uniform(-3, 3, (300, 2)), rng.uniform(4, 12, 300)]  # a 3-D scene, not a plane
    x0, x1 = X @ K.T, (X @ R.T + t) @ K.T
    p0, p1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
    p1[:40] = p0[:40] + rng.uniform(-0.9, 0.9, (40, 2))  # a watermark: static to < 1 px
    p1[40:80] = rng.uniform(0, 600, (40, 2))  # gross outliers
    keep = filter_labels(p0, p1)
    assert keep.min() >= 40  # every static point is gone
    # MAGSAC++ may keep a random point that fell within a few pixels of its epipolar line
    d = sym_epipolar_distance(p0, p1, fundamental_from_pose(K, K, R, t))
    assert d[keep].max() < 3 and (keep >= 80).sum() == 220


def test_resize_run_crops_to_another_label_set(sift, synthetic_video, synthetic_frames, tmp_path):
    fs = synthetic_frames
    with pytest.raises(VideoError, match="needs the SIFT labels at skip 10"):
        label_set(sift, fs, tmp_path, 10, resize=True, crop_method="SIFT", progress=False)
    src = read_labels(label_set(sift, fs, tmp_path, 10, progress=False))
    d = label_set(sift, fs, tmp_path, 10, resize=True, crop_method="SIFT", progress=False)
    assert d.parent.name == "WALK SIFT [R] T [S] 10"
    labels = read_labels(d)
    assert set(labels) == set(src)
    prec, n = precision(labels, synthetic_video)
    assert prec > 0.9 and n > 1000
    for k, v in labels.items():  # inside the source labels' boxes (+1 px for the floor/ceil)
        assert (v[:, :2].min(0) >= src[k][:, :2].min(0) - 1).all()
        assert (v[:, 2:].max(0) <= src[k][:, 2:].max(0) + 1).all()


def test_too_short_for_a_skip(sift, synthetic_frames, tmp_path, caplog):
    fs = synthetic_frames
    fs2 = type(fs)(**{**fs.__dict__, "listing": fs.listing[:3]})
    with pytest.raises(VideoError, match="too short for skip 40: 3 sampled frames, 5 needed"):
        label_set(sift, fs2, tmp_path, 40, progress=False)
    with pytest.raises(VideoError, match="too short for every requested skip"):
        label_video(sift, fs2, tmp_path, skips=(2,), progress=False)


def test_real_video_labels_in_video_pixels(opencv_doc_videos, sift, tmp_path):
    """Megamind.avi (720×528, 23.976 fps) stored at half size: labels come back in video pixels
    (vratio 2) and satisfy one F per pair at the stored-frame threshold scaled by vratio."""
    from tiepoint.estimators import estimate_fundamental
    from tiepoint.video.frames import extract_frames

    fs = extract_frames(
        opencv_doc_videos / "Megamind.avi", tmp_path / "f", end=3, max_size=360, progress=False
    )
    assert fs.frame_size == (360, 264) and fs.gap == 10 and fs.listing == list(range(0, 71, 10))
    np.testing.assert_allclose(fs.vratio, [2, 2])
    d = label_set(sift, fs, tmp_path / "l", 40, progress=False)
    assert d.name == "Megamind WH  720  528 RG    0    3 SP 40 8"
    labels = read_labels(d)
    assert len(labels) >= 3
    for v in labels.values():
        assert len(v) >= 20
        assert (v >= -0.5).all() and (v[:, [0, 2]] < 720).all() and (v[:, [1, 3]] < 528).all()
        assert v[:, [0, 2]].max() > 400  # video pixels, not the stored 360-wide frames
        est = estimate_fundamental(v[:, :2], v[:, 2:], threshold=1.5)
        assert est.num_inliers > 0.9 * len(v)


def test_dense_labeler_gets_masked_images(synthetic_video, synthetic_frames, tmp_path):
    """A dense pipeline (a loaded Matcher) sees the masked pixels black (GIM's DKM input) and
    its matches go through the same filter: here a stand-in model answers with the exact
    correspondences of the frames it is given, plus a static overlay."""
    from tiepoint import Matcher
    from tiepoint.geometry.homography import warp_points
    from tiepoint.types import MatchResult

    fs, seen = synthetic_frames, []
    m = Matcher({"dense": {"name": "dense_toy:ToyDense"}}, device="cpu")
    keep = lambda frame, rgb: np.arange(rgb.shape[0])[:, None].repeat(rgb.shape[1], 1) >= 60

    def exact(img0, img1):
        seen.append((img0.copy(), img1.copy()))
        i0, i1 = next(p for p in fs.pairs(20) if p[0] == len(seen) * 10 - 10)
        g = np.stack(np.meshgrid(np.arange(8, 312, 9.0), np.arange(64, 232, 9.0)), -1)
        p0 = g.reshape(-1, 2)
        p1 = warp_points(synthetic_video.gt(i0, i1), p0)
        p0, p1 = np.r_[p0, [[20.0, 100]] * 30], np.r_[p1, [[20.3, 100.2]] * 30]  # a "logo"
        k = len(p0)
        return MatchResult(
            p0, p1, np.stack([np.arange(k)] * 2, -1), np.ones(k), (320, 240), (320, 240)
        )

    m.match = exact
    lab = Labeler(m, method="GIM_DKM")
    assert lab.mask_mode == "image" and not lab.sparse and lab.resize_box == (1600, 900)
    d = label_set(lab, fs, tmp_path, 20, masks=keep, progress=False)
    assert d.parent.name == "WALK GIM_DKM [R] F [S] 20"
    for img0, img1 in seen:
        assert img0[:60].max() == 0 and img1[:60].max() == 0 and img0[60:].max() > 0
    labels = read_labels(d)
    assert len(labels) == 3
    for k, v in labels.items():
        assert len(v) > 500 and not ((np.abs(v[:, :2] - v[:, 2:]) < 1).all(1)).any()
        assert transfer_error(v, synthetic_video.gt(*k)).max() < 1e-3
