"""BaseModel: the one contract every extractor, matcher and dense model follows.

A model is a small class with a `default_conf` (merged over its parents' defaults; unknown keys are
errors), the data keys it requires, `_init(conf)`, `_forward(data)` and optionally
`loss(pred, data) -> (losses, metrics)` with `losses["total"]` of shape (B,).
Data crosses module boundaries as flat dicts with the vocabulary of `docs` / README
(`image`, `keypoints0`, `descriptors0`, `matches0`, ...).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config import class_default_conf, lookup, merge_strict
from ..errors import ConfigError, ImageError, WeightsError


class BaseModel(nn.Module):
    base_default_conf: ClassVar[dict] = {"name": None, "trainable": True}
    default_conf: ClassVar[dict] = {}
    required_data_keys: ClassVar[list[str]] = []

    @classmethod
    def full_default_conf(cls) -> DictConfig:
        """Defaults of this class merged over those of every parent (parents first)."""
        return class_default_conf(cls)

    @classmethod
    def preset_conf(cls, conf: dict | DictConfig | None = None) -> DictConfig:
        """The defaults that `conf` is merged over: the class defaults, plus whatever preset `conf`
        selects (e.g. LightGlue's `features`). Only top-level keys of `conf` are read."""
        return cls.full_default_conf()

    @classmethod
    def build_conf(
        cls, conf: dict | DictConfig | None = None, overrides: dict | None = None, where: str = ""
    ) -> DictConfig:
        """The full config `cls(conf, **overrides)` runs with: presets ⊕ conf ⊕ overrides, strictly."""
        selection = {**(conf or {}), **(overrides or {})}  # top level is enough to pick a preset
        return merge_strict(
            cls.preset_conf(selection), conf, overrides or None, where=where or cls.__name__
        )

    @classmethod
    def weight_names(cls, conf: dict | DictConfig | None = None) -> list[str]:
        """Registered weight names (or paths) that building this model from `conf` loads."""
        weights = cls.build_conf(conf).get("weights")
        return [weights] if weights else []

    @classmethod
    def without_own_weights(cls, conf: dict | DictConfig) -> DictConfig:
        """`conf` loading no weights of its own (neither `weights` nor the preset's official ones):
        for building a model into which given weights are loaded next."""
        known = cls.full_default_conf()
        off = {k: v for k, v in (("weights", None), ("pretrained", False)) if k in known}
        plain = OmegaConf.to_container(conf) if isinstance(conf, DictConfig) else dict(conf)
        return OmegaConf.merge(plain, off)  # a plain copy: `conf` may be a struct missing the keys

    def __init__(self, conf: dict | DictConfig | None = None, **overrides: Any):
        super().__init__()
        self.conf = conf = self.build_conf(conf, overrides)
        OmegaConf.set_readonly(conf, True)
        self._init(conf)
        if not conf.trainable:
            for p in self.parameters():
                p.requires_grad_(False)

    def _init(self, conf: DictConfig) -> None:
        raise NotImplementedError

    def _forward(self, data: dict) -> dict:
        raise NotImplementedError

    def forward(self, data: dict) -> dict:
        missing = [k for k in self.required_data_keys if k not in data]
        if missing:
            raise ConfigError(
                f"{type(self).__name__} needs input keys {missing}; got {sorted(data)}"
            )
        return self._forward(data)

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        raise NotImplementedError(f"{type(self).__name__} has no training loss")

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


def state_mismatch(own: dict, state: dict, expected: set[str] | None = None) -> str | None:
    """What keeps `state` from loading into a module whose state dict is `own` (None: it fits).

    `expected` are the keys the file must provide (default: all of `own`).
    """
    missing = sorted((set(own) if expected is None else expected) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        )
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    return "; ".join(parts) or None


def load_state_strict(module: nn.Module, state, source, what: str) -> None:
    """Load `state` into `module`, or raise one WeightsError line saying what does not fit."""
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: not a {what} state dict")
    problem = state_mismatch(module.state_dict(), state)
    if problem:
        raise WeightsError(f"{source}: weights do not fit this {what} ({problem})")
    module.load_state_dict(state, strict=True)


def fold_batch_norm(conv: nn.Module, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv (`weight`, `bias` or None) → eval-mode BatchNorm (affine or not) as one conv's
    (weight, bias): one pass over the map less."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    bias = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    bias = bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), bias + bn.bias if bn.affine else bias


def conv_gray(x: torch.Tensor, conv: nn.Conv2d, weight=None, bias=None) -> torch.Tensor:
    """`conv` (or its `weight`, `bias`) applied to a one-channel image x (B,1,H,W), equal to
    F.conv2d. On CPU the image and the kernel get two zero channels and channels-last layout:
    oneDNN has no fast kernel for a single input channel, and the padded convolution is exactly the
    same sum (SuperPoint's 1→64 first layer at 1024×736: 136 → 62 ms, the network 1.29 → 0.94 s;
    XFeat's 1→4: 16 → 3 ms). Left as is on other devices and in ONNX export."""
    weight = conv.weight if weight is None else weight
    bias = conv.bias if bias is None else bias
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    if x.device.type != "cpu" or x.shape[1] != 1 or torch.onnx.is_in_onnx_export():
        return torch.nn.functional.conv2d(x, weight, bias, *args)
    x3 = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 2)).contiguous(
        memory_format=torch.channels_last
    )
    return torch.nn.functional.conv2d(
        x3, torch.nn.functional.pad(weight, (0, 0, 0, 0, 0, 2)), bias, *args
    )


