"""Benchmarks: ID train / val / test plus named OOD sets tagged ``near`` or ``far``.

Built-ins live in a registry (``register_benchmark``), like timm's model registry; custom
benchmarks are read from files by ``oodkit.data.sources``, which also resolves names. Each set
knows how to load itself (a loader function), so this module needs nothing above it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodkit.data.tables import admitted, with_channels
from oodkit.errors import OodkitError

if TYPE_CHECKING:
    import datasets

GROUPS = ("id", "near", "far")
Loader = Callable[[], "datasets.Dataset"]


@dataclass
class DataSet:
    """One set of a benchmark: a name, a group and how to load it."""

    name: str
    group: str
    loader: Loader
    ref: str | None = None  # the dataset reference it loads (custom benchmarks)
    size: int | None = None  # the expected number of samples, when known
    local: Path | None = None  # the folder it reads, for a custom benchmark's local sets

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise OodkitError(
                f"set {self.name!r}: group must be one of {GROUPS}, got {self.group!r}"
            )


@dataclass
class Benchmark:
    """ID train/test (+ optional val), OOD test sets and optional OOD validation sets."""

    name: str
    id_train: DataSet
    id_test: DataSet
    ood: list[DataSet]
    id_val: DataSet | None = None
    ood_val: list[DataSet] = field(default_factory=list)
    extra: list[DataSet] = field(default_factory=list)  # e.g. held-out outlier pools
    class_names: list[str] | None = None
    image_size: int | None = None
    channels: int = 3
    class_ids: list[str] | None = None  # WordNet ids in label order, where known

    def __post_init__(self) -> None:
        if not self.ood:
            raise OodkitError(f"benchmark {self.name!r} has no OOD test sets")
        names = [s.name for s in self.all_sets().values()]
        if len(set(names)) != len(names) or len(names) != len(self.all_sets()):
            raise OodkitError(f"benchmark {self.name!r} has duplicate set names")

    def all_sets(self) -> dict[str, DataSet]:
        """Every set by the key ``load`` takes: id_train, id_val, id_test or the set's name."""
        sets: dict[str, DataSet] = {"id_train": self.id_train, "id_test": self.id_test}
        if self.id_val is not None:
            sets["id_val"] = self.id_val
        for s in [*self.ood, *self.ood_val, *self.extra]:
            if s.name in sets:
                raise OodkitError(f"benchmark {self.name!r} has duplicate set name {s.name!r}")
            sets[s.name] = s
        return sets

    def load(self, key: str) -> datasets.Dataset:
        """Load one set as a dataset with image, label and sample_id columns."""
        sets = self.all_sets()
        if key not in sets:
            raise OodkitError(
                f"benchmark {self.name!r} has no set {key!r} (sets: {', '.join(sets)})"
            )
        return with_channels(admitted(sets[key].loader(), f"{self.name}:{key}"), self.channels)

    def to_dict(self) -> dict[str, Any]:
        """The custom-benchmark file form (only for benchmarks made of references)."""

        def ref(s: DataSet) -> str:
            if s.ref is None:
                raise OodkitError(f"set {s.name!r} of {self.name!r} is built in, not a reference")
            return s.ref

        out: dict[str, Any] = {
            "name": self.name,
            "id_train": ref(self.id_train),
            "id_test": ref(self.id_test),
            "ood": [{"name": s.name, "group": s.group, "data": ref(s)} for s in self.ood],
            "channels": self.channels,
        }
        if self.id_val is not None:
            out["id_val"] = ref(self.id_val)
        if self.ood_val:
            out["ood_val"] = [
                {"name": s.name, "group": s.group, "data": ref(s)} for s in self.ood_val
            ]
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.image_size is not None:
            out["image_size"] = self.image_size
        return out

    def save(self, path: str | Path) -> None:
        """Write the benchmark as a custom-benchmark JSON file."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {}


def register_benchmark(name: str) -> Callable[[Callable[..., Benchmark]], Callable[..., Benchmark]]:
    """Decorator adding a benchmark factory to the registry under ``name``."""

    def deco(fn: Callable[..., Benchmark]) -> Callable[..., Benchmark]:
        BENCHMARKS[name] = fn
        return fn

    return deco
