"""Image transforms and torch views of ``datasets`` tables for training and feature extraction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from oodkit.detector.model import SMALL_INPUT, DetectorConfig

if TYPE_CHECKING:
    import datasets

AUGMENTS = ("auto", "none", "crop", "crop-flip", "rrc-flip")


def _to_tensor(config: DetectorConfig) -> list:
    from torchvision.transforms import v2

    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(config.mean, config.std),
    ]


def eval_transform(config: DetectorConfig):
    """Resize (256/224 of the size for large inputs, as OpenOOD) → centre crop → normalise."""
    from torchvision.transforms import v2

    size = config.image_size
    resize = size if size < SMALL_INPUT else int(round(size * 256 / 224))
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size), *_to_tensor(config)])


def train_transform(config: DetectorConfig, augment: str = "auto"):
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
    return v2.Compose([*ops, *_to_tensor(config)])


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


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    stream: int,
    steps: int | None = None,
    rank: int = 0,
    world: int = 1,
) -> list[list[int]]:
    """Shuffled index batches for one epoch, derived only from (seed, epoch, stream).

    ``steps`` cycles through fresh permutations until that many batches exist (outlier
    streams follow the ID stream's length). Under several processes each rank takes every
    ``world``-th index of the same permutation, so the union matches a single process.
    """
    rng = np.random.default_rng([seed, epoch, stream])
    per_rank = batch_size
    order: list[int] = []
    want = None if steps is None else steps * per_rank * world
    while True:
        order.extend(rng.permutation(n).tolist())
        if want is None or len(order) >= want:
            break
    mine = order[rank::world]
    count = (len(order) // world) // per_rank if steps is None else steps
    return [mine[i * per_rank : (i + 1) * per_rank] for i in range(count)]
