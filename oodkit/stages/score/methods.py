"""Score methods (registered in ``oodkit.methods``): id_score of every sample of one set from
the detector's outputs, higher = in-distribution (docs/methods.md §1, §5).

Each takes the set's features and logits, the references it declared it needs (ID-train
features, outlier features) and its recorded parameters (``temperature``, ``k``, ``alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from oodkit.stages.score import posthoc

Outputs = dict[str, torch.Tensor]  # "features", "logits" (and other heads) of one set


@dataclass
class References:
    """Outputs of the sets that methods compare against."""

    id_train: Outputs | None = None
    outliers: Outputs | None = None


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
