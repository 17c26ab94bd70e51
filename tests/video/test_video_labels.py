"""`video_labels`: GIM's augmentation of propagated labels, checked against the scene's truth."""

from __future__ import annotations

import numpy as np
import pytest

from tiepoint.datasets import get_dataset
from tiepoint.datasets.video_labels import dark_aug
from tiepoint.errors import DatasetError
from tiepoint.video.propagate import propagate_video

from .synthetic_labels import Scene, apply_h, gt_error, render_frames, write_gim_labels

VIDEO = "walk test"


@pytest.fixture(scope="module")
def video_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vl")
    pseudo = write_gim_labels(root / "pseudo", Scene(), VIDEO)
    s = propagate_video(pseudo, VIDEO, root / "prop", max_samples=3)
    render_frames(root / "frames" / VIDEO)
    return s["folder"].parent, root / "frames"


def make(video_data, **kw):
    prop, frames = video_data
    conf = {"name": "video_labels", "propagate_dir": str(prop), "frames_dir": str(frames),
            "img_size": [480, 480], "pad_labels": 4096, **kw}  # fmt: skip
    return get_dataset(conf).get_dataset("train")


def to_frames(item):
    """Augmented labels mapped back to frame pixels (undo pad/crop/rescale and image-1's H)."""
    k = int(item["num_labels"])
    lab = item["pseudo_labels"][:k].double().numpy()
    v0, v1 = item["view0"], item["view1"]
    right = apply_h(np.linalg.inv(item["H_aug"].double().numpy()), lab[:, 2:])
    p0 = (lab[:, :2] + v0["offset"].numpy()) / v0["scales"].numpy()
    p1 = (right + v1["offset"].numpy()) / v1["scales"].numpy()
    return np.c_[p0, p1]


def bilinear(img, p):
    import cv2

    m = cv2.remap(img, p[:, :1].astype(np.float32), p[:, 1:].astype(np.float32), cv2.INTER_LINEAR)
    return m[:, 0].astype(np.float64)


def test_augmented_labels_hit_the_same_content_and_the_truth(video_data):
    ds = make(video_data, dark_prob=0.0)
    assert len(ds) == 3
    angles = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            k = int(item["num_labels"])
            assert 64 <= k <= 2048 and item["pseudo_labels"][k:].abs().sum() == 0
            i0, i1 = map(int, item["name"].split("/")[1].split("_"))
            # geometry: back in frame pixels the labels obey the composed GT homography
            err = gt_error(to_frames(item), i0, i1)
            assert (err <= 3).mean() > 0.97
            # content: both augmented images show the same texture at each label
            lab = item["pseudo_labels"][:k].numpy()
            im0 = (item["view0"]["image"].permute(1, 2, 0).numpy() * 255).astype(np.float32)
            im1 = (item["view1"]["image"].permute(1, 2, 0).numpy() * 255).astype(np.float32)
            c0, c1 = bilinear(im0, lab[:, :2]), bilinear(im1, lab[:, 2:])
            same = np.median(np.abs(c0 - c1))
            shuffled = np.median(np.abs(c0 - c1[np.random.default_rng(0).permutation(k)]))
            assert same < 12 and shuffled > 2.5 * same
            H = item["H_aug"].numpy()
            angles.append(np.degrees(np.arctan2(H[1, 0] - H[2, 0] * H[1, 2], H[0, 0])))
    # full-rotation homographies on most draws (GIM: 90%, rotation U(-180, 180))
    assert max(abs(a) for a in angles) > 90


def test_items_are_reproducible_and_change_with_the_epoch(video_data):
    ds = make(video_data)
    a, b = ds[1], ds[1]
    assert (a["pseudo_labels"] == b["pseudo_labels"]).all()
    assert (a["view1"]["image"] == b["view1"]["image"]).all()
    ds.set_epoch(1)
    assert not (ds[1]["pseudo_labels"] == a["pseudo_labels"]).all()


def test_dark_aug_darkens_on_average_and_sometimes_does_nothing():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(60, 200, (48, 64, 3)).astype(np.uint8)
    outs = [dark_aug(img, rng) for _ in range(200)]
    same = np.mean([(o == img).all() for o in outs])
    assert 0.2 < same < 0.5  # compose p 0.75, brightness/contrast p 0.75 → ~0.3 unchanged
    assert np.mean([o.mean() for o in outs]) < img.mean() - 20


def test_missing_inputs_are_one_line_errors(video_data, tmp_path):
    prop, frames = video_data
    with pytest.raises(DatasetError, match="videos \\['nope'\\] not found"):
        get_dataset({"name": "video_labels", "propagate_dir": str(prop),
                     "frames_dir": str(frames), "train_videos": ["nope"]})  # fmt: skip
    ds = get_dataset({"name": "video_labels", "propagate_dir": str(prop),
                      "frames_dir": str(tmp_path)}).get_dataset("train")  # fmt: skip
    with pytest.raises(DatasetError, match="frame image not found"):
        ds[0]


def test_mixed_datasets_train_on_a_balanced_mixture(video_data):
    prop, frames = video_data
    part = {"name": "video_labels", "propagate_dir": str(prop), "frames_dir": str(frames),
            "img_size": [256, 256], "pad_labels": 2048}  # fmt: skip
    mixed = get_dataset({"name": "mixed", "datasets": {"a": part, "b": {**part, "seed": 5}},
                         "maxlen": 4, "batch_size": 2})  # fmt: skip
    loader = mixed.get_data_loader("train")
    assert len(loader.sampler) == 8 and len(loader) == 4
    idx = loader.sampler.indices()
    assert ((idx[0::2] < 3) & (idx[1::2] >= 3)).all()  # 3 items each, upsampled to 4, alternating
    batch = next(iter(loader))
    assert batch["pseudo_labels"].shape == (2, 2048, 4) and batch["zs"].all()
