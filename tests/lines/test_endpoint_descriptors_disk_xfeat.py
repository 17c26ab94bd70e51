"""DISK and XFeat describe GlueStick's line end points through their given-points path: at their
own keypoints it reproduces their descriptors exactly, and `xfeat+lsd` + GlueStick matches lines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tiepoint.models import get_model

from .test_hpatches_lines import HS, _line_image, write_identity_gluestick


@pytest.mark.parametrize(
    ("name", "weights", "size", "conf"),
    [
        ("disk", "disk-depth", (200, 150), {}),  # padded to /16
        ("xfeat", "xfeat", (200, 150), {"input_fit": "resize"}),  # resized to /32: scaled back
        ("xfeat", "xfeat", (200, 150), {"input_fit": "pad"}),
    ],
)
def test_given_points_reproduce_own_descriptors(name, weights, size, conf, official_weights):
    official_weights(weights)
    ext = get_model(
        "extractor",
        {"name": f"{name}+lsd", "max_num_keypoints": 64, "endpoint_descriptors": True, **conf},
    ).eval()
    img = cv2.resize(_line_image(), size)
    image = torch.from_numpy(img / 255.0).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        pred = ext({"image": image})
        kp = pred["keypoints"][0, :40]
        ld = ext.describe_endpoints({"image": image}, kp.view(1, 20, 2, 2))[0]
    assert len(pred["lines"][0]) > 3
    assert pred["line_descriptors"].shape[-2:] == (2, ext.descriptor_dim)
    torch.testing.assert_close(ld.flatten(0, 1), pred["descriptors"][0, :40], atol=1e-5, rtol=0)


def test_xfeat_lsd_gluestick_matches_lines(tmp_path, official_weights):
    import tiepoint
    from tiepoint.geometry.lines import line_match_error

    official_weights("xfeat")
    ckpt = write_identity_gluestick(tmp_path / "gs64.tar", dim=64)  # XFeat: 64-d
    img = _line_image()
    H = HS[1]
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "b.png"), cv2.warpPerspective(img, H, img.shape[1::-1]))
    pipe = {
        "extractor": {
            "name": "xfeat+lsd",
            "max_num_keypoints": 512,
            "lines": {"max_num_lines": 40},
            "endpoint_descriptors": True,
        },
        "matcher": {"name": "gluestick"},
    }
    r = tiepoint.match(tmp_path / "a.png", tmp_path / "b.png", pipeline=pipe, weights=str(ckpt))
    lm = r.line_matches
    err = line_match_error(r.lines0[lm[:, 0]], r.lines1[lm[:, 1]], H)
    assert len(lm) >= 10 and (err < 1.5).mean() > 0.8, (len(lm), np.round(err, 2))


def test_disk_between_pixels_is_the_bilinear_dense_map(official_weights):
    """Off-pixel end points: the sparse per-pixel descriptors interpolated equal kornia's dense
    descriptor map sampled bilinearly (an independent path through the whole U-Net)."""
    import torch.nn.functional as F

    official_weights("disk-depth")
    ext = get_model("extractor", {"name": "disk+lsd", "endpoint_descriptors": True}).eval()
    img = cv2.resize(_line_image(), (96, 64))
    image = torch.from_numpy(img / 255.0).float().permute(2, 0, 1)[None]
    pts = torch.tensor([[[10.3, 20.7], [50.5, 33.25], [0.0, 0.0], [95.0, 63.0], [94.6, 7.1]]])
    with torch.no_grad():
        got = ext.points({"image": image, "keypoints": pts})["descriptors"][0]
        _, dense = ext.points.net.heatmap_and_dense_descriptors(image)  # 96×64: no padding
    grid = pts / torch.tensor([95.0, 63.0]) * 2 - 1
    want = F.grid_sample(dense, grid[:, :, None], "bilinear", align_corners=True)[0, :, :, 0].T
    torch.testing.assert_close(got, F.normalize(want, dim=-1), atol=1e-5, rtol=0)
