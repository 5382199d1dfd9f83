"""Images as tensors: PIL ↔ tensor, ``datasets`` tables as torch datasets, and transforms.

Transforms take any config with ``image_size``, ``mean`` and ``std`` (a detector's config).
Images below ``SMALL_INPUT`` pixels are "small" (CIFAR conventions: no 256/224 resize, padded
crops, a 3×3 stride-1 stem in ResNet-style backbones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from oodkit.data.tables import image_mode

if TYPE_CHECKING:
    import datasets

SMALL_INPUT = 64  # below this size ResNet-style stems downsample too early (CIFAR convention)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalisation(channels: int) -> tuple[list[float], list[float]]:
    """(mean, std): ImageNet statistics for RGB, 0.5 / 0.5 for grayscale."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [0.5], [0.5]


def _normalised(config) -> list:
    from torchvision.transforms import v2

    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(config.mean, config.std),
    ]


def eval_transform(config):
    """Resize (256/224 of the size for large inputs, as OpenOOD) → centre crop → normalise."""
    from torchvision.transforms import v2

    size = config.image_size
    resize = size if size < SMALL_INPUT else int(round(size * 256 / 224))
    return v2.Compose(
        [v2.Resize(resize, antialias=True), v2.CenterCrop(size), *_normalised(config)]
    )


def train_transform(config, augment: str = "auto"):
    """Training augmentation: padded random crop (+ flip) for small images, RandomResizedCrop
    + flip for large ones (the SONA / OpenOOD recipes); ``none`` = the eval transform."""
    from torchvision.transforms import v2

    size = config.image_size
    if augment == "auto":
        augment = "crop-flip" if size < SMALL_INPUT else "rrc-flip"
    if augment == "none":
        return eval_transform(config)
    if augment == "rrc-flip":
        ops = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops = [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.RandomCrop(size, padding=max(1, size // 8)),
        ]
        if augment == "crop-flip":
            ops.append(v2.RandomHorizontalFlip())
    return v2.Compose([*ops, *_normalised(config)])


class ImageTable(Dataset):
    """(image tensor, label, row index) from a ``datasets`` table, in the detector's mode."""

    def __init__(
        self,
        table: datasets.Dataset,
        transform,
        labels: Sequence[int] | np.ndarray | None = None,
        mode: str = "RGB",
    ) -> None:
        self.table = table
        self.transform = transform
        self.labels = np.full(len(table), -1) if labels is None else np.asarray(labels)
        self.mode = mode

    def __len__(self) -> int:
        return len(self.table)

    def image(self, index: int) -> torch.Tensor:
        img = self.table[int(index)]["image"]
        if img.mode != self.mode:
            img = img.convert(self.mode)
        return self.transform(img)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.image(index), int(self.labels[index]), int(index)


class PairedOutliers(ImageTable):
    """Outliers with their source ID image (for the CLUB term): (x_out, x_src, label, index)."""

    def __init__(self, outliers: ImageTable, sources: ImageTable, source_rows: np.ndarray) -> None:
        super().__init__(outliers.table, outliers.transform, outliers.labels, outliers.mode)
        self.sources = sources
        self.source_rows = source_rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        src = self.sources.image(int(self.source_rows[index]))
        return self.image(index), src, int(self.labels[index]), int(index)


def to_tensor(images: Sequence, size: int, channels: int) -> torch.Tensor:
    """PIL images → [N, C, size, size] floats in [0, 1] (converted to the mode, resized)."""
    from torchvision.transforms.functional import pil_to_tensor, resize

    mode = image_mode(channels)
    out = []
    for im in images:
        im = im.convert(mode) if im.mode != mode else im
        t = pil_to_tensor(im).float() / 255
        if t.shape[-2:] != (size, size):
            t = resize(t, [size, size], antialias=True)
        out.append(t)
    return torch.stack(out)


def to_pil(x: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list:
    """[N, C, H, W] in [0, 1] → PIL images, each resized to its (width, height)."""
    from PIL import Image
    from torchvision.transforms.functional import resize

    out = []
    for img, (w, h) in zip(x, sizes, strict=True):
        if img.shape[-2:] != (h, w):
            img = resize(img, [h, w], antialias=True).clamp(0, 1)
        arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        out.append(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
    return out
