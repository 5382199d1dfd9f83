"""Clustering accuracy with the best one-to-one cluster→class matching (Hungarian), NMI, ARI."""

from __future__ import annotations

import numpy as np


def hungarian_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Accuracy after matching clusters to classes one to one to maximise agreement."""
    from scipy.optimize import linear_sum_assignment

    pred, true = np.asarray(pred), np.asarray(true)
    k = int(max(pred.max(), true.max())) + 1
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (pred, true), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(pred))


def clustering_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "accuracy": hungarian_accuracy(pred, true),
        "nmi": float(normalized_mutual_info_score(true, pred)),
        "ari": float(adjusted_rand_score(true, pred)),
    }
