"""ResNet-50 and ResNet-18 (He et al., 2016) in plain torch, with torchvision's exact state-dict
layout.

Written without importing torchvision so that the library does not depend on it, yet a
torchvision checkpoint (`conv1`, `bn1`, `layer1.0.conv1`, ..., `layer4.2.bn3`, `fc`) loads strictly.
The architecture follows torchvision's `resnet50` (v1.5: the stride-2 sits on the 3×3 conv of the
bottleneck). `features` returns the stride pyramid DKM uses: {1: input, 2: relu(bn1), 4: layer1,
8: layer2, 16: layer3, 32: layer4}. ResNet-18 (basic blocks, 64/64/128/256/512 channels) is the
light encoder of a width-reduced DKM (CPU training demonstrations).
"""

from __future__ import annotations

import torch
from torch import nn

RESNET50_LAYERS = (3, 4, 6, 3)
RESNET18_LAYERS = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual (torchvision's `BasicBlock`); the stride sits on conv1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: bool = False,
        dilation: int = 1,  # of the 3×3 conv (CSAIL's dilated encoder)
    ):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(inplanes, planes * self.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """torchvision-compatible ResNet-50. `with_fc=False` leaves out the classifier (DKM never uses
    it; its checkpoints carry it, GIM's drop it)."""

    block: type[nn.Module] = Bottleneck
    layers = RESNET50_LAYERS

    def __init__(self, with_fc: bool = True, num_classes: int = 1000):
        super().__init__()
        block = self.block
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), self.layers)):
            stride = 1 if i == 0 else 2
            # torchvision downsamples only where the shape changes (always, for bottlenecks)
            down = stride != 1 or inplanes != planes * block.expansion
            layer = [block(inplanes, planes, stride, downsample=down)]
            inplanes = planes * block.expansion
            layer += [block(inplanes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(inplanes, num_classes) if with_fc else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation (Kaiming-normal convs, unit BN; zero-init residual off)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @classmethod
    def channels(cls) -> dict[int, int]:
        """Channels of the `features` pyramid per stride."""
        e = cls.block.expansion
        return {1: 3, 2: 64, 4: 64 * e, 8: 128 * e, 16: 256 * e, 32: 512 * e}

    def features(self, x: torch.Tensor, max_stride: int = 32) -> dict[int, torch.Tensor]:
        """The stride pyramid {1, 2, 4, 8, 16, 32} up to `max_stride` (coarser levels are skipped)."""
        feats = {1: x}
        x = self.relu(self.bn1(self.conv1(x)))
        feats[2] = x
        x = self.maxpool(x)
        for i, stride in enumerate((4, 8, 16, 32)):
            if stride > max_stride:
                break
            x = getattr(self, f"layer{i + 1}")(x)
            feats[stride] = x
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classification logits, as torchvision's `resnet50` / `resnet18` compute them."""
        if self.fc is None:
            raise RuntimeError(
                f"this {type(self).__name__} was built without its classifier (with_fc=False)"
            )
        x = self.features(x)[32]
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ResNet18(ResNet50):
    """torchvision-compatible ResNet-18 (same stem and pyramid, basic blocks)."""

    block = BasicBlock
    layers = RESNET18_LAYERS


def resnet50_state_keys(with_fc: bool = True) -> list[str]:
    """The state-dict key names of torchvision's `resnet50`, derived from its construction rules
    (independently of the module above: tests compare the two)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight", *(f"bn1.{p}" for p in bn)]
    for layer, blocks in enumerate(RESNET50_LAYERS, start=1):
        for b in range(blocks):
            pre = f"layer{layer}.{b}"
            for j in (1, 2, 3):
                keys += [f"{pre}.conv{j}.weight", *(f"{pre}.bn{j}.{p}" for p in bn)]
            if b == 0:
                keys += [f"{pre}.downsample.0.weight", *(f"{pre}.downsample.1.{p}" for p in bn)]
    if with_fc:
        keys += ["fc.weight", "fc.bias"]
    return keys
