"""OOD metrics with OpenOOD v1.5 conventions (docs/methods.md §1).

Inputs are ``id_score`` values, higher = more in-distribution. OOD is the positive class for
AUROC, AUPR-OUT and FPR@95; AUPR-IN treats ID as positive; FPR@95-classic is the fraction of
OOD samples accepted at the threshold that keeps 95 % of ID samples.

Every metric comes from one sorted pass over the pooled scores: per distinct score value we
count how many ID and OOD samples lie at or below it, and all five curves are read off those
two cumulative counts. This keeps all five metrics within the cost of one scikit-learn
``roc_auc_score`` call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_classic")
TPR_LEVEL = 0.95


def as_scores(values: object, what: str) -> np.ndarray:
    """Return ``values`` as a finite, non-empty 1-D float64 array or raise ``ValueError``."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        kinds = sorted({"NaN" if np.isnan(v) else "infinite" for v in arr[bad][:1000]})
        raise ValueError(f"{what} has {int(bad.sum())} {'/'.join(kinds)} value(s)")
    return arr


def _cumulative_counts(
    id_scores: np.ndarray, ood_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct score values (ascending) and the ID / OOD counts at or below each of them."""
    id_sorted = np.sort(id_scores)
    ood_sorted = np.sort(ood_scores)
    pooled = np.concatenate([id_sorted, ood_sorted])
    pooled.sort()
    last_of_run = np.empty(pooled.size, dtype=bool)
    np.not_equal(pooled[1:], pooled[:-1], out=last_of_run[:-1])
    last_of_run[-1] = True
    values = pooled[last_of_run]
    c_id = np.searchsorted(id_sorted, values, side="right")
    c_ood = np.searchsorted(ood_sorted, values, side="right")
    return values, c_id, c_ood


def _drop_collinear(fps: np.ndarray, tps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop interior points on straight ROC segments, as scikit-learn's ``roc_curve`` does.

    OpenOOD reads FPR@95 off scikit-learn's default (thinned) curve; thinning changes FPR@95
    only where tied scores make collinear diagonal steps, but we follow it exactly.
    """
    if fps.size <= 2:
        return fps, tps
    keep = np.empty(fps.size, dtype=bool)
    keep[0] = keep[-1] = True
    np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0, out=keep[1:-1])
    return fps[keep], tps[keep]


def _roc(fps: np.ndarray, tps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) from cumulative counts in decreasing-threshold order."""
    fps, tps = _drop_collinear(fps, tps)
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    return fpr, tpr


def _fpr_at_tpr(fpr: np.ndarray, tpr: np.ndarray, level: float = TPR_LEVEL) -> float:
    return float(fpr[np.argmax(tpr >= level)])


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def _aupr(tps: np.ndarray, fps: np.ndarray) -> float:
    """Trapezoidal area under precision-recall (scikit-learn ``auc(recall, precision)``).

    ``tps``/``fps`` are cumulative counts in decreasing-threshold order; the curve starts at
    (recall 0, precision 1) as scikit-learn's ``precision_recall_curve`` does.
    """
    precision = np.concatenate([[1.0], tps / (tps + fps)])
    recall = np.concatenate([[0.0], tps / tps[-1]])
    return _trapezoid(recall, precision)


def ood_metrics(id_scores: object, ood_scores: object) -> dict[str, float]:
    """AUROC, AUPR-IN, AUPR-OUT, FPR@95 (OpenOOD v1.5) and FPR@95-classic, as fractions.

    ``id_scores`` / ``ood_scores``: array-likes of id_score (higher = more in-distribution).
    Raises ``ValueError`` for empty inputs or non-finite scores.
    """
    ids = as_scores(id_scores, "ID scores")
    oods = as_scores(ood_scores, "OOD scores")
    _, c_id, c_ood = _cumulative_counts(ids, oods)
    n_id, n_ood = ids.size, oods.size

    # OOD positive: threshold on s = -id_score, i.e. distinct id_score values ascending.
    ood_fps, ood_tps = c_id.astype(np.float64), c_ood.astype(np.float64)
    fpr, tpr = _roc(ood_fps, ood_tps)
    # ID positive: distinct id_score values descending; predicted ID = id_score >= value.
    id_tps = (n_id - np.concatenate([[0], c_id[:-1]]))[::-1].astype(np.float64)
    id_fps = (n_ood - np.concatenate([[0], c_ood[:-1]]))[::-1].astype(np.float64)
    fpr_id, tpr_id = _roc(id_fps, id_tps)
    return {
        "auroc": _trapezoid(fpr, tpr),
        "aupr_in": _aupr(id_tps, id_fps),
        "aupr_out": _aupr(ood_tps, ood_fps),
        "fpr95": _fpr_at_tpr(fpr, tpr),
        "fpr95_classic": _fpr_at_tpr(fpr_id, tpr_id),
    }


def roc_curve(id_scores: object, ood_scores: object) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) with OOD as the positive class, for plotting."""
    ids = as_scores(id_scores, "ID scores")
    oods = as_scores(ood_scores, "OOD scores")
    _, c_id, c_ood = _cumulative_counts(ids, oods)
    return _roc(c_id.astype(np.float64), c_ood.astype(np.float64))


def accuracy(pred: Sequence[int] | np.ndarray, label: Sequence[int] | np.ndarray) -> float:
    """Top-1 accuracy of integer predictions."""
    pred_arr, label_arr = np.asarray(pred), np.asarray(label)
    if pred_arr.size == 0:
        raise ValueError("no predictions to score")
    return float(np.mean(pred_arr == label_arr))


def mean_std(values: Iterable[float]) -> dict[str, float]:
    """Mean and population standard deviation (ddof = 0) over runs."""
    arr = np.asarray(list(values), dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std())}


def paired_delta(
    values: Sequence[float], baseline: Sequence[float], alpha: float = 0.05
) -> dict[str, Any]:
    """``values`` against ``baseline``, paired by seed: the per-seed differences, their mean
    and population std, and the one-sided paired t-test's p-value (H1: the mean difference is
    positive; None with one seed). ``beats``: the mean difference is positive and p < ``alpha``
    — beyond seed noise; with one seed there is no noise estimate and a positive difference
    decides."""
    from scipy import stats

    a, b = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired_delta needs one baseline value per value")
    d = a - b
    mean = float(d.mean())
    if d.size < 2:
        p = None
    elif np.all(d == d[0]):  # no spread: the t statistic is ±∞ or undefined
        p = 0.0 if mean > 0 else 1.0
    else:
        p = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
    beats = mean > 0 and (p is None or p < alpha)
    return {
        "per_seed": d.tolist(),
        "mean": mean,
        "std": float(d.std()),
        "p_value": p,
        "beats": bool(beats),
    }


def group_means(rows: Mapping[str, Mapping[str, float]], names: Sequence[str]) -> dict[str, float]:
    """Unweighted mean of each metric over the per-dataset rows ``names``."""
    return {k: float(np.mean([rows[n][k] for n in names])) for k in METRIC_KEYS}


# --- clustering (pseudo-labels against ground truth, docs/methods.md §6) -----------------


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
