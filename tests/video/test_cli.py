"""`tiepoint video frames|label` write what the API writes and fail in one line."""

import numpy as np

from tiepoint.cli import main
from tiepoint.video.frames import FrameSet
from tiepoint.video.labels import Labeler, label_set, read_labels


def test_video_frames_and_label(synthetic_video, synthetic_frames, tmp_path, capsys):
    frames = tmp_path / "frames"
    assert main(["video", "frames", str(synthetic_video.path), str(frames)]) == 0
    out = capsys.readouterr().out
    assert "5 frames of 320×240" in out and "4 at skip 10" in out and "1 at skip 40" in out
    assert FrameSet.load(frames).listing == synthetic_frames.listing
    labels = tmp_path / "labels"
    argv = ["video", "label", str(frames), str(labels), "--skips", "0", "--device", "cpu"]
    assert main([*argv, "extractor.max_num_keypoints=2000"]) == 0  # overrides after options
    out = capsys.readouterr().out
    assert "WALK SIFT [R] F [S] 10: 4/4 pairs labelled" in out
    d = next(labels.glob("WALK SIFT*/*"))
    lab = Labeler("gim-rootsift", device="cpu", overrides=["extractor.max_num_keypoints=2000"])
    ref = read_labels(label_set(lab, FrameSet.load(frames), tmp_path / "api", 10, progress=False))
    got = read_labels(d)
    assert list(got) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
        assert len(got[k]) <= 2000


def test_video_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert main(["video", "frames", str(bad), str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clip.mp4: not a readable video" in err
    assert main(["video", "label", str(tmp_path), str(tmp_path / "l")]) == 2
    assert "not a frames folder" in capsys.readouterr().err
