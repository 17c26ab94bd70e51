"""GIM's frame sampling on real and synthetic videos: constants, cache, resume, errors."""

import math

import cv2
import numpy as np
import pytest

from tiepoint.errors import VideoError
from tiepoint.video import frames as F
from tiepoint.video.frames import VideoInfo, extract_frames, frame_pairs, time_range


def decode_all(path):
    """Every frame by plain sequential decoding: the independent truth for the cache."""
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


def test_gim_constants():
    assert [F.frame_gap(f) for f in (10, 25, 29.97, 30, 30.5, 50, 60)] == [10] * 4 + [20] * 3
    assert F.pair_skips(23.976) == (10, 20, 40) and F.pair_skips(59.94) == (20, 40, 80)
    # GIM's pairs: zip(listing[:-skip//gap], listing[skip//gap:])
    listing = list(range(0, 101, 10))
    assert frame_pairs(listing, 40, 10) == list(zip(listing[:-4], listing[4:]))
    assert frame_pairs(listing[:3], 40, 10) == []


def test_time_range_drops_five_minutes_unless_too_short():
    long = VideoInfo("v.mp4", 30.0, 30 * 1200, 1920, 1080)  # 20 min
    assert time_range(long) == (300, 900)
    assert F.frame_listing(long, (300, 900), 10)[:2] == [9000, 9010]
    short = VideoInfo("v.mp4", 25.0, 25 * 540, 1920, 1080)  # 9 min: nothing left after trimming
    assert time_range(short) == (0, 540)
    assert time_range(long, 10, 20) == (10, 20) and time_range(long, 10, -1) == (10, 1200)
    assert time_range(long, trim=0) == (0, 1200)


def test_synthetic_video_frames_are_the_decoded_frames(synthetic_video, synthetic_frames):
    fs = synthetic_frames
    assert fs.listing == [0, 10, 20, 30, 40] and fs.gap == 10 and fs.skips == (10, 20, 40)
    assert fs.range == (0, 1) and fs.video_size == fs.frame_size == (320, 240)
    assert [len(fs.pairs(s)) for s in fs.skips] == [4, 3, 1]
    np.testing.assert_array_equal(fs.vratio, [1, 1])
    truth = decode_all(synthetic_video.path)
    assert len(truth) == 41
    for i in fs.listing:
        np.testing.assert_array_equal(fs.read(i), truth[i][..., ::-1])  # PNG: lossless, RGB
    assert F.FrameSet.load(fs.folder).listing == fs.listing


def test_killed_extraction_resumes_to_identical_files(synthetic_video, tmp_path, monkeypatch):
    clean = extract_frames(synthetic_video.path, tmp_path / "clean", progress=False)
    write, calls = F._write_frame, []

    def dying(path, frame):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(path)
        write(path, frame)

    monkeypatch.setattr(F, "_write_frame", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_frames(synthetic_video.path, tmp_path / "resumed", progress=False)
    with pytest.raises(VideoError, match="did not finish"):
        F.FrameSet.load(tmp_path / "resumed")
    monkeypatch.setattr(F, "_write_frame", write)
    resumed = extract_frames(synthetic_video.path, tmp_path / "resumed", progress=False)
    names = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "resumed").iterdir())
    for n in names:
        assert (tmp_path / "clean" / n).read_bytes() == (tmp_path / "resumed" / n).read_bytes(), n
    assert resumed.complete and clean.listing == resumed.listing
    with pytest.raises(VideoError, match="other settings"):
        extract_frames(synthetic_video.path, tmp_path / "resumed", max_size=100, progress=False)


def test_max_size_and_vratio(synthetic_video, tmp_path):
    fs = extract_frames(synthetic_video.path, tmp_path, max_size=160, ext="jpg", progress=False)
    assert fs.frame_size == (160, 120) and fs.read(10).shape == (120, 160, 3)
    np.testing.assert_allclose(fs.vratio, [2, 2])


def test_bad_videos_get_one_line_errors(synthetic_video, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoError, match="clip.mp4: not a readable video") as e:
        extract_frames(bad, tmp_path / "a", progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(VideoError, match="no such video"):
        extract_frames(tmp_path / "missing.mp4", tmp_path / "a", progress=False)
    with pytest.raises(
        VideoError, match="no frames in the time range 100–200 s .the video is 1.6 s long"
    ):
        extract_frames(synthetic_video.path, tmp_path / "b", start=100, end=200, progress=False)
    tiny = tmp_path / "tiny.avi"
    w = cv2.VideoWriter(str(tiny), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(6):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    with pytest.raises(VideoError, match="too short for GIM's frame skips: 1 sampled frame"):
        extract_frames(tiny, tmp_path / "c", progress=False)


def test_real_video_from_opencv_doc(opencv_doc_videos, tmp_path):
    """vtest.avi (10 fps, 79.5 s: too short to trim): the first 12 s, every 10th frame."""
    video = opencv_doc_videos / "vtest.avi"
    fs = extract_frames(video, tmp_path, end=12, progress=False)
    assert fs.fps == 10 and fs.gap == 10 and fs.skips == (10, 20, 40)
    assert fs.listing == list(range(0, 121, 10)) and fs.range == (0, 12)
    assert [len(fs.pairs(s)) for s in fs.skips] == [12, 11, 9]
    cap = cv2.VideoCapture(str(video))
    for _ in range(50):
        cap.grab()
    ok, frame = cap.read()
    np.testing.assert_array_equal(fs.read(50), frame[..., ::-1])
    assert math.isclose(fs.vratio[0], 1.0)


def test_truncated_video_ends_the_listing_where_decoding_stops(synthetic_video, tmp_path, caplog):
    data = synthetic_video.path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # the header still claims 41 frames
    assert F.probe(cut).num_frames == 41
    fs = extract_frames(cut, tmp_path / "f", progress=False)
    assert "decoding stopped before frame" in caplog.text
    n = len(decode_all(cut))  # the frames that really decode (25 here)
    assert 20 < n < 41 and fs.listing == [f for f in range(0, 41, 10) if f < n]
    assert all(fs.path(f).is_file() for f in fs.listing)
    assert F.FrameSet.load(tmp_path / "f").listing == fs.listing  # a rerun keeps it
    assert extract_frames(cut, tmp_path / "f", progress=False).listing == fs.listing
