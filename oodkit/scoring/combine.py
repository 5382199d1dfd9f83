"""DiffGuard combined with a post-hoc baseline (docs/diffguard.md, "Combination").

The paper describes the rule only in words: trust the baseline where it is confident, use
DiffGuard for the hard cases. oodkit's rule, fitted on the **ID validation set only**:

1. map each score to its quantile among the ID validation scores of the same method
   (q_b for the baseline, q_d for DiffGuard; the fraction of ID-val scores below, ties half);
2. the baseline is confident where q_b < ``low`` (confidently OOD) or q_b ≥ ``high``
   (confidently ID); elsewhere DiffGuard decides;
3. combined = q_b − 2 (confident OOD) < q_d (hard cases) < q_b + 2 (confident ID).

No OOD data enters the fit; ``low`` and ``high`` are quantile levels of ID data. They decide
which FPR@95 DiffGuard can move. The classic FPR@95 (DiffGuard's own metric) thresholds at
the 5 % quantile of ID scores: with ``low`` = 0.05 that threshold sits on the edge of the
confidently-OOD zone and the combination accepts exactly the OOD samples the baseline
accepts (even a perfect DiffGuard leaves the baseline's value). With ``low`` below 0.05 — the
default 0.025, 3.6 standard errors of a 1,000-sample ID validation quantile below it — the
threshold falls among the hard cases, where DiffGuard orders the samples; the OpenOOD FPR@95
(95 % of OOD flagged) moves when fewer than 5 % of OOD samples reach the confidently-ID zone,
which ``high`` = 1 − ``low`` keeps small.
"""

from __future__ import annotations

import numpy as np


def id_quantiles(values: np.ndarray, id_val: np.ndarray) -> np.ndarray:
    """The fraction of ID-validation scores below each value (ties count one half)."""
    ref = np.sort(np.asarray(id_val, dtype=np.float64))
    v = np.asarray(values, dtype=np.float64)
    below = np.searchsorted(ref, v, side="left")
    at_or_below = np.searchsorted(ref, v, side="right")
    return (below + at_or_below) / (2.0 * len(ref))


def combine(
    baseline: np.ndarray,
    diffguard: np.ndarray,
    baseline_val: np.ndarray,
    diffguard_val: np.ndarray,
    low: float,
    high: float,
) -> np.ndarray:
    """Combined id_score (higher = ID) of paired baseline and DiffGuard scores."""
    qb = id_quantiles(baseline, baseline_val)
    qd = id_quantiles(diffguard, diffguard_val)
    return np.where(qb >= high, qb + 2.0, np.where(qb < low, qb - 2.0, qd))
