"""Score methods (registered in ``oodkit.methods``): id_score of every sample of one set from
the detector's outputs, higher = in-distribution (docs/methods.md §1, §5).

Each takes the set's features and logits, the references it declared it needs (ID-train
features, outlier features) and its recorded parameters (``temperature``, ``k``, ``alpha``).
"""

from __future__ import annotations

from typing import Any

import torch

from oodkit.scoring.common import Outputs, References
from oodkit.stages.score import posthoc


def msp(f: Outputs, refs: References, p: dict[str, Any]) -> torch.Tensor:
    return posthoc.msp(f["logits"], p["temperature"])


def energy(f: Outputs, refs: References, p: dict[str, Any]) -> torch.Tensor:
    return posthoc.energy(f["logits"], p["temperature"])


def maxlogit(f: Outputs, refs: References, p: dict[str, Any]) -> torch.Tensor:
    return posthoc.maxlogit(f["logits"])


def knn(f: Outputs, refs: References, p: dict[str, Any]) -> torch.Tensor:
    return posthoc.knn_score(f["features"], refs.id_train["features"], p["k"])


def sd_vote(f: Outputs, refs: References, p: dict[str, Any]) -> torch.Tensor:
    return posthoc.sd_vote_score(
        f["features"], refs.id_train["features"], refs.outliers["features"], p["k"], p["alpha"]
    )
