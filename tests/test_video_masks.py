"""`tiepoint video masks`: one mask PNG per frame, of the frame's size, resumable."""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest
import torch

from tiepoint.errors import DatasetError
from tiepoint.models.segmentation import ADE20K_CLASSES, SceneParser, Segmenter
from tiepoint.video.masks import register_masks, write_masks


def _frames(tmp_path, sizes=((37, 53), (40, 41), (29, 60))):
    rng = np.random.default_rng(0)
    d = tmp_path / "frames"
    d.mkdir()
    imgs = {}
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(d / f"{i * 10}.png"), img[..., ::-1])  # stored as RGB on disk
        imgs[f"{i * 10}"] = img
    (d / "notes.txt").write_text("not a frame")
    return d, imgs


class LeftHalf:
    """An independent 'segmenter': keeps the left half of each frame, counts its calls."""

    calls = 0

    def __call__(self, rgb):
        self.calls += 1
        mask = np.zeros(rgb.shape[:2], bool)
        mask[:, : rgb.shape[1] // 2] = True
        return mask


def test_write_masks_any_callable_and_resume(tmp_path):
    frames, imgs = _frames(tmp_path)
    seg = LeftHalf()
    paths = write_masks(frames, tmp_path / "masks", seg)
    assert [p.name for p in paths] == ["0.png", "10.png", "20.png"] and seg.calls == 3
    for p in paths:
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        h, w = imgs[p.stem].shape[:2]
        assert m.shape == (h, w) and m.dtype == np.uint8
        assert (m[:, : w // 2] == 255).all() and (m[:, w // 2 :] == 0).all()
    paths[1].unlink()  # a run killed before this frame: only it is redone
    write_masks(frames, tmp_path / "masks", seg)
    assert seg.calls == 4 and paths[1].is_file()


def test_write_masks_keeps_class_maps_and_reuses_them(tmp_path):
    frames, imgs = _frames(tmp_path)
    torch.manual_seed(0)
    seg = Segmenter(SceneParser(width=2), exclude=["wall"], long_side=32)
    write_masks(frames, tmp_path / "m", seg, ["wall"], keep_classes=True)
    for stem, img in imgs.items():
        cm = np.load(tmp_path / "m" / "classes" / f"{stem}.npy")
        assert (cm == seg.class_map(img)).all()
        top = ADE20K_CLASSES[int(np.bincount(cm.ravel()).argmax())]
        # a second run with another exclusion reuses the class map (no model: it would fail)
        out2 = tmp_path / f"m2_{stem}"
        (out2 / "classes").mkdir(parents=True)
        np.save(out2 / "classes" / f"{stem}.npy", cm)
        single = tmp_path / f"f_{stem}"
        single.mkdir()
        (single / f"{stem}.png").write_bytes((frames / f"{stem}.png").read_bytes())
        write_masks(single, out2, object(), [top], keep_classes=True)
        m = cv2.imread(str(out2 / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert m.shape == img.shape[:2]
        assert ((m == 255) == Segmenter(seg.model, exclude=[top], long_side=32)(img)).all()


def test_write_masks_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        write_masks(tmp_path / "nope", tmp_path / "m", LeftHalf())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no frame images"):
        write_masks(tmp_path / "empty", tmp_path / "m", LeftHalf())
    frames, _ = _frames(tmp_path)
    with pytest.raises(DatasetError, match=r"0\.png: the segmenter returned a \(2, 2\) mask"):
        write_masks(frames, tmp_path / "m", lambda rgb: np.ones((2, 2), bool))


def test_masks_command_with_official_files(tmp_path, monkeypatch):
    frames, imgs = _frames(tmp_path, sizes=((33, 47),))
    torch.manual_seed(0)
    model = SceneParser(width=2)  # files of a narrow model keep the test fast
    load = SceneParser.from_checkpoints.__func__
    monkeypatch.setattr(
        SceneParser, "from_checkpoints", classmethod(lambda cls, e, d: load(cls, e, d, width=2))
    )
    enc, dec = tmp_path / "encoder_epoch_20.pth", tmp_path / "decoder_epoch_20.pth"
    torch.save(model.encoder.state_dict(), enc)
    torch.save(model.decoder.state_dict(), dec)
    parser = argparse.ArgumentParser()
    register_masks(parser.add_subparsers())
    out = tmp_path / "masks"
    args = parser.parse_args(
        ["masks", str(frames), str(out), "--encoder", str(enc), "--decoder", str(dec)]
        + ["--exclude", "person,sky,car", "--device", "cpu"]
    )
    assert args.func(args) == 0
    m = cv2.imread(str(out / "0.png"), cv2.IMREAD_UNCHANGED)
    assert ((m == 255) == Segmenter(model, device="cpu")(imgs["0"])).all()
    with pytest.raises(Exception, match="did you mean 'person'"):
        args = parser.parse_args(["masks", str(frames), str(out), "--exclude", "persn"])
        args.encoder, args.decoder = enc, dec
        args.func(args)
