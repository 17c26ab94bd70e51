"""ETH3D AP on a synthetic dataset written in the real on-disk layout, with a known answer.

A plane at depth 4 seen by image a and by image b, moved 0.32 to the side: with the ×8 downsized
focal length 50, image b is image a shifted by 50·0.32/4 = 4 px. Image c shares only 100 3D points
with the others, so the only pair is (a, b). An oracle predictor returns keypoints and lines with
hand-picked matches and scores, so the PR curve and AP are computed by hand below.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tiepoint.evaluation.eth3d import (
    CALIB,
    DEPTHS,
    IMAGES,
    average_precision,
    evaluate,
    read_eth3d,
    write_results,
)

W, H, F = 512, 384, 400.0  # full-size images; ×8 downsized: 64 × 48, f = 50
SHIFT = 4.0


def write_scene(root):
    scene = root / "plane"
    for d in (IMAGES, DEPTHS, CALIB):
        (scene / d).mkdir(parents=True)
    (scene / CALIB / "cameras.txt").write_text(
        "# Camera list\n# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n# Number of cameras: 1\n"
        f"7 PINHOLE {W} {H} {F} {F} {W / 2} {H / 2}\n"
    )
    ids = {"a": range(0, 600), "b": range(0, 600), "c": range(500, 600)}
    tx = {"a": 0.0, "b": -SHIFT * 4 / 50, "c": 0.5}  # X_cam = X_world + t; b = a + 4 px in x
    lines = ["# Image list", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#", "#"]
    for k, name in enumerate("abc"):
        lines.append(f"{k + 1} 1 0 0 0 {-tx[name]} 0 0 7 dslr_images_undistorted/{name}.JPG")
        lines.append(" ".join(f"10.0 20.0 {i}" for i in ids[name]) + " 1.0 1.0 -1")
        Image.fromarray(np.full((H, W), 128, np.uint8)).save(scene / IMAGES / f"{name}.JPG")
        depth = np.full((H // 8, W // 8), 4 * 256, np.uint16)
        if name == "a":
            depth[:, :10] = 0  # unknown depth on the left of a
        Image.fromarray(depth).save(scene / DEPTHS / f"{name}.png")
    (scene / CALIB / "images.txt").write_text("\n".join(lines) + "\n")
    return scene


def oracle(im0, im1):
    assert im0.shape == im1.shape == (1, 1, H // 8, W // 8)
    xs, ys = np.meshgrid(np.arange(20, 55, 7.0), np.arange(10, 40, 8.0))
    kp0 = np.concatenate([np.stack([xs.ravel(), ys.ravel()], 1), [[5.0, 20.0]]])  # 20 + 1
    kp1 = kp0 + [SHIFT, 0]
    m0 = np.full(21, -1)
    s0 = np.zeros(21)
    order = np.arange(20)
    # by score: 8 correct, 2 wrong, 4 correct, 6 not matched; the no-depth point (−2) is matched
    # with the best score of all and must not count
    for rank, i in enumerate(order[:14]):
        m0[i] = (i + 1) % 20 if 8 <= rank < 10 else i
        s0[i] = 0.9 - 0.01 * rank
    m0[20], s0[20] = 5, 0.99
    l0 = np.array([[[15, 5], [60, 5]], [[30, 10], [30, 45]], [[12, 44], [50, 44]]], float)
    l1 = l0 + [SHIFT, 0]
    return {
        "keypoints0": kp0,
        "keypoints1": kp1,
        "matches0": m0,
        "matching_scores0": s0,
        "lines0": l0,
        "lines1": l1,
        "line_matches0": np.array([0, 2, -1]),  # 1 right, 1 wrong (score lower), 1 missed
        "line_matching_scores0": np.array([0.8, 0.5, 0.0]),
    }


def test_average_precision_by_hand():
    # 8 TP, 2 FP, 4 TP of 20 positives → 0.4·1 + 0.2·(12/14)
    tp = np.array([1] * 8 + [0] * 2 + [1] * 4)
    recall, fpr = np.cumsum(tp) / 20, np.cumsum(1 - tp) / 20
    assert average_precision(recall, fpr) == pytest.approx(0.4 + 0.2 * 12 / 14)


def test_eth3d_synthetic_known_ap(tmp_path):
    write_scene(tmp_path)
    pairs = read_eth3d(tmp_path)
    assert [(p.image0.stem, p.image1.stem, p.covisible) for p in pairs] == [("a", "b", 600)]
    p = pairs[0]
    np.testing.assert_allclose(p.T_0to1[:3, 3], [SHIFT * 4 / 50, 0, 0])
    assert p.K0[0, 2] == W / 2 - 0.5  # COLMAP's principal point in tiepoint's convention
    r = evaluate(pairs, oracle)
    assert r["pairs"] == 1 and r["num_pos"] == 20 and r["num_predicted"] == 14
    assert r["AP"] == pytest.approx(100 * (0.4 + 0.2 * 12 / 14))
    # lines: GT matches all three (line 2 of a is fully visible); predicted 1 right then 1 wrong
    assert r["num_pos_lines"] == 3 and r["AP_lines"] == pytest.approx(100 / 3)
    # resumable: with a cache, a rerun scores nothing again and gives the same numbers
    evaluate(pairs, oracle, cache=tmp_path / "pairs.h5")

    def broken(im0, im1):
        raise AssertionError("a cached pair was predicted again")

    again = evaluate(pairs, broken, cache=tmp_path / "pairs.h5")
    assert again["AP"] == r["AP"] and again["AP_lines"] == r["AP_lines"]
    path = write_results(r, tmp_path / "out", "oracle")
    assert path.is_file() and (tmp_path / "out" / "oracle_pr_lines.png").stat().st_size > 1000


def test_eth3d_command_on_featureless_scene_and_missing_root(tmp_path, capsys):
    from tiepoint.cli import main

    root = tmp_path / "ETH3D_undistorted"
    write_scene(root)
    args = ["eth3d", "--root", str(root), "--pipeline", "sift+nn", "--out", str(tmp_path / "o")]
    # flat images: no keypoints, no lines — zero predictions, AP 0, no crash
    assert main([*args, "extractor.name=sift+lsd"]) == 0
    assert "1 pairs, AP 0.00" in capsys.readouterr().out
    assert (tmp_path / "o" / "sift+nn_pairs.h5").is_file()
    assert main(["eth3d", "--root", str(tmp_path / "nope")]) == 2
    assert "--download" in capsys.readouterr().err
