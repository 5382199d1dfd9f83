"""The detector's side of post-hoc scoring, shared by ``score`` and DiffGuard's combination:
a set's cached outputs, its image batches for methods that run the network, and the ``Fit``
each registered method is built from."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from oodkit.artifacts import column
from oodkit.errors import OodkitError
from oodkit.methods import Method
from oodkit.scoring.common import Fit, Outputs, head_of, network_of

FIT_SETS = ("id_train", "id_val")  # the benchmark sets a method may be fitted on


def fit_set(bench, key: str):
    """A benchmark set a method is fitted on (refused where the benchmark has none)."""
    if key not in bench.all_sets():
        raise OodkitError(f"benchmark {bench.name} has no {key.replace('_', '-')} set to fit on")
    return bench.load(key)


class Scoring:
    """One detector scoring sets: ``outputs`` (through the feature cache), ``batches`` and
    ``fit``; logits are restricted to ``columns`` (the data's classes among an imported
    classifier's) everywhere."""

    def __init__(
        self,
        model: nn.Module,
        fingerprint: str,
        columns: Sequence[int] | None,
        batch_size: int,
        num_workers: int | str,
        cache: bool,
    ) -> None:
        self.model, self.fingerprint, self.columns = model, fingerprint, columns
        self.batch_size, self.num_workers, self.cache = batch_size, num_workers, cache

    def outputs(self, ds, labels: str | None = None) -> Outputs:
        """Features and logits of ``ds``, with ``labels`` for a fit set: the data's
        (``"true"``) or the detector's predictions (``"predicted"``)."""
        from oodkit.scoring.features import cached_extract

        got = cached_extract(
            self.model, self.fingerprint, ds, self.batch_size, self.num_workers, self.cache
        )
        if self.columns is not None:
            got = {**got, "logits": got["logits"][:, list(self.columns)]}
        if labels == "true":
            got["labels"] = torch.as_tensor(column(ds, "label"), dtype=torch.long)
        elif labels == "predicted":
            got["labels"] = got["logits"].argmax(1)
        return got

    def batches(self, ds) -> Callable[[], Iterator[torch.Tensor]]:
        """A function giving ``ds``'s normalised image batches on the detector's device."""

        from oodkit.scoring.features import eval_table, image_batches

        def iterate() -> Iterator[torch.Tensor]:
            table = eval_table(self.model, ds)
            return image_batches(self.model, table, self.batch_size, self.num_workers)

        return iterate

    def fit(self, method: Method, params: dict[str, Any], refs: dict[str, Outputs]) -> Fit:
        """What ``method`` is built from: its options and what its registration needs."""
        needs, config = method.needs, self.model.config
        return Fit(
            params,
            classes=config.num_classes if self.columns is None else len(self.columns),
            sets={k: v for k, v in refs.items() if k in needs},
            head=head_of(self.model, self.columns) if "head" in needs else None,
            network=network_of(self.model, self.columns) if "network" in needs else None,
            input_std=tuple(config.std),
        )
