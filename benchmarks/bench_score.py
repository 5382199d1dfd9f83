"""Scoring speed: feature extraction throughput and exact kNN search vs a naive reference.

Runs in one process and prints one JSON object:

- feature extraction (``oodkit.scoring.features.extract``, batched) vs one image at a time,
  images/s, on a ResNet-18 at 32×32;
- kNN, 10^5 references × 10^4 queries, 512-d: ``knn_search`` with the faiss and the chunked
  torch backends vs a naive full-distance-matrix torch reference (``torch.cdist`` + ``topk``);
  time and peak resident memory above the starting point (sampled every 2 ms), and whether
  the k-th distances agree.

Target (issue 3): ≥ 2× faster or ≥ 4× less peak memory than the naive reference.

    python benchmarks/bench_score.py [--refs 100000] [--queries 10000] [--dim 512] [--k 50]
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

import torch
from _measure import measure

from oodkit.data.images import ImageTable, eval_transform
from oodkit.models.detector import Detector, DetectorConfig
from oodkit.neighbors import knn_search
from oodkit.scoring.features import extract


def naive_knn(q: torch.Tensor, r: torch.Tensor, k: int) -> torch.Tensor:
    return (torch.cdist(q, r) ** 2).topk(k, dim=1, largest=False).values


def bench_extraction(n: int) -> dict[str, Any]:
    import datasets
    from PIL import Image

    torch.manual_seed(0)
    config = DetectorConfig.for_data("resnet18", 10, 3, 32, heads=["cls"])
    model = Detector(config).eval()
    images = [Image.new("RGB", (32, 32), (i % 255, 0, 0)) for i in range(n)]
    ds = datasets.Dataset.from_dict(
        {"image": images}, features=datasets.Features({"image": datasets.Image()})
    )
    table = ImageTable(ds, eval_transform(config))
    _, batched_s, _ = measure(lambda: extract(model, table, batch_size=256))

    def one_by_one() -> None:
        with torch.no_grad():
            for i in range(n):
                model(table[i][0][None])

    _, single_s, _ = measure(one_by_one)
    return {
        "images": n,
        "batched_images_per_s": round(n / batched_s, 1),
        "one_at_a_time_images_per_s": round(n / single_s, 1),
        "speedup": round(single_s / batched_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    refs = torch.nn.functional.normalize(torch.randn(args.refs, args.dim, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=g), dim=1)
    naive, naive_s, naive_mib = measure(lambda: naive_knn(queries, refs, args.k))
    report: dict[str, Any] = {
        "benchmark": "kNN search and feature extraction",
        "refs": args.refs,
        "queries": args.queries,
        "dim": args.dim,
        "k": args.k,
        "naive_cdist_topk": {"seconds": round(naive_s, 3), "peak_mib": round(naive_mib, 1)},
    }
    for backend in ("torch", "faiss"):
        (dist, _), secs, mib = measure(
            lambda b=backend: knn_search(queries, refs, args.k, backend=b)
        )
        report[f"oodkit_{backend}"] = {
            "seconds": round(secs, 3),
            "peak_mib": round(mib, 1),
            "speedup_vs_naive": round(naive_s / secs, 2),
            "memory_ratio_naive_over_ours": round(naive_mib / max(mib, 1.0), 1),
            "max_abs_diff_kth_distance": float((dist[:, -1] - naive[:, -1]).abs().max()),
        }
    report["feature_extraction_resnet18_32px"] = bench_extraction(args.images)
    report["torch_threads"] = torch.get_num_threads()
    report["machine"] = platform.machine()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
