"""Speed of ``ood_metrics`` (all five metrics) vs one scikit-learn ``roc_auc_score`` call.

Both run in this process on the same 10^6 ID + 10^6 OOD scores; prints one JSON object.
Target (issue 2): all five metrics in under 2x the time of one ``roc_auc_score`` call.

    python benchmarks/bench_eval.py [--n 1000000] [--repeats 5] [--ties]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import sklearn
from sklearn import metrics as skm
from sklearn.metrics import roc_auc_score

from oodkit.metrics import ood_metrics


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sklearn_all(is_ood: np.ndarray, s: np.ndarray) -> None:
    """The five metrics as OpenOOD computes them with scikit-learn (one curve each)."""
    fpr, tpr, _ = skm.roc_curve(is_ood, s)
    skm.roc_curve(1 - is_ood, -s)
    skm.precision_recall_curve(1 - is_ood, -s)
    skm.precision_recall_curve(is_ood, s)
    skm.auc(fpr, tpr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000, help="samples per side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ties", action="store_true", help="round scores to 3 decimals")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    ids, oods = rng.normal(1.0, 1.0, args.n), rng.normal(0.0, 1.0, args.n)
    if args.ties:
        ids, oods = ids.round(3), oods.round(3)
    is_ood = np.r_[np.zeros(args.n), np.ones(args.n)]
    s = -np.r_[ids, oods]

    ours = best_of(lambda: ood_metrics(ids, oods), args.repeats)
    ref = best_of(lambda: roc_auc_score(is_ood, s), args.repeats)
    ref_all = best_of(lambda: sklearn_all(is_ood, s), max(1, args.repeats // 2))
    auroc_ours = ood_metrics(ids, oods)["auroc"]
    auroc_ref = roc_auc_score(is_ood, s)
    print(
        json.dumps(
            {
                "benchmark": "ood_metrics vs sklearn.roc_auc_score",
                "n_id": args.n,
                "n_ood": args.n,
                "ties": args.ties,
                "repeats": args.repeats,
                "ood_metrics_s": round(ours, 4),
                "roc_auc_score_s": round(ref, 4),
                "ratio": round(ours / ref, 3),
                "sklearn_all_five_s": round(ref_all, 4),
                "ratio_vs_sklearn_all_five": round(ours / ref_all, 3),
                "target_ratio": 2.0,
                "auroc_abs_diff": abs(auroc_ours - auroc_ref),
                "numpy": np.__version__,
                "sklearn": sklearn.__version__,
                "machine": platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
