"""GlueStick on LSD lines: endpoint descriptors from the point extractor, the `aliked+lsd+gluestick`
pipeline through `tiepoint.match`, and two trainer steps of the GlueStick homography preset."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tiepoint.errors import ConfigError
from tiepoint.models import get_model


def _photo(data_dir, seq="oxford_boat", i=1, size=(160, 120)):
    from PIL import Image

    im = Image.open(data_dir / "homography" / seq / f"img{i}.png").convert("L").resize(size)
    return torch.from_numpy(np.asarray(im, np.float32) / 255)[None, None]


def _bilinear(fmap: np.ndarray, u: float, v: float) -> np.ndarray:
    """Hand bilinear interpolation of (C,h,w) at cell coordinates (u, v), clamped to the border."""
    h, w = fmap.shape[1:]
    u, v = min(max(u, 0.0), w - 1.0), min(max(v, 0.0), h - 1.0)
    x0, y0 = int(np.floor(u)), int(np.floor(v))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    a, b = u - x0, v - y0
    return (
        (1 - a) * (1 - b) * fmap[:, y0, x0]
        + a * (1 - b) * fmap[:, y0, x1]
        + (1 - a) * b * fmap[:, y1, x0]
        + a * b * fmap[:, y1, x1]
    )


def test_superpoint_endpoint_descriptors_are_the_dense_map_at_the_endpoints(data_dir, tmp_path):
    from tiepoint.models.extractors.superpoint import SuperPointNet

    torch.manual_seed(0)
    path = tmp_path / "sp_random.pth"  # random SuperPoint: the wiring, not the weights, is tested
    torch.save(SuperPointNet(256).state_dict(), path)
    ext = get_model(
        "extractor",
        {
            "name": "superpoint+lsd",
            "weights": str(path),
            "max_num_keypoints": 64,
            "endpoint_descriptors": True,
        },
    ).eval()
    image = _photo(data_dir)
    with torch.no_grad():
        pred = ext({"image": image})
        _, dense = ext.points.net(image)  # 160×120 is already a multiple of 8
    lines, ld = pred["lines"][0], pred["line_descriptors"][0]
    assert len(lines) > 10 and ld.shape == (len(lines), 2, 256)
    dense = torch.nn.functional.normalize(dense, dim=1)[0].numpy()
    for li in range(0, len(lines), 3):
        for e in range(2):
            x, y = lines[li, e].tolist()  # pixel centre of cell j at 8j + 3.5
            want = _bilinear(dense, (x + 0.5) / 8 - 0.5, (y + 0.5) / 8 - 0.5)
            want /= np.linalg.norm(want)
            np.testing.assert_allclose(ld[li, e].numpy(), want, atol=1e-5)


def test_aliked_endpoint_descriptors_match_its_keypoint_descriptors(data_dir, official_weights):
    official_weights("aliked-n16")
    ext = get_model(
        "extractor",
        {"name": "aliked+lsd", "max_num_keypoints": 32, "endpoint_descriptors": True},
    ).eval()
    image = _photo(data_dir).expand(-1, 3, -1, -1)
    with torch.no_grad():
        pred = ext({"image": image})
        kp = pred["keypoints"][0, :20]
        # segments whose end points are detected keypoints get those keypoints' descriptors
        ld = ext.describe_endpoints({"image": image}, kp.view(1, 10, 2, 2))[0]
    assert pred["line_descriptors"].shape[-2:] == (2, 128)
    torch.testing.assert_close(ld.flatten(0, 1), pred["descriptors"][0, :20], atol=1e-5, rtol=0)


def test_sift_has_no_endpoint_descriptors():
    with pytest.raises(ConfigError, match="sift cannot describe given points"):
        get_model("extractor", {"name": "sift+lsd", "endpoint_descriptors": True})


def test_aliked_lsd_gluestick_pipeline(data_dir, official_weights, tmp_path):
    import tiepoint
    from tiepoint.models.matchers.gluestick import GlueStick

    official_weights("aliked-n16")
    with pytest.raises(ConfigError, match="no official weights"):
        tiepoint.Matcher("aliked+lsd+gluestick", device="cpu")
    torch.manual_seed(0)
    gs = GlueStick({"descriptor_dim": 128, "pretrained": False})
    path = tmp_path / "gluestick_128.tar"  # the official file's layout, random values
    torch.save({"model": {f"matcher.{k}": v for k, v in gs.state_dict().items()}}, path)
    seq = data_dir / "homography" / "oxford_boat"
    r = tiepoint.match(
        seq / "img1.png",
        seq / "img2.png",
        pipeline="aliked+lsd+gluestick",
        device="cpu",
        weights=str(path),
        overrides=[
            "preprocessing.resize=320",
            "extractor.max_num_keypoints=256",
            "extractor.lines.max_num_lines=60",
        ],
    )
    l0, l1, lm = r.lines0, r.lines1, r.line_matches
    assert l0.shape[1:] == (2, 2) and l1.shape[1:] == (2, 2) and len(l0) > 10 and len(l1) > 10
    assert lm.ndim == 2 and lm.shape[1] == 2 and len(r.line_scores) == len(lm)
    if len(lm):
        assert lm[:, 0].max() < len(l0) and lm[:, 1].max() < len(l1) and lm.min() >= 0
        assert len(np.unique(lm[:, 0])) == len(lm) and len(np.unique(lm[:, 1])) == len(lm)
    assert r.matches.shape[1] == 2 and r.matches[:, 0].max(initial=0) < len(r.keypoints0)
    print(f"lines {len(l0)}/{len(l1)}, line matches {len(lm)}, point matches {len(r.matches)}")
    # Features carry the endpoint descriptors (an extra) through the stored form to the matcher
    m = tiepoint.Matcher(
        "aliked+lsd+gluestick",
        device="cpu",
        weights=str(path),
        overrides=[
            "preprocessing.resize=320",
            "extractor.max_num_keypoints=256",
            "extractor.lines.max_num_lines=60",
        ],
    )
    f0, f1 = m.extract(seq / "img1.png"), m.extract(seq / "img2.png")
    assert f0.extra["line_descriptors"].shape == (len(f0.lines), 2, 128)
    f0 = tiepoint.Features.from_arrays(f0.to_arrays())
    np.testing.assert_array_equal(m.match_features(f0, f1).line_matches, lm)


def test_gluestick_homography_preset_trains_two_steps(data_dir, official_weights, tmp_path):
    from tiepoint.training import build_conf
    from tiepoint.training.trainer import Trainer

    official_weights("aliked-n16")
    photos = tmp_path / "photos"
    photos.mkdir()
    for seq in ("oxford_boat", "oxford_leuven"):
        for i in (1, 3):
            shutil.copy(data_dir / "homography" / seq / f"img{i}.png", photos / f"{seq}_{i}.png")
    c = build_conf(
        "superpoint+lsd+gluestick_homography",
        OmegaConf.create(
            {
                "data": {
                    "data_dir": str(photos),
                    "train_size": 4,
                    "val_size": 1,
                    "val_pairs": 1,
                    "batch_size": 2,
                    "num_workers": 0,
                    "homography": {"patch_shape": [160, 120]},
                },
                "model": {
                    "extractor": {
                        "name": "aliked+lsd",
                        "max_num_keypoints": 64,
                        "lines": {"max_num_lines": 20},
                    },
                    "num_lines": 20,
                    "matcher": {
                        "descriptor_dim": 128,
                        "keypoint_encoder": [16],
                        "gnn_layers": ["self", "cross"] * 3,
                        "checkpointed": False,
                    },
                },
                "train": {
                    "epochs": 1,
                    "max_iterations": 2,
                    "eval_every_iter": 0,
                    "eval_at_start": False,
                    "save_every_iter": 0,
                },
            }
        ),
    )
    t = Trainer(tmp_path / "run", c, progress=False)
    outs, step = [], t.train_step
    t.train_step = lambda batch: outs.append(step(batch)) or outs[-1]
    t.run()
    hist = dict(t.loss_history)
    assert len(hist) == 2 and all(np.isfinite(v) for v in hist.values()), hist
    # the line term is in the loss: endpoint descriptors reached GlueStick through the pipeline
    assert all(np.isfinite(o["loss/line_nll"]) and o["loss/line_nll"] > 0 for o in outs), outs
    print({k: round(outs[-1][k], 4) for k in ("loss/total", "loss/line_nll")})
