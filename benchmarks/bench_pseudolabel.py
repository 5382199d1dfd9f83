"""Neighbour mining for SCAN: oodkit's chunked exact search vs a naive full similarity matrix.

Prints one JSON object: time and peak resident-memory growth of ``mine_neighbors`` (k = 20,
cosine, anchor included) and of the naive ``(f @ f.T).topk`` reference, on the same
features, and whether the neighbours agree. The naive matrix for 10^5 × 10^5 floats needs
40 GB, more than this machine has, so the side-by-side comparison runs at ``--naive-n``
(default 30 000) and oodkit alone also runs at ``--n`` (default 10^5).

Target (issue 5): ≥ 4× less peak memory than the naive reference at equal neighbours.

    python benchmarks/bench_pseudolabel.py [--n 100000] [--naive-n 30000] [--dim 512] [--k 20]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from _measure import measure

from oodkit.stages.pseudo_label.scan import mine_neighbors


def naive(features: torch.Tensor, k: int) -> torch.Tensor:
    f = F.normalize(features, dim=1)
    return (f @ f.T).topk(k, dim=1).indices


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--naive-n", type=int, default=30_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    small = torch.randn(args.naive_n, args.dim, generator=g)
    ours_idx, ours_s, ours_mib = measure(lambda: mine_neighbors(small, args.k))
    ref_idx, ref_s, ref_mib = measure(lambda: naive(small, args.k))
    agree = float((ours_idx == ref_idx).float().mean())
    full = torch.randn(args.n, args.dim, generator=g)
    _, full_s, full_mib = measure(lambda: mine_neighbors(full, args.k))
    print(
        json.dumps(
            {
                "benchmark": "SCAN neighbour mining",
                "dim": args.dim,
                "k": args.k,
                f"n={args.naive_n}": {
                    "oodkit": {"seconds": round(ours_s, 3), "peak_mib": round(ours_mib, 1)},
                    "naive_full_matrix": {
                        "seconds": round(ref_s, 3),
                        "peak_mib": round(ref_mib, 1),
                    },
                    "memory_ratio_naive_over_ours": round(ref_mib / max(ours_mib, 1.0), 1),
                    "same_neighbours_fraction": agree,
                },
                f"n={args.n}": {
                    "oodkit": {"seconds": round(full_s, 3), "peak_mib": round(full_mib, 1)},
                    "naive_full_matrix_would_need_mib": round(args.n * args.n * 4 / 2**20, 1),
                },
                "torch_threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
