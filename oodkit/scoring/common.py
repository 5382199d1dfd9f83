"""Checks and conventions every ``score`` output follows, post-hoc or DiffGuard."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from oodkit.errors import OodkitError

Outputs = dict[str, torch.Tensor]  # "features", "logits" (and other heads) of one set


@dataclass
class References:
    """Outputs of the sets that score methods compare against."""

    id_train: Outputs | None = None
    outliers: Outputs | None = None


def check_fit(config, bench, allow_resize: bool) -> None:
    """Refuse benchmarks whose images the detector cannot take."""
    if bench.channels != config.in_chans:
        raise OodkitError(
            f"the detector takes {config.in_chans}-channel images but benchmark {bench.name} has "
            f"{bench.channels} channel(s)"
        )
    resizes = config.resize is not None  # an imported classifier's own preprocessing
    if bench.image_size and bench.image_size != config.image_size and not (allow_resize or resizes):
        raise OodkitError(
            f"the detector takes {config.image_size}px images but benchmark {bench.name} has "
            f"{bench.image_size}px images; pass --resize to rescale them"
        )


def map_digest(values: Sequence[int]) -> str:
    """SHA-256 of a class map (a list of indices), its fingerprint in a manifest."""
    return hashlib.sha256(json.dumps(list(values)).encode()).hexdigest()


def set_inputs(benchmark: str, bench, loaded: dict[str, Any]) -> list[dict[str, Any]]:
    """Manifest inputs of the benchmark sets a result is made from: their content
    fingerprints and, for local sets, their folders (no output may go inside them)."""
    from oodkit.data.sources import dataset_input

    sets = bench.all_sets()
    return [dataset_input(f"{benchmark}:{k}", ds, sets[k].local) for k, ds in loaded.items()]


def first(ds, limit: int | None):
    """The first ``limit`` rows of a set (all without a limit)."""
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def detector_label(det: Any, name: str | None = None) -> str:
    """The detector part of a run label: ``name`` (``--label``), else its training loss or,
    for an imported classifier, its source."""
    p = det.manifest.params
    return name or str(p.get("loss") or p.get("source") or "detector")
