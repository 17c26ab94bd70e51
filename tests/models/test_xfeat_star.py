"""XFeat* (semi-dense XFeat): its steps against independent computations, and the pipeline on a
real homography pair against the GT homography."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import tiepoint
from tiepoint.api import pipeline_conf, pipeline_weights
from tiepoint.geometry.homography import homography_corner_error
from tiepoint.models.dense.xfeat_star import XFeatStar, mutual_nn, soft_offsets


def test_mutual_nn_keeps_only_mutual_maxima_and_the_cossim_floor():
    d0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    d1 = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.0, -1.0]])
    # dot products: row 0 → col 0 (0.9), row 1 → col 1 (0.9), row 2 → col 0 (0.7, not mutual)
    i0, i1 = mutual_nn(d0, d1, -1.0)
    assert i0.tolist() == [0, 1] and i1.tolist() == [0, 1]
    i0, _ = mutual_nn(d0 * torch.tensor([[1.0], [0.5], [1.0]]), d1, 0.6)  # row 1 now 0.45
    assert i0.tolist() == [0]
    assert len(mutual_nn(d0[:0], d1, -1)[0]) == 0


def test_soft_offsets_is_the_expectation_of_the_8x8_softmax_around_its_centre():
    logits = torch.full((2, 64), -50.0)
    logits[0, 8 * 6 + 1] = 50.0  # row 6, column 1 → offset (1 − 4, 6 − 4)
    off, conf = soft_offsets(logits)
    torch.testing.assert_close(off[0], torch.tensor([-3.0, 2.0]))
    assert conf[0] == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 64, generator=g)
    p = torch.softmax(3 * logits, -1).reshape(3, 8, 8)  # [row y, column x]
    ex = (p.sum(1) * (torch.arange(8) - 4)).sum(-1)
    ey = (p.sum(2) * (torch.arange(8) - 4)).sum(-1)
    off, conf = soft_offsets(logits)
    torch.testing.assert_close(off, torch.stack([ex, ey], -1))
    torch.testing.assert_close(conf, p.flatten(1).max(-1).values)


def test_official_layout_loads_under_net(official_weights, tmp_path):
    assert pipeline_weights("xfeat_star") == ["xfeat"]  # the sparse XFeat's file, nothing new
    assert pipeline_conf("xfeat_star").dense.name == "xfeat_star"
    official_weights("xfeat")
    model = XFeatStar()
    path = tmp_path / "xfeat_official.pt"
    torch.save({k[4:]: v for k, v in model.state_dict().items()}, path)  # the official keys
    other = XFeatStar.from_checkpoint(path, {"top_k": 100})
    assert other.conf.top_k == 100
    for k, v in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)


def test_homography_pair_recovers_the_gt_and_flat_image_gives_nothing(
    data_dir, official_weights, tmp_path
):
    official_weights("xfeat")
    seq = data_dir / "homography/oxford_boat"
    H_gt = np.loadtxt(seq / "H1to2p")
    r = tiepoint.match(seq / "img1.png", seq / "img2.png", pipeline="xfeat_star")
    p0, p1 = r.keypoints0[r.matches[:, 0]], r.keypoints1[r.matches[:, 1]]
    assert len(p0) > 1000 and r.dense is None
    H, inl = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, 3.0, confidence=0.9999, maxIters=10000)
    err = homography_corner_error(H, H_gt, r.image_size0)
    assert err < 3.0, f"corner error {err:.2f} px"
    # most matches obey the GT homography (image 1 is on the cell grid: ~8 px quantisation)
    proj = cv2.perspectiveTransform(p0[None].astype(np.float64), H_gt)[0]
    assert np.mean(np.linalg.norm(proj - p1, axis=1) < 8) > 0.5
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((480, 640), 128, np.uint8))
    r = tiepoint.match(flat, seq / "img2.png", pipeline="xfeat_star")
    assert len(r.matches) == 0 and r.scores.shape == (0,)


def test_sample_returns_the_most_confident_matches_normalised():
    model = XFeatStar(pretrained=False, num_matches=2)
    pred = {
        "keypoints0": torch.tensor([[0.0, 0.0], [9.0, 4.0], [4.5, 2.0]]),
        "keypoints1": torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]),
        "confidence": torch.tensor([0.3, 0.9, 0.5]),
        "batch_indexes": torch.zeros(3, dtype=torch.long),
        "image_size0": (10, 5),
        "image_size1": (4, 4),
    }
    m, c = model.sample(pred)
    assert c.tolist() == pytest.approx([0.9, 0.5])
    # pixel centres at integers: x = 9 of a 10-px-wide image is at (9.5 / 10)·2 − 1 = 0.9
    torch.testing.assert_close(m[0], torch.tensor([0.9, 0.8, 0.25, 0.25]))
    assert len(model.sample(pred, num=None)[0]) == 2 and len(model.sample(pred, num=3)[0]) == 3
