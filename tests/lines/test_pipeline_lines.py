"""The training pipeline carries lines (fixed count, `valid_lines`) and labels them (gt_line_*)."""

from __future__ import annotations

import numpy as np
import torch

from tiepoint.models.two_view_pipeline import TwoViewPipeline

from .test_lsd import rectangle


def test_pipeline_lines_and_line_ground_truth():
    model = TwoViewPipeline(
        {
            "extractor": {"name": "sift+lsd", "max_num_keypoints": 32},
            "matcher": {"name": "nearest_neighbor"},
            "num_lines": 8,
        }
    )
    img = rectangle()
    shifted = np.roll(img, (5, 7), axis=(0, 1))  # image 1 = image 0 moved by (7, 5)
    t = lambda a: torch.from_numpy(a).float()[None, None] / 255
    H = torch.tensor([[1.0, 0, 7], [0, 1, 5], [0, 0, 1]])[None]
    data = {"view0": {"image": t(img)}, "view1": {"image": t(shifted)}, "H_0to1": H}
    out = model(data)
    l0, l1 = out["lines0"], out["lines1"]
    assert l0.shape == (1, 8, 2, 2) and out["valid_lines0"].shape == (1, 8)
    n0, n1 = int(out["valid_lines0"].sum()), int(out["valid_lines1"].sum())
    assert 4 <= n0 < 8 and 4 <= n1 < 8  # the rectangle's sides, then padding
    m0 = out["gt_line_matches0"][0]
    assert (m0[n0:] == -2).all()  # padding is ignored
    for i in range(n0):  # every real line matched, to the same segment moved by (7, 5)
        j = int(m0[i])
        assert j >= 0
        moved = l0[0, i] + torch.tensor([7.0, 5.0])
        d = torch.minimum((moved - l1[0, j]).abs().max(), (moved.flip(0) - l1[0, j]).abs().max())
        assert d < 1.5
    # posed data without depth maps: lines cannot be decided
    K = torch.eye(3)[None]
    gt = model.ground_truth(
        {"T_0to1": torch.eye(4)[None], "K0": K, "K1": K},
        {"keypoints": out["keypoints0"], "lines": l0, "depth_keypoints": None},
        {"keypoints": out["keypoints1"], "lines": l1},
    )
    assert (gt["gt_line_matches0"] == -2).all()
