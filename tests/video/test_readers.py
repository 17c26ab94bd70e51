"""The PyAV frame reader (`video.readers`) beside OpenCV's: the same frames of a real video, and
a video only PyAV decodes (AV1, which opencv-python's FFmpeg cannot) taken by `reader=auto`."""

import numpy as np
import pytest
from helpers import texture, unavailable

from tiepoint.cli import main
from tiepoint.errors import VideoError
from tiepoint.video import readers
from tiepoint.video.frames import extract_frames, probe


def _require_av():
    try:
        import av
    except ImportError:
        unavailable("PyAV (the video extra) is not installed")
    return av


def test_opencv_and_pyav_read_the_same_frames(opencv_doc_videos, tmp_path):
    """vtest.avi (the opencv-doc sample, MPEG-4 part 2): the first 12 s through each reader."""
    _require_av()
    video = opencv_doc_videos / "vtest.avi"
    a, b = probe(video, "opencv"), probe(video, "pyav")
    assert (a.reader, b.reader) == ("opencv", "pyav")
    assert (a.fps, a.num_frames, a.width, a.height) == (b.fps, b.num_frames, b.width, b.height)
    cv = extract_frames(video, tmp_path / "cv", end=12, reader="opencv", progress=False)
    pa = extract_frames(video, tmp_path / "av", end=12, reader="pyav", progress=False)
    assert cv.reader == "opencv" and pa.reader == "pyav" and cv.listing == pa.listing
    assert len(pa.listing) == 13
    for i in pa.listing:  # identical here (both FFmpeg); other builds' YUV→BGR may differ a bit
        x, y = cv.read(i).astype(np.int16), pa.read(i).astype(np.int16)
        assert np.abs(x - y).mean() < 1.0 and np.percentile(np.abs(x - y), 99) <= 4, i
    # neighbours differ far more than the readers do: the indices line up
    x, y = cv.read(50).astype(np.int16), pa.read(60).astype(np.int16)
    assert np.abs(x - y).mean() > 3
    with pytest.raises(VideoError, match="decoded by opencv, not pyav"):  # no mixed folders
        extract_frames(video, tmp_path / "cv", end=12, reader="pyav", progress=False)


def _write_av1(path, frames, fps=10):
    av = _require_av()
    with av.open(str(path), "w") as out:
        try:
            stream = out.add_stream("libsvtav1", rate=fps)
        except (av.FFmpegError, ValueError) as e:
            unavailable(f"this PyAV build has no AV1 encoder ({e})")
        stream.width, stream.height, stream.pix_fmt = (
            frames[0].shape[1],
            frames[0].shape[0],
            "yuv420p",
        )
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def test_a_video_only_pyav_decodes(tmp_path, monkeypatch, capsys):
    import cv2

    base = texture(320, 240, seed=3)
    src = [np.ascontiguousarray(np.roll(base, 4 * i, axis=1)[:, :192]) for i in range(45)]
    video = tmp_path / "clip.mkv"
    _write_av1(video, src)
    cap = cv2.VideoCapture(str(video))
    assert not cap.read()[0], "this OpenCV decodes AV1: pick a codec it cannot decode"
    cap.release()
    with pytest.raises(VideoError, match="clip.mkv: not a readable video .OpenCV") as e:
        extract_frames(video, tmp_path / "cv", reader="opencv", progress=False)
    assert "\n" not in str(e.value)

    fs = extract_frames(video, tmp_path / "auto", progress=False)  # auto: falls back to PyAV
    assert fs.reader == "pyav" and fs.fps == 10 and fs.frame_size == (192, 240)
    assert fs.listing == [0, 10, 20, 30, 40]
    for i in fs.listing:  # the encoded frame within AV1 loss (CRF 35), far from its neighbours
        got = fs.read(i).astype(np.int16)
        own = np.abs(got - src[i]).mean()
        others = [np.abs(got - src[j]).mean() for j in (i - 1, i + 1) if 0 <= j < len(src)]
        assert own < 15 and own < 0.3 * min(others), (i, own, others)

    assert main(["video", "frames", str(video), str(tmp_path / "cli"), "--reader", "pyav"]) == 0
    assert "; pyav)" in capsys.readouterr().out
    monkeypatch.setattr(readers, "_av", lambda: None)  # PyAV not installed
    with pytest.raises(VideoError, match=r"OpenCV could not .*tiepoint\[video\]") as e:
        extract_frames(video, tmp_path / "none", progress=False)
    assert "\n" not in str(e.value)
