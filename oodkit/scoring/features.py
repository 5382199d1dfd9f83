"""Batched feature/logit extraction with an on-disk cache keyed by detector and data.

Outputs of every batch stay on the device until the end (one host copy per set). The cache
(``$OODKIT_CACHE`` or ``~/.cache/oodkit``) stores safetensors files named by a hash of the
detector's fingerprint, the dataset's fingerprint and the transform, so scoring several
methods, or re-scoring later, does not run the network again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from oodkit.artifacts import atomic_file
from oodkit.data.images import ImageTable, eval_transform
from oodkit.data.tables import image_mode
from oodkit.devices import resolve_workers
from oodkit.hashing import cache_dir

if TYPE_CHECKING:
    import datasets

    from oodkit.models.detector import Detector


FEATURES = "features"  # the cache's sub-folder


def cache_root() -> Path:
    return cache_dir() / FEATURES


def eval_table(model: Detector, ds: datasets.Dataset) -> ImageTable:
    """``ds`` as the detector's inputs: its mode and evaluation preprocessing."""
    return ImageTable(ds, eval_transform(model.config), mode=image_mode(model.config.in_chans))


def image_batches(
    model: Detector, table: ImageTable, batch_size: int = 256, num_workers: int | str = "auto"
) -> Iterator[torch.Tensor]:
    """The rows of ``table`` in order, in batches on the detector's device (pinned, prefetched
    loading on CUDA)."""
    from torch.utils.data import DataLoader

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    workers = resolve_workers(num_workers, cuda)
    prefetch = {"prefetch_factor": 4} if workers else {}
    loader = DataLoader(
        table,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=cuda,
        **prefetch,
    )
    for x, _, _ in loader:
        yield x.to(device, non_blocking=True)


@torch.no_grad()
def extract(
    model: Detector, table: ImageTable, batch_size: int = 256, num_workers: int | str = "auto"
) -> dict[str, torch.Tensor]:
    """Features and every head's logits for all rows of ``table``, as float32 CPU tensors."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for x in image_batches(model, table, batch_size, num_workers):
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
        else:
            out = model(x)
        for name, value in out.items():
            chunks.setdefault(name, []).append(value.float())
    return {name: torch.cat(parts).cpu() for name, parts in chunks.items()}


def cached_extract(
    model: Detector,
    detector_fingerprint: str,
    ds: datasets.Dataset,
    batch_size: int = 256,
    num_workers: int | str = "auto",
    use_cache: bool = True,
) -> dict[str, torch.Tensor]:
    """``extract`` through the cache; the key covers detector, data and preprocessing."""
    from safetensors.torch import load_file, save_file

    config = model.config
    mode = image_mode(config.in_chans)
    transform = eval_transform(config)
    data_print = getattr(ds, "_fingerprint", None)
    key = hashlib.sha256(
        f"{detector_fingerprint}|{data_print}|{len(ds)}|{mode}|{transform!r}".encode()
    ).hexdigest()[:32]
    path = cache_root() / f"{key}.safetensors"
    if use_cache and data_print and path.is_file():
        try:
            got = load_file(str(path))
            if got and all(len(v) == len(ds) for v in got.values()):
                return got
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed and rewritten
            pass
    result = extract(model, eval_table(model, ds), batch_size, num_workers)
    if use_cache and data_print:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in result.items()}
        atomic_file(path, lambda tmp: save_file(tensors, str(tmp)))
    return result
