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

from oodkit.data.tables import image_mode, to_mode
from oodkit.options import IMAGE_FORMATS, RESIZE_POLICIES, check_image_format

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
    """Resize → centre crop → normalise (``eval_view`` and the config's mean / std)."""
    from torchvision.transforms import v2

    return v2.Compose([*eval_view(config).transforms[:2], *_normalised(config)])


def eval_view(config):
    """Resize → centre crop → [0, 1] tensor: what the classifier sees before normalisation.
    The resize is the config's own (an imported classifier's: shorter side or both sides,
    its interpolation); else 256/224 of the size for large inputs, as OpenOOD, and the size
    itself for small ones."""
    from torchvision.transforms import InterpolationMode, v2

    size = config.image_size
    resize = getattr(config, "resize", None)
    if resize is None:
        resize = size if size < SMALL_INPUT else int(round(size * 256 / 224))
    mode = InterpolationMode(getattr(config, "interpolation", "bilinear"))
    shape = (resize, resize) if getattr(config, "resize_square", False) else resize
    return v2.Compose(
        [
            v2.Resize(shape, interpolation=mode, antialias=True),
            v2.CenterCrop(size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
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
        return self.transform(to_mode(img, self.mode))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.image(index), int(self.labels[index]), int(index)


DECODED_BUDGET = 1 << 30  # bytes of decoded images a stage may keep in RAM


class LazyImages(Sequence):
    """A table's images in one mode, decoded when read: a table larger than RAM is streamed
    (a smaller one is decoded once by :func:`images_of`)."""

    def __init__(self, table: datasets.Dataset, mode: str) -> None:
        self.table, self.mode = table.select_columns(["image"]), mode

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index):  # type: ignore[override]
        img = self.table[int(index)]["image"]
        return to_mode(img, self.mode)


def images_of(table: datasets.Dataset, mode: str, size: int, channels: int) -> Sequence:
    """The table's images in ``mode``: decoded once when they fit :data:`DECODED_BUDGET`
    (at ``size`` px, ``channels`` bytes a pixel), else read on demand."""
    lazy = LazyImages(table, mode)
    if len(table) * size * size * channels > DECODED_BUDGET:
        return lazy
    return [lazy[i] for i in range(len(lazy))]


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
        im = to_mode(im, mode)
        t = pil_to_tensor(im).float() / 255
        if t.shape[-2:] != (size, size):
            t = resize(t, [size, size], antialias=True)
        out.append(t)
    return torch.stack(out)


Box = tuple[int, int, int, int]  # (left, top, width, height) of the content in a square


def fit_square(
    images: Sequence, size: int, channels: int, policy: str = "crop"
) -> tuple[torch.Tensor, list[Box]]:
    """PIL images of any size → [N, C, size, size] in [0, 1], and each image's content box.

    ``crop``: short side to ``size``, centre crop (img2img convention); ``pad``: long side to
    ``size``, edges replicated to a square (the box marks the picture); ``squash``: resized
    to a square, aspect ratio lost. Images are converted to ``channels`` first.
    """
    import torch.nn.functional as F
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    mode = image_mode(channels)
    out, boxes = [], []
    for im in images:
        im = to_mode(im, mode)
        t = pil_to_tensor(im).float() / 255
        h, w = t.shape[-2:]
        box: Box = (0, 0, size, size)
        if (h, w) == (size, size):
            pass
        elif policy == "squash":
            t = resize(t, [size, size], antialias=True)
        elif policy == "crop":
            scale = size / min(h, w)
            dims = [max(size, round(h * scale)), max(size, round(w * scale))]
            t = center_crop(resize(t, dims, antialias=True), [size, size])
        else:
            scale = size / max(h, w)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            t = resize(t, [nh, nw], antialias=True)
            top, left = (size - nh) // 2, (size - nw) // 2
            pad = (left, size - nw - left, top, size - nh - top)
            t = F.pad(t[None], pad, mode="replicate")[0]
            box = (left, top, nw, nh)
        out.append(t.clamp(0, 1))
        boxes.append(box)
    return torch.stack(out), boxes


def unfit(x: torch.Tensor, boxes: Sequence[Box], size: int) -> list[torch.Tensor]:
    """Each square of ``x`` cut to its content box and scaled so its long side is ``size``."""
    from torchvision.transforms.functional import resize

    out = []
    for img, (left, top, w, h) in zip(x, boxes, strict=True):
        img = img[:, top : top + h, left : left + w]
        scale = size / max(h, w)
        dims = [max(1, round(h * scale)), max(1, round(w * scale))]
        if list(img.shape[-2:]) != dims:
            img = resize(img, dims, antialias=True).clamp(0, 1)
        out.append(img)
    return out


def tensor_to_pil(img: torch.Tensor):
    """[C, H, W] in [0, 1] → a PIL image (L or RGB), rounded to 8 bits."""
    from PIL import Image

    arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def encode_image(img: torch.Tensor, fmt: str = "png", quality: int | None = None) -> dict:
    """An 8-bit [C, H, W] tensor as an encoded image cell (``{"bytes", "path"}``) of a
    ``datasets`` Image column: encoded here, in the host pool, not by ``datasets``."""
    import io

    from PIL import Image

    arr = img.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    q = check_image_format(fmt, quality)
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG", compress_level=q)
    else:
        pil.save(buf, format=IMAGE_FORMATS[fmt], quality=q)
    return {"bytes": buf.getvalue(), "path": None}
