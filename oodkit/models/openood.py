"""OpenOOD v1.5 classifier architectures, in the module layout of its published checkpoints.

``resnet18_32x32`` (CIFAR-10 / CIFAR-100) is OpenOOD's own CIFAR ResNet-18: a 3×3 stride-1
stem without max-pool, basic blocks whose projection is named ``shortcut``; the 224-px
ImageNet-200 ResNet-18 and the ImageNet-1k ResNet-50 are torchvision's modules. Checkpoints
are plain state dicts of these modules (``module.`` prefixes of DataParallel are stripped
when read).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class ResNet18_32x32(nn.Module):  # noqa: N801 - OpenOOD's name
    """OpenOOD's CIFAR ResNet-18 (forward returns logits)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, cin = (64, 128, 256, 512), 64
        for i, width in enumerate(widths, 1):
            stride = 1 if i == 1 else 2
            blocks = [_BasicBlock(cin, width, stride), _BasicBlock(width, width, 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from torchvision.models import get_model

        return get_model(name, weights=None, num_classes=num_classes)

    return build


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "resnet18_32x32": ResNet18_32x32,
    "resnet18_224x224": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
}
