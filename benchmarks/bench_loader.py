"""``train detector``'s input pipeline alone: images/s of its loaders over 224-px JPEG sources
and 512-px PNG outliers, with 0 worker processes and with ``--num-workers auto`` as a CUDA
rank resolves it (the rank's CPUs less one), over the epochs of one persistent loader.

The loaders are the stage's own (``EpochSeeded`` + ``EpochBatches`` + ``loader_kwargs``, the
training augmentation at 224 px). No model runs: each batch is followed by ``--step-ms`` of
sleep, a GPU training step that leaves the host's CPU free (ResNet-18 at 224 px, batch 128,
bf16 on an H100 takes about 40 ms); ``--step-ms 0`` gives the loader's own ceiling. Prints
one JSON object.

    python benchmarks/bench_loader.py [--images 1024] [--batch 128] [--epochs 3] [--step-ms 40]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from oodkit.data.images import ImageTable, train_transform
from oodkit.devices import rank_cpus, resolve_workers
from oodkit.models.detector import DetectorConfig
from oodkit.schemas import image_features
from oodkit.training import EpochBatches, EpochSeeded, epoch_batches, loader_kwargs


def _table(folder: Path, n: int, size: tuple[int, int], fmt: str) -> datasets.Dataset:
    """``n`` smooth-plus-noise images of ``size`` encoded as ``fmt`` into the table."""
    rng = np.random.default_rng(0)
    cells = []
    for _ in range(16):
        base = Image.fromarray(rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8))
        arr = np.asarray(base.resize(size, Image.BICUBIC)).astype(float)
        arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        cells.append({"bytes": buf.getvalue(), "path": None})
    ds = datasets.Dataset.from_dict(
        {
            "image": [cells[i % 16] for i in range(n)],
            "label": [i % 200 for i in range(n)],
            "sample_id": [str(i) for i in range(n)],
        },
        features=image_features(),
    )
    datasets.disable_progress_bars()
    ds.save_to_disk(str(folder))
    return datasets.load_from_disk(str(folder))


def _rate(dataset, n: int, batch: int, workers: int, epochs: int, step: float) -> float:
    from torch.utils.data import DataLoader

    sampler = EpochBatches()
    loader = DataLoader(
        EpochSeeded(dataset, 0, 1), batch_sampler=sampler, **loader_kwargs(workers, False)
    )
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        sampler.set(epoch, epoch_batches(n, batch, 0, epoch, 1))
        for x, _, _ in loader:
            seen += len(x)
            time.sleep(step)
    return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--step-ms", type=float, default=40.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    config = DetectorConfig.for_data("resnet18", 200, 3, 224, heads=[])
    transform = train_transform(config)
    auto = resolve_workers("auto", cuda=True)
    report: dict = {
        "cpus_for_the_rank": rank_cpus(),
        "auto_workers_on_cuda": auto,
        "step_ms": a.step_ms,
        "batch": a.batch,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, fmt in (
            ("jpeg_224_sources", (256, 224), "JPEG"),
            ("png_512_outliers", (512, 512), "PNG"),
        ):
            table = ImageTable(_table(Path(tmp) / name, a.images, size, fmt), transform)
            step = a.step_ms / 1000
            zero = _rate(table, a.images, a.batch, 0, a.epochs, step)
            many = _rate(table, a.images, a.batch, auto, a.epochs, step)
            report[name] = {
                "images_per_s_0_workers": round(zero, 1),
                "images_per_s_auto": round(many, 1),
                "ratio": round(many / zero, 2),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
