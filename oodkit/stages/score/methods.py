"""oodkit's own score methods (registered in ``oodkit.methods``; docs/methods.md §1, §5).

Each is ``fit(Fit) → scorer`` and the scorer maps a set (``SetData``) to id_score, higher =
in-distribution; ``Fit`` carries the recorded options (``temperature``, ``k``, ``alpha``) and
the reference sets the registration declared it needs.
"""

from __future__ import annotations

from oodkit.scoring.common import Fit, Scorer
from oodkit.stages.score import posthoc


def msp(fit: Fit) -> Scorer:
    t = fit.params["temperature"]
    return lambda s: posthoc.msp(s.outputs["logits"], t)


def energy(fit: Fit) -> Scorer:
    t = fit.params["temperature"]
    return lambda s: posthoc.energy(s.outputs["logits"], t)


def maxlogit(fit: Fit) -> Scorer:
    return lambda s: posthoc.maxlogit(s.outputs["logits"])


def knn(fit: Fit) -> Scorer:
    train, k = fit.sets["id_train"]["features"], fit.params["k"]
    return lambda s: posthoc.knn_score(s.outputs["features"], train, k)


def sd_vote(fit: Fit) -> Scorer:
    train, outliers = fit.sets["id_train"]["features"], fit.sets["outliers"]["features"]
    k, alpha = fit.params["k"], fit.params["alpha"]
    return lambda s: posthoc.sd_vote_score(s.outputs["features"], train, outliers, k, alpha)
