"""The scores artifact: one row per test sample with ``id_score`` (higher = ID)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodkit.artifacts import Artifact, write_artifact

if TYPE_CHECKING:
    import datasets
    import numpy as np


@dataclass
class SetScores:
    """Scores of one benchmark set."""

    dataset: str
    group: str  # id | near | far
    sample_ids: Sequence[str]
    id_score: np.ndarray | Sequence[float]
    pred: np.ndarray | Sequence[int] | None = None
    label: np.ndarray | Sequence[int] | None = None


def scores_features() -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            "sample_id": datasets.Value("string"),
            "dataset": datasets.Value("string"),
            "group": datasets.Value("string"),
            "id_score": datasets.Value("float64"),
            "pred": datasets.Value("int64"),
            "label": datasets.Value("int64"),
        }
    )


def scores_dataset(sets: Sequence[SetScores]) -> datasets.Dataset:
    """Rows of all sets in the canonical scores schema; OOD rows get label -1."""
    import datasets
    import numpy as np

    cols: dict[str, list[Any]] = {k: [] for k in scores_features()}
    for s in sets:
        n = len(s.sample_ids)
        scores = np.asarray(s.id_score, dtype=np.float64).reshape(-1)
        if scores.size != n:
            raise ValueError(f"{s.dataset}: {scores.size} scores for {n} samples")
        pred = np.full(n, -1) if s.pred is None else np.asarray(s.pred).reshape(-1)
        label = (
            np.full(n, -1)
            if s.label is None or s.group != "id"
            else np.asarray(s.label).reshape(-1)
        )
        cols["sample_id"] += list(s.sample_ids)
        cols["dataset"] += [s.dataset] * n
        cols["group"] += [s.group] * n
        cols["id_score"] += scores.tolist()
        cols["pred"] += pred.astype(np.int64).tolist()
        cols["label"] += label.astype(np.int64).tolist()
    return datasets.Dataset.from_dict(cols, features=scores_features())


def write_scores(
    out: str | Path,
    sets: Sequence[SetScores],
    params: Mapping[str, Any],
    inputs: Sequence[Mapping[str, Any]] = (),
    summary: Mapping[str, Any] | None = None,
) -> Artifact:
    """Write a scores artifact; ``params['method']`` (and optional ``label``) name the method."""
    return write_artifact(
        out, "scores", params, inputs, dataset=scores_dataset(sets), summary=summary
    )
