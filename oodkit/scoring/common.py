"""Checks and conventions every ``score`` output follows, post-hoc or DiffGuard."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from oodkit.errors import OodkitError
from oodkit.schemas import DetectorParams

# "features", "logits" (and other heads) of one set; a fit set's also "labels"
Outputs = dict[str, torch.Tensor]


@dataclass
class Fit:
    """What a score method is fitted with: its options and what its registration ``needs``.

    This is the one interface between a score method and the detector: ``head`` is the
    classifier layer (``logits = head(features)``, restricted to the scored classes),
    ``network`` maps normalised images to those logits and stays differentiable (for input
    gradients, as ODIN needs), ``input_std`` is the per-channel std of that normalisation.
    ``sets`` holds the outputs of ``id_train`` / ``id_val`` (with their ``labels``: the
    classes, or the detector's predictions for a detector of clusters) and ``outliers``.
    """

    params: dict[str, Any]
    classes: int
    sets: dict[str, Outputs] = field(default_factory=dict)
    head: nn.Linear | None = None
    network: Callable[[torch.Tensor], torch.Tensor] | None = None
    input_std: tuple[float, ...] = ()


@dataclass
class SetData:
    """One scored set: its outputs and, for methods that need the network, its normalised
    image batches on the network's device (one pass per call)."""

    outputs: Outputs
    batches: Callable[[], Iterable[torch.Tensor]] | None = None


# a registered score method: fit(Fit) → scorer; scorer(SetData) → id_score (higher = ID)
Scorer = Callable[[SetData], torch.Tensor]


def head_of(model: nn.Module, columns: Sequence[int] | None) -> nn.Linear:
    """The detector's classifier layer as a float32 CPU ``nn.Linear`` (cached features are
    CPU tensors), restricted to ``columns`` (the data's classes among an imported
    classifier's)."""
    layer = model.classifier_layer()
    weight, bias = layer.weight.detach().float().cpu(), layer.bias
    bias = torch.zeros(len(weight)) if bias is None else bias.detach().float().cpu()
    if columns is not None:
        weight, bias = weight[list(columns)], bias[list(columns)]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.eval().requires_grad_(False)


def network_of(model: nn.Module, columns: Sequence[int] | None):
    """``images → logits`` of the detector (restricted to ``columns``), differentiable."""
    index = list(columns) if columns is not None else None

    def network(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)["logits"]
        return logits if index is None else logits[:, index]

    return network


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
    p = DetectorParams.read(det.manifest.params)
    return name or str(p.loss or p.source or "detector")
