"""The dilated ResNet encoder of CSAIL's scene-parsing models (`resnet50dilated`), in plain torch.

It is not torchvision's ResNet: the stem is three 3×3 convs (3→64 stride 2, 64→64, 64→128, each
with BN + ReLU, named `conv1..3`, `bn1..3`) before the max-pool, so layer1 starts from 128
channels. The "dilated" variant (`dilate_scale=8`) keeps stride 8: every stride-2 conv of layer3
and layer4 gets stride 1; in layer3 the first block's 3×3 conv keeps dilation 1 and the other
3×3 convs get dilation 2, in layer4 the first block's 3×3 conv gets dilation 2 and the others 4
(CSAIL's `ResnetDilated._nostride_dilate`). The state-dict keys are those of CSAIL's
`encoder_epoch_20.pth` (`conv1.weight`, ..., `layer4.2.bn3.running_var`; no `fc`).

`width` scales every channel count (64 is the real network); small widths exist for fast tests.
"""

from __future__ import annotations

import torch
from torch import nn

from .resnet import Bottleneck

RESNET50_LAYERS = (3, 4, 6, 3)


def _layer_dilations(dilate_scale: int) -> list[tuple[int, int, int]]:
    """Per layer (stride, first-block dilation, other-block dilation), as `_nostride_dilate`."""
    if dilate_scale == 8:
        return [(1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4)]
    if dilate_scale == 16:
        return [(1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2)]
    if dilate_scale == 32:  # the plain (undilated) `resnet50` encoder
        return [(1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1)]
    raise ValueError(f"dilate_scale must be 8, 16 or 32, got {dilate_scale}")


class DilatedResNet(nn.Module):
    """Deep-stem ResNet with output stride `dilate_scale`; `forward` returns [layer1..layer4]."""

    def __init__(
        self,
        layers: tuple[int, ...] = RESNET50_LAYERS,
        dilate_scale: int = 8,
        width: int = 64,
    ):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * w)
        self.relu3 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 2 * w
        for i, (n, (stride, first, rest)) in enumerate(
            zip(layers, _layer_dilations(dilate_scale)), start=1
        ):
            planes = w * 2 ** (i - 1)
            # the reference builds the layer with stride 2 and then removes it: the downsample
            # branch exists whenever the *original* stride or channel count asked for it
            down = i > 1 or inplanes != planes * 4
            blocks = [Bottleneck(inplanes, planes, stride, down, dilation=first)]
            inplanes = planes * 4
            blocks += [Bottleneck(inplanes, planes, dilation=rest) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.out_channels = [w * 4 * 2**i for i in range(4)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out
