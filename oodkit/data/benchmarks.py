"""Benchmarks: ID train / val / test plus named OOD sets tagged ``near`` or ``far``.

Built-ins live in a registry (``register_benchmark``), like timm's model registry; custom
benchmarks come from a small JSON or YAML file whose dataset references resolve against the
file's folder. A reference may carry options as a query: ``digits?image_size=32``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

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
    ref: str | None = None  # a dataset reference (custom benchmarks)
    loader: Loader | None = None  # or a function (built-ins)
    size: int | None = None  # the expected number of samples, when known

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
    base_dir: Path | None = None
    data_root: Path | None = None

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
        from oodkit.data.sources import load_dataset_ref, with_channels

        sets = self.all_sets()
        if key not in sets:
            raise OodkitError(
                f"benchmark {self.name!r} has no set {key!r} (sets: {', '.join(sets)})"
            )
        spec = sets[key]
        if spec.loader is not None:
            ds = spec.loader()
        else:
            assert spec.ref is not None
            ds = load_dataset_ref(spec.ref, base_dir=self.base_dir, data_root=self.data_root)
        return with_channels(ds, self.channels)

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


def _parse_options(query: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return opts


def _set_from(entry: Any, default_name: str, default_group: str, where: str) -> DataSet:
    if isinstance(entry, str):
        return DataSet(name=default_name, group=default_group, ref=entry)
    if not isinstance(entry, dict) or "data" not in entry:
        raise OodkitError(f"{where}: each set needs a 'data' reference")
    return DataSet(
        name=str(entry.get("name", default_name)),
        group=str(entry.get("group", default_group)),
        ref=str(entry["data"]),
    )


def load_benchmark_file(path: str | Path, data_root: str | Path | None = None) -> Benchmark:
    """Read a custom benchmark from JSON or YAML (DESIGN.md §4)."""
    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            spec = yaml.safe_load(text)
        else:
            spec = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml and json raise different types
        raise OodkitError(f"{path}: cannot parse benchmark file: {exc}") from None
    if not isinstance(spec, dict):
        raise OodkitError(f"{path}: a benchmark file holds one mapping")
    missing = [k for k in ("id_train", "id_test", "ood") if k not in spec]
    if missing:
        raise OodkitError(f"{path}: missing field(s) {', '.join(missing)}")
    if not isinstance(spec["ood"], list) or not spec["ood"]:
        raise OodkitError(f"{path}: 'ood' must be a non-empty list of sets")
    name = str(spec.get("name", path.stem))
    id_val = spec.get("id_val")
    return Benchmark(
        name=name,
        id_train=_set_from(spec["id_train"], "id_train", "id", str(path)),
        id_test=_set_from(spec["id_test"], name, "id", str(path)),
        id_val=None if id_val is None else _set_from(id_val, "id_val", "id", str(path)),
        ood=[_set_from(e, f"ood{i}", "far", str(path)) for i, e in enumerate(spec["ood"])],
        ood_val=[
            _set_from(e, f"ood_val{i}", "far", str(path))
            for i, e in enumerate(spec.get("ood_val", []))
        ],
        class_names=spec.get("class_names"),
        image_size=spec.get("image_size"),
        channels=int(spec.get("channels", 3)),
        base_dir=path.parent,
        data_root=Path(data_root) if data_root else None,
    )


def benchmark_names() -> list[str]:
    """Names of the registered built-in benchmarks."""
    from oodkit.data import builtin  # noqa: F401 - registers the built-in benchmarks

    return sorted(BENCHMARKS)


def get_benchmark(ref: str, *, data_root: str | Path | None = None) -> Benchmark:
    """A built-in benchmark by name (``digits``, ``digits?image_size=32``) or a benchmark file."""
    path = Path(ref).expanduser()
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise OodkitError(f"benchmark file {path} does not exist")
        return load_benchmark_file(path, data_root=data_root)
    name, _, query = ref.partition("?")
    if name not in benchmark_names():
        raise OodkitError(
            f"unknown benchmark {ref!r}: built-ins are {', '.join(benchmark_names())}, "
            "or give a .json/.yaml benchmark file"
        )
    options = _parse_options(query)
    try:
        return BENCHMARKS[name](data_root=data_root, **options)
    except TypeError as exc:
        raise OodkitError(f"benchmark {name!r}: bad option ({exc})") from None
