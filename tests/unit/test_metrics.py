"""ood_metrics against independent scikit-learn and pytorch-ood computations (docs/methods.md §1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.metrics import OODMetrics
from sklearn import metrics as skm

from oodkit.metrics import METRIC_KEYS, mean_std, ood_metrics, roc_curve


def sklearn_reference(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """The definitions of docs/methods.md §1, written with scikit-learn as OpenOOD v1.5 does."""
    is_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    id_score = np.r_[id_scores, ood_scores]
    fpr, tpr, _ = skm.roc_curve(is_ood, -id_score)
    fpr_c, tpr_c, _ = skm.roc_curve(1 - is_ood, id_score)
    p_in, r_in, _ = skm.precision_recall_curve(1 - is_ood, id_score)
    p_out, r_out, _ = skm.precision_recall_curve(is_ood, -id_score)
    return {
        "auroc": skm.auc(fpr, tpr),
        "aupr_in": skm.auc(r_in, p_in),
        "aupr_out": skm.auc(r_out, p_out),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
        "fpr95_classic": fpr_c[np.argmax(tpr_c >= 0.95)],
    }


def assert_close(got: dict[str, float], want: dict[str, float], tol: float = 1e-9) -> None:
    assert set(got) == set(METRIC_KEYS)
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(want[k], abs=tol), k


@pytest.mark.parametrize("seed", range(5))
def test_random_scores_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.normal(1.0, 1.0, rng.integers(50, 3000))
    oods = rng.normal(0.0, 1.5, rng.integers(50, 3000))
    assert_close(ood_metrics(ids, oods), sklearn_reference(ids, oods))


@pytest.mark.parametrize("seed", range(20))
def test_many_ties_match_sklearn(seed: int) -> None:
    # integer scores in a small range: most thresholds are shared by ID and OOD samples,
    # which exercises tie handling and the collinear-point thinning of roc_curve
    rng = np.random.default_rng(100 + seed)
    ids = rng.integers(0, 6, rng.integers(1, 400)).astype(float)
    oods = rng.integers(-2, 4, rng.integers(1, 400)).astype(float)
    assert_close(ood_metrics(ids, oods), sklearn_reference(ids, oods))


def test_all_scores_equal() -> None:
    got = ood_metrics([1.0] * 7, [1.0] * 3)
    assert_close(got, sklearn_reference(np.ones(7), np.ones(3)))
    assert got["auroc"] == 0.5


@pytest.mark.parametrize(("n_id", "n_ood"), [(1, 100_000), (100_000, 1)])
def test_extreme_sizes_match_sklearn(n_id: int, n_ood: int) -> None:
    rng = np.random.default_rng(7)
    ids, oods = rng.normal(0.5, 1, n_id), rng.normal(0, 1, n_ood)
    assert_close(ood_metrics(ids, oods), sklearn_reference(ids, oods))


def test_invariant_to_constant_shift() -> None:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 50, 800) / 4.0  # exactly representable, so shifts keep the ties
    oods = rng.integers(-10, 40, 600) / 4.0
    base = ood_metrics(ids, oods)
    for c in (-1024.0, 3.25, 1e6):
        assert_close(ood_metrics(ids + c, oods + c), base, tol=1e-12)


def test_perfect_and_inverted_separation() -> None:
    perfect = ood_metrics([2.0, 3.0], [0.0, 1.0])
    assert perfect == {
        "auroc": 1.0,
        "aupr_in": 1.0,
        "aupr_out": 1.0,
        "fpr95": 0.0,
        "fpr95_classic": 0.0,
    }
    inverted = ood_metrics([0.0, 1.0], [2.0, 3.0])
    assert (
        inverted["auroc"] == 0.0 and inverted["fpr95"] == 1.0 and inverted["fpr95_classic"] == 1.0
    )


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_pytorch_ood(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids, oods = rng.normal(1, 1, 2000), rng.normal(0, 1, 1500)
    metric = OODMetrics()
    scores = torch.from_numpy(-np.r_[ids, oods])  # pytorch-ood: higher = OOD
    labels = torch.from_numpy(np.r_[np.zeros(len(ids)), -np.ones(len(oods))]).long()
    ref = metric.update(scores, labels).compute()
    got = ood_metrics(ids, oods)
    assert got["auroc"] == pytest.approx(ref["AUROC"], abs=1e-9)
    assert got["aupr_in"] == pytest.approx(ref["AUPR-IN"], abs=1e-9)
    assert got["aupr_out"] == pytest.approx(ref["AUPR-OUT"], abs=1e-9)
    assert got["fpr95"] == pytest.approx(ref["FPR95TPR"], abs=1e-9)


def test_fpr95_conventions_differ() -> None:
    # the two FPR@95 conventions answer different questions and must not be confused
    rng = np.random.default_rng(11)
    ids, oods = rng.normal(1, 1, 5000), rng.normal(0, 2, 5000)
    m = ood_metrics(ids, oods)
    assert abs(m["fpr95"] - m["fpr95_classic"]) > 0.1


@pytest.mark.parametrize(
    ("ids", "oods", "message"),
    [
        ([], [1.0], "ID scores is empty"),
        ([1.0], [], "OOD scores is empty"),
        ([1.0, float("nan")], [0.0], "NaN"),
        ([1.0], [0.0, float("inf")], "infinite"),
    ],
)
def test_bad_scores_raise(ids: list, oods: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ood_metrics(ids, oods)


def test_roc_curve_matches_sklearn_auc() -> None:
    rng = np.random.default_rng(5)
    ids, oods = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    fpr, tpr = roc_curve(ids, oods)
    auc = skm.roc_auc_score(np.r_[np.zeros(300), np.ones(200)], -np.r_[ids, oods])
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc, abs=1e-12)
    assert fpr[0] == 0 and tpr[-1] == 1


def test_mean_std_is_population_std() -> None:
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx({"mean": 0.9, "std": np.std([0.8, 0.9, 1.0])})