def no_matches(b: int, m: int, n: int, device, prefix: str = "") -> dict:
    """A matcher's output for a pair with nothing matched: `{prefix}matches0/1` all −1 and
    `{prefix}matching_scores0/1` zero, for b pairs of m and n features (prefix "line_": lines)."""
    return {
        f"{prefix}matches0": torch.full((b, m), -1, dtype=torch.long, device=device),
        f"{prefix}matches1": torch.full((b, n), -1, dtype=torch.long, device=device),
        f"{prefix}matching_scores0": torch.zeros((b, m), device=device),
        f"{prefix}matching_scores1": torch.zeros((b, n), device=device),
    }


def stack_keypoint_sets(per_image: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict:
    """Batch per-image (keypoints, scores, descriptors); shorter sets get zero-score padding at (0, 0)."""
    n = max(k.shape[0] for k, _, _ in per_image)
    out = {"keypoints": [], "keypoint_scores": [], "descriptors": []}
    for k, s, d in per_image:
        pad = n - k.shape[0]
        out["keypoints"].append(torch.nn.functional.pad(k, (0, 0, 0, pad)))
        out["keypoint_scores"].append(torch.nn.functional.pad(s, (0, pad)))
        out["descriptors"].append(torch.nn.functional.pad(d, (0, 0, 0, pad)))
    return {key: torch.stack(v) for key, v in out.items()}


class Extractor(BaseModel):
    """Image → keypoints (B,N,2) in input pixels (centres at integers), keypoint_scores, descriptors."""

    def forward(self, data: dict) -> dict:
        image = data.get("image")
        if image is not None and (image.ndim != 4 or image.shape[1] not in (1, 3)):
            raise ImageError(
                f"{type(self).__name__} expects an image of shape (B, 1|3, H, W), got {tuple(image.shape)}"
            )
        return super().forward(data)

    base_default_conf = {
        "name": None,
        "trainable": False,
        "max_num_keypoints": 2048,
        "detection_threshold": None,
    }
    required_data_keys = ["image"]
    grayscale: ClassVar[bool] = False  # whether the network wants a 1-channel image
    descriptor_dim: ClassVar[int] = 0


class FeatureMatcher(BaseModel):
    """Two sets of local features → `matches0/1` (B,N) with −1 for unmatched, `matching_scores0/1`.

    (Not to be confused with the public `tiepoint.Matcher`, which pairs an extractor and one of these.)
    """

    base_default_conf = {"name": None, "trainable": True}
    required_data_keys = ["keypoints0", "keypoints1", "descriptors0", "descriptors1"]
    # settings that only steer inference: a checkpoint's training values never replace the asked ones
    inference_keys: ClassVar[tuple[str, ...]] = ("filter_threshold",)
    # named presets (LightGlue's `features`: settings for that extractor's descriptors; SuperGlue's
    # `preset`: indoor/outdoor); a preset's `weights` names its official file, never merged
    feature_presets: ClassVar[dict[str, dict]] = {}
    preset_key: ClassVar[str] = "features"  # the conf key that names a preset

    @classmethod
    def preset_conf(cls, conf: dict | DictConfig | None = None) -> DictConfig:
        """Defaults with the preset named by `preset_key` applied (see `feature_presets`)."""
        defaults = cls.full_default_conf()
        name = (conf or {}).get(cls.preset_key)
        if name is None or not cls.feature_presets:
            return defaults
        preset = lookup(cls.feature_presets, name, f"{cls.__name__} {cls.preset_key}")
        return OmegaConf.merge(defaults, {k: v for k, v in preset.items() if k != "weights"})

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        """`weights` when given, else the official file of the named preset when `pretrained`."""
        conf = cls.build_conf(conf)
        if conf.get("weights") is not None:
            return [conf.weights]
        name = conf.get(cls.preset_key)
        if name is not None and conf.get("pretrained") and name in cls.feature_presets:
            official = cls.feature_presets[name].get("weights")
            return [official] if official else []
        return []

    @classmethod
    def conf_from_checkpoint(
        cls, trained_conf: dict | DictConfig, inference_conf: dict | DictConfig | None = None
    ) -> DictConfig:
        """The config to build before loading a training checkpoint of this class.

        `trained_conf` is the matcher config stored in the checkpoint. With `inference_conf=None` the
        model is rebuilt exactly as trained (resuming, fine-tuning, validating). Otherwise the
        architecture comes from the checkpoint and the inference-time settings (`inference_keys`)
        from `inference_conf` (the pipeline's config of this class, or `{}` for the defaults); the
        training-only `loss` section is dropped. Either way the model loads no weights of its own.
        """
        if inference_conf is None:
            return cls.without_own_weights(trained_conf)
        known = cls.full_default_conf()
        skip = ("weights", "pretrained", "loss", *cls.inference_keys)
        keep = {k: v for k, v in trained_conf.items() if k in known and k not in skip}
        base = {k: v for k, v in inference_conf.items() if k in known}
        return cls.without_own_weights(OmegaConf.merge(base, keep))


class DenseMatcher(BaseModel):
    """Two images → a dense warp of image 0 into image 1 and a per-pixel certainty.

    Input: `image0`, `image1` (B,3,H,W) float RGB in [0, 1] at any size (the model resizes and
    normalises internally as its config says; a 1-channel image is repeated to 3).
    `_forward` returns `warp` (B,H,W,4), rows (x0, y0, x1, y1) in normalised [-1, 1] coordinates
    (align_corners=False: −1 is the left edge of the left pixel), and `certainty` (B,H,W) in [0, 1],
    on the model's output grid. A `symmetric` model concatenates both directions along the width:
    (B,H,2W,4), the left half on image 0's grid, the right half on image 1's grid.
    A semi-dense model (LoFTR) returns matches instead of a warp and overrides `sample`.
    """

    base_default_conf = {
        "name": None,
        "trainable": True,
        "num_matches": 10000,  # default number of matches `sample` draws
        "sample_mode": "threshold_balanced",
        "sample_thresh": 0.05,
    }
    required_data_keys = ["image0", "image1"]
    symmetric: ClassVar[bool] = False
    # settings a pipeline chooses at inference, whatever the checkpoint was trained with (`symmetric`
    # too: training runs one direction, the weights serve both)
    inference_keys: ClassVar[tuple[str, ...]] = (
        "num_matches",
        "sample_mode",
        "sample_thresh",
        "symmetric",
    )
    inference_overrides: ClassVar[tuple[str, ...]] = ()  # trained value unless the pipeline sets it

    @classmethod
    def conf_from_checkpoint(
        cls, trained_conf: dict | DictConfig, inference_conf: dict | DictConfig | None = None
    ) -> DictConfig:
        """The config to build before loading a training checkpoint (`conf.model.dense`) of this
        class: with `inference_conf=None` exactly as trained (resuming, fine-tuning); otherwise the
        architecture and input settings as trained plus the `inference_keys` that `inference_conf`
        (the pipeline's section, as written) sets — the rest of them at the class defaults, not at
        their training values — and the `inference_overrides` it sets (else as trained).
        `trainable` and the training-only `loss` are dropped. Either way the model loads no
        weights of its own."""
        if inference_conf is None:
            return cls.without_own_weights(trained_conf)
        known = cls.full_default_conf()
        skip = ("weights", "pretrained", "trainable", "loss", *cls.inference_keys)
        keep = {k: v for k, v in trained_conf.items() if k in known and k not in skip}
        chosen = (*cls.inference_keys, *cls.inference_overrides)
        asked = {k: v for k, v in inference_conf.items() if k in chosen}
        return cls.without_own_weights(OmegaConf.merge(OmegaConf.create(keep), asked))

    @staticmethod
    def trained_conf(state) -> dict | None:
        """The dense model's config stored in a tiepoint training checkpoint (`conf.model.dense`),
        or None for official weights / a plain state dict."""
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            return None
        conf = ((state.get("conf") or {}).get("model") or {}).get("dense")
        return dict(conf) if isinstance(conf, dict) and conf.get("name") else None

    @classmethod
    def checkpoint_state(cls, state):
        """A loaded weights file → this model's state dict: a tiepoint training checkpoint's
        `dense.` weights (prefix dropped), else the file as is. Subclasses also convert their
        official layouts (DKM: GIM's `model.` prefix, the unused ResNet classifier)."""
        if isinstance(state, dict) and isinstance(state.get("model"), dict) and "conf" in state:
            return {k[6:]: v for k, v in state["model"].items() if k.startswith("dense.")}
        return state

    @classmethod
    def from_checkpoint(cls, name_or_path, inference_conf=None) -> DenseMatcher:
        """A model of the architecture a checkpoint was trained with, its weights loaded strictly.

        A tiepoint training checkpoint rebuilds its stored config (`conf_from_checkpoint`: the
        pipeline's `inference_conf` chooses the inference settings); official weights or a plain
        state dict go into `inference_conf`'s architecture. A checkpoint of another dense class, or
        weights that do not fit, raise one WeightsError line naming the file."""
        from .. import weights as weights_lib  # lazy: keeps `import tiepoint.models.base` light
        from . import model_class

        raw = weights_lib.load_state_dict(name_or_path)
        trained = cls.trained_conf(raw)
        default = {} if inference_conf is None else inference_conf
        if trained is not None:
            name = str(trained.get("name")).removeprefix("dense.")
            try:
                same = model_class("dense", name) is cls
            except ConfigError:
                same = False
            if not same:
                raise WeightsError(
                    f"{name_or_path}: a training checkpoint of dense model '{name}', "
                    f"not of {cls.__name__}"
                )
            conf = cls.conf_from_checkpoint(trained, default)
        else:
            conf = cls.without_own_weights(default)
        model = cls(conf)
        load_state_strict(model, cls.checkpoint_state(raw), name_or_path, cls.__name__)
        return model

    def load_checkpoint(self, name_or_path) -> None:
        """Load official weights, a file of ours, or the `dense.` weights of a training checkpoint
        strictly into this model's architecture (`from_checkpoint` rebuilds the architecture)."""
        from .. import weights as weights_lib

        state = self.checkpoint_state(weights_lib.load_state_dict(name_or_path))
        load_state_strict(self, state, name_or_path, type(self).__name__)

    def forward(self, data: dict) -> dict:
        for key in self.required_data_keys:
            image = data.get(key)
            if image is not None and (image.ndim != 4 or image.shape[1] not in (1, 3)):
                raise ImageError(
                    f"{type(self).__name__} expects {key} of shape (B, 3, H, W), got {tuple(image.shape)}"
                )
        return super().forward(data)

    def sample(self, pred: dict, num: int | None = None, generator=None):
        """Draw matches (K,4) normalised and their certainties (K,) from one pair's dense output
        (unbatched, or a batch of one) with the config's `sample_mode` / `sample_thresh`."""
        warp, certainty = pred["warp"], pred["certainty"]
        if warp.ndim == 4:
            if warp.shape[0] != 1:
                raise ConfigError(
                    f"{type(self).__name__}.sample takes one pair; got a batch of {warp.shape[0]} "
                    "(pass {'warp': warp[i], 'certainty': certainty[i]})"
                )
            warp, certainty = warp[0], certainty[0]
        from .dense.sampling import sample  # lazy: keeps `import tiepoint.models.base` light

        return sample(
            warp,
            certainty,
            int(num or self.conf.num_matches),
            mode=self.conf.sample_mode,
            thresh=self.conf.sample_thresh,
            generator=generator,
        )
