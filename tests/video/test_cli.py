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


def test_video_propagate_and_show(tmp_path, capsys):
    """`tiepoint video propagate|show` write what `propagate_video` / `show_chain` write."""
    import cv2

    from tiepoint.video.propagate import PropagateConf, propagate_video, show_chain

    from .synthetic_labels import Scene, write_gim_labels

    small = dict(frames=81, resizes=("F",))  # 17 frames, one resize: a fast test
    pseudo = write_gim_labels(tmp_path / "pseudo", Scene(methods=("SIFT",)), "walk a", **small)
    argv = ["video", "propagate", str(pseudo), str(tmp_path / "cli"), "--max-samples", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    api = propagate_video(pseudo, "walk a", tmp_path / "api", max_samples=2)
    assert f"{api['pairs']} propagated pairs" in out and "WALK SIFT [R] F [S]  5" in out
    rel = api["folder"].relative_to(tmp_path / "api")
    files = sorted(p.name for p in api["folder"].iterdir())
    assert api["pairs"] >= 1 and files == sorted(p.name for p in (tmp_path / "cli" / rel).iterdir())
    for name in files:
        assert (api["folder"] / name).read_bytes() == (tmp_path / "cli" / rel / name).read_bytes()
    # a label-set subset is a choice, and the output folder names the skips used
    sets = ["WALK SIFT [R] F [S] 10", "WALK SIFT [R] F [S] 20"]
    argv = ["video", "propagate", str(pseudo), str(tmp_path / "sub"), "--label-sets", *sets]
    assert main([*argv, "--max-samples", "1"]) == 0
    assert "from 2 label sets" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["SIFT 10 20 F FM 32 PM 512"]
    # the chain picture
    png = tmp_path / "chain.png"
    argv = ["video", "show", str(pseudo), str(png), "--target", "0", "80", "--dpi", "40"]
    assert main(argv) == 0
    ref = show_chain(
        pseudo, "walk a", tmp_path / "ref.png", target=(0, 80), conf=PropagateConf(), dpi=40
    )
    assert f"chain {ref['pair'][0]}→{ref['pair'][1]}" in capsys.readouterr().out
    assert ref["pair"][1] - ref["pair"][0] >= 40
    a, b = cv2.imread(str(png)), cv2.imread(str(tmp_path / "ref.png"))
    assert a is not None and a.shape == b.shape and a.std() > 10
    # one-line errors: unknown video, several videos without --video, missing root
    assert main(["video", "propagate", str(pseudo), str(tmp_path / "x"), "--video", "nope"]) == 2
    assert "no labels of video 'nope'" in capsys.readouterr().err
    write_gim_labels(pseudo, Scene(methods=("SIFT",)), "walk b", **small)
    assert main(["video", "show", str(pseudo), str(png)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "several videos" in err
    assert main(["video", "propagate", str(tmp_path / "none"), str(tmp_path / "y")]) == 2
    assert "pseudo-label folder not found" in capsys.readouterr().err


def test_final_filter_is_the_estimator_interface_with_identical_inliers():
    """propagate's F-MAGSAC through `estimate_fundamental` = GIM's direct cv2 call."""
    import cv2

    from tiepoint.video.propagate import PropagateConf, fundamental_inliers

    from .synthetic_labels import Scene

    scene = Scene(methods=("SIFT",))
    for a, b, outl in [(0, 40, 0.02), (10, 90, 0.3), (5, 25, 0.6)]:
        lab = scene.labels("SIFT", "F", a, b, outliers=outl).astype(np.float64)
        conf = PropagateConf()
        F, mask = cv2.findFundamentalMat(
            lab[:, :2],
            lab[:, 2:],
            cv2.USAC_MAGSAC,
            conf.fm_threshold,
            conf.fm_confidence,
            conf.fm_max_iters,
        )
        ref = mask.ravel() > 0
        got = fundamental_inliers(lab[:, :2], lab[:, 2:], conf)
        np.testing.assert_array_equal(got, ref)
        assert 0.3 < got.mean() < 1.0
    assert not fundamental_inliers(np.zeros((5, 2)), np.zeros((5, 2)), PropagateConf()).any()


def test_video_label_and_propagate_shards_through_the_cli(synthetic_frames, tmp_path, capsys):
    """`--shard 0/2` + `--shard 1/2` write the files the plain (local, unsharded) run writes."""
    frames = str(synthetic_frames.folder)
    for i in (0, 1):
        argv = ["video", "label", frames, str(tmp_path / "s"), "--skips", "0", "--device", "cpu"]
        assert main([*argv, "--shard", f"{i}/2", "extractor.max_num_keypoints=1500"]) == 0
    argv = ["video", "label", frames, str(tmp_path / "p"), "--skips", "0", "--device", "cpu"]
    assert main([*argv, "extractor.max_num_keypoints=1500"]) == 0
    a, b = (sorted((tmp_path / d).rglob("*.npy")) for d in ("s", "p"))
    assert len(a) == len(b) >= 4
    for x, y in zip(a, b):
        assert x.name == y.name and x.read_bytes() == y.read_bytes()
    assert main(["video", "label", frames, str(tmp_path / "s"), "--shard", "2/2"]) == 2
    assert "--shard '2/2'" in capsys.readouterr().err
