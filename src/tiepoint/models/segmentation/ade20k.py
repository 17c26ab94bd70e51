"""ADE20K-150 scene parsing (CSAIL `resnet50dilated` + `ppm_deepsup`), the segmenter GIM masks with.

GIM (`video_preprocessor.py`) builds CSAIL's `ModelBuilder.build_encoder('resnet50dilated',
fc_dim=2048)` + `build_decoder('ppm_deepsup', fc_dim=2048, num_class=150, use_softmax=True)`
with `weights/{encoder,decoder}_epoch_20.pth`, and segments each frame once:

- input: the RGB frame, shrunk with `cv2.INTER_AREA` so that its long side is at most 720
  (`read_deeplab_image(size=720)`: the short side is `int(720 * short / long)`), /255, then
  ImageNet mean/std; a single scale (no multi-scale averaging, no flip);
- output: logits at stride 8, bilinearly upsampled to the input size (`segSize`), softmax, argmax
  → a uint8 class map at the inference size (GIM caches it as `segment/<vid>/<frame>.npy`);
- mask: the class map resized to the frame with `cv2.INTER_NEAREST`, True wherever the class is
  none of `exclude = ['person', 'sky', 'car']` (looked up by name).

This module re-implements the network in plain torch with the official checkpoints' key layout
(two files) and loads them strictly (CSAIL/GIM load with `strict=False`, which would silently
keep random weights for a misnamed key).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...config import unknown_name
from ...errors import ConfigError, ImageError, WeightsError
from ..backbones.resnet_dilated import RESNET50_LAYERS, DilatedResNet
from .classes import ADE20K_CLASSES

ENCODER_WEIGHTS = "ade20k-resnet50dilated-ppm_deepsup-encoder"
DECODER_WEIGHTS = "ade20k-resnet50dilated-ppm_deepsup-decoder"
GIM_EXCLUDE = ("person", "sky", "car")
GIM_LONG_SIDE = 720
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class PPMDeepSup(nn.Module):
    """Pyramid pooling head (PSPNet) with CSAIL's deep-supervision branch on layer3.

    Each pyramid branch is AdaptiveAvgPool(s) → 1×1 conv → BN → ReLU, upsampled bilinearly
    (align_corners=False) back to the layer4 size and concatenated with layer4; then 3×3 conv →
    BN → ReLU → Dropout → 1×1 conv to classes. Sequential indices match CSAIL's keys
    (`ppm.{i}.1`, `conv_last.{0,1,4}`, `cbr_deepsup.{0,1}`, `conv_last_deepsup`).
    """

    def __init__(
        self,
        num_class: int = 150,
        fc_dim: int = 2048,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512,
    ):
        super().__init__()
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), *_conv_bn_relu(fc_dim, channels, 1))
            for s in pool_scales
        )
        self.cbr_deepsup = nn.Sequential(*_conv_bn_relu(fc_dim // 2, fc_dim // 4, 3))
        self.conv_last = nn.Sequential(
            *_conv_bn_relu(fc_dim + len(pool_scales) * channels, channels, 3),
            nn.Dropout2d(0.1),
            nn.Conv2d(channels, num_class, 1),
        )
        self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_class, 1)
        self.dropout_deepsup = nn.Dropout2d(0.1)

    def pyramid(self, conv5: torch.Tensor) -> torch.Tensor:
        """layer4 features concatenated with every pooled-and-upsampled branch."""
        size = conv5.shape[-2:]
        out = [conv5]
        for branch in self.ppm:
            out.append(F.interpolate(branch(conv5), size, mode="bilinear", align_corners=False))
        return torch.cat(out, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Class logits at the layer4 resolution (stride 8)."""
        return self.conv_last(self.pyramid(feats[-1]))

    def deepsup(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The auxiliary layer3 logits (used by CSAIL's training loss only)."""
        return self.conv_last_deepsup(self.dropout_deepsup(self.cbr_deepsup(feats[-2])))


class SceneParser(nn.Module):
    """`resnet50dilated` encoder + `ppm_deepsup` decoder; `forward` is CSAIL's inference path."""

    def __init__(self, num_class: int = 150, width: int = 64, layers=RESNET50_LAYERS):
        super().__init__()
        self.encoder = DilatedResNet(layers, dilate_scale=8, width=width)
        self.decoder = PPMDeepSup(num_class, fc_dim=self.encoder.out_channels[-1])
        self.eval()

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised B×3×H×W → B×C×h×w logits at stride 8."""
        return self.decoder(self.encoder(image))

    def forward(self, image: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Class probabilities at `size` (default: the input size), as `use_softmax=True`."""
        x = self.logits(image)
        x = F.interpolate(x, size or image.shape[-2:], mode="bilinear", align_corners=False)
        return x.softmax(1)

    @classmethod
    def from_checkpoints(
        cls,
        encoder: str | os.PathLike = ENCODER_WEIGHTS,
        decoder: str | os.PathLike = DECODER_WEIGHTS,
        **kwargs,
    ) -> SceneParser:
        """The released model from its two files (registered weight names or paths); `kwargs`
        go to the constructor (e.g. a small `width` for the files of a test model)."""
        from ...weights import load_torch, resolve

        enc, dec = resolve(encoder), resolve(decoder)
        return load_official(cls(**kwargs), load_torch(enc), load_torch(dec), (str(enc), str(dec)))


# training-only buffers of CSAIL's SynchronizedBatchNorm2d (its running statistics are saved
# alongside); accepted next to a BatchNorm and dropped
_SYNC_BN_EXTRA = ("_tmp_running_mean", "_tmp_running_var", "_running_iter")


def _check_part(module: nn.Module, sd: dict, name: str, part: str) -> dict:
    """Strict key/shape check; `num_batches_tracked` may be absent (older torch, unused here)."""
    if not isinstance(sd, dict):
        raise WeightsError(f"{name}: not a state dict ({type(sd).__name__}) for the {part}")
    own = module.state_dict()
    for key in sd:
        prefix, _, leaf = key.rpartition(".")
        if leaf in _SYNC_BN_EXTRA and f"{prefix}.running_mean" in own:
            continue
        if key not in own:
            raise WeightsError(f"{name}: unexpected key '{key}' for the ADE20K {part}")
    out = {}
    for key, ref in own.items():
        if key not in sd:
            if key.endswith("num_batches_tracked"):
                out[key] = ref
                continue
            raise WeightsError(f"{name}: missing key '{key}' of the ADE20K {part}")
        if tuple(sd[key].shape) != tuple(ref.shape):
            raise WeightsError(
                f"{name}: key '{key}' has shape {tuple(sd[key].shape)}, the {part} expects "
                f"{tuple(ref.shape)}"
            )
        out[key] = sd[key]
    return out


def load_official(
    model: SceneParser,
    encoder_sd: dict,
    decoder_sd: dict,
    names: tuple[str, str] = ("encoder checkpoint", "decoder checkpoint"),
) -> SceneParser:
    """Load CSAIL's `encoder_epoch_20.pth` / `decoder_epoch_20.pth` state dicts, strictly."""
    model.encoder.load_state_dict(_check_part(model.encoder, encoder_sd, names[0], "encoder"))
    model.decoder.load_state_dict(_check_part(model.decoder, decoder_sd, names[1], "decoder"))
    return model.eval()


# ------------------------------------------------------------------------------------ classes
def class_ids(names: Iterable[str]) -> list[int]:
    """Output channels of ADE20K class names (GIM's naming, see `classes.py`)."""
    ids = []
    for name in names:
        if name not in ADE20K_CLASSES:
            raise unknown_name("ADE20K class", name, ADE20K_CLASSES, ConfigError)
        ids.append(ADE20K_CLASSES.index(name))
    return ids


def exclusion_mask(
    class_map: np.ndarray, exclude: Iterable[str] = GIM_EXCLUDE, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Boolean H×W mask, True where the class is not excluded; `size` = (W, H) of the frame, the
    class map being resized to it with nearest neighbour first (as GIM does)."""
    ids = class_ids(exclude)
    class_map = np.asarray(class_map)
    if size is not None and tuple(class_map.shape[:2]) != (size[1], size[0]):
        class_map = cv2.resize(class_map, tuple(size), interpolation=cv2.INTER_NEAREST)
    return ~np.isin(class_map, ids)


# ------------------------------------------------------------------------------------ input
def inference_size(w: int, h: int, long_side: int = GIM_LONG_SIDE) -> tuple[int, int]:
    """(W, H) GIM segments at: unchanged up to `long_side`, else long side = `long_side` and the
    short side truncated (`int(size * short / long)`)."""
    if max(w, h) <= long_side:
        return w, h
    if w > h:
        return long_side, int(long_side * h / w)
    return int(long_side * w / h), long_side


def to_rgb_uint8(image) -> np.ndarray:
    """An image path or array (gray/RGB/RGBA, uint8 or float in [0, 1]) as H×W×3 uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        from ...images import read_image

        image, _ = read_image(Path(image))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected an H×W×3 RGB image, got an array of shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, 2)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:  # float images in [0, 1] (tiepoint.images.read_image)
        arr = np.clip(np.round(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def preprocess(rgb: np.ndarray, long_side: int = GIM_LONG_SIDE) -> torch.Tensor:
    """GIM's `read_segmentation_image`: INTER_AREA shrink, /255, ImageNet mean/std → 1×3×h×w."""
    h, w = rgb.shape[:2]
    size = inference_size(w, h, long_side)
    if size != (w, h):
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(rgb).float().div(255).permute(2, 0, 1)
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return x[None]


# ------------------------------------------------------------------------------------ segmenter
class Segmenter:
    """image → boolean keep-mask at the image size (True where usable), GIM's masking.

    A plain callable, so the video labelers take it wherever they take any `image -> mask`
    function. `image` is an H×W×3 RGB array (uint8, or float in [0, 1]) or an image path.
    `model` defaults to the released checkpoints (`SceneParser.from_checkpoints`); `device`
    defaults to CUDA when available.
    """

    def __init__(
        self,
        model: SceneParser | None = None,
        exclude: Iterable[str] = GIM_EXCLUDE,
        long_side: int = GIM_LONG_SIDE,
        device: str | torch.device | None = None,
    ):
        self.exclude = tuple(exclude)
        class_ids(self.exclude)  # fail now on a misspelt class, not on the first frame
        self.long_side = int(long_side)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = (model or SceneParser.from_checkpoints()).to(self.device).eval()

    @torch.no_grad()
    def class_map(self, image) -> np.ndarray:
        """uint8 argmax class map at the inference size (what GIM caches per frame)."""
        x = preprocess(to_rgb_uint8(image), self.long_side).to(self.device)
        return self.model(x).argmax(1)[0].to(torch.uint8).cpu().numpy()

    def mask(self, image) -> np.ndarray:
        rgb = to_rgb_uint8(image)
        return exclusion_mask(self.class_map(rgb), self.exclude, (rgb.shape[1], rgb.shape[0]))

    __call__ = mask
