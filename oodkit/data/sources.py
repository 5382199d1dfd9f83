"""Resolve a dataset reference string to a ``datasets.Dataset`` with image, label, sample_id.

A reference is one of (docs/benchmarks.md):

- ``hub:owner/name`` or ``hub:owner/name:split`` — a dataset on the Hugging Face Hub;
- a directory written by ``Dataset.save_to_disk`` or an oodkit artifact with tabular data;
- an image folder, ``class_name/xxx.png`` (labels by sorted folder name) or flat (label -1);
- a built-in benchmark name, optionally with a set: ``digits`` (its ID train set),
  ``digits:id_test``, ``digits:photo-patches``.

Benchmarks are named the same way: a registered built-in (``digits``, with options as a query:
``digits?image_size=32``) or a JSON / YAML file whose references resolve against its folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from oodkit.data.benchmarks import BENCHMARKS, Benchmark, DataSet
from oodkit.data.tables import (
    IMAGE_EXTENSIONS,
    admitted,
    channels_of,
    check_image,
    load_hub,
    load_image_folder,
    load_saved,
    normalise_columns,
    with_channels,
)
from oodkit.errors import OodkitError, brief
from oodkit.options import MAX_IMAGE_SIDE, load_structured
from oodkit.schemas import table_of

SET_NAME = re.compile(r"[\w+-][\w.+-]*")

if TYPE_CHECKING:
    import datasets


def load_dataset_ref(
    ref: str,
    *,
    base_dir: str | Path | None = None,
    channels: int | None = None,
    data_root: str | Path | None = None,
) -> datasets.Dataset:
    """Resolve ``ref`` (see module docstring) to a dataset with image, label and sample_id."""
    from oodkit.artifacts import MANIFEST_NAME, load_artifact

    if ref.startswith("hub:"):
        return with_channels(admitted(load_hub(ref[4:]), ref), channels)
    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        if (path / MANIFEST_NAME).exists():
            ds = normalise_columns(table_of(load_artifact(path)), prefix=path.name)
        elif (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            ds = load_saved(path)
        else:
            ds = load_image_folder(path)
        return with_channels(admitted(ds, ref), channels)
    name, _, set_name = ref.partition(":")
    if name.partition("?")[0] in benchmark_names():
        bench = get_benchmark(name, data_root=data_root)
        ds = bench.load(set_name or "id_train")
        return with_channels(ds, channels if channels is not None else bench.channels)
    raise OodkitError(
        f"unknown dataset reference {ref!r}: not a directory, not hub:OWNER/NAME, "
        f"not a built-in benchmark ({', '.join(benchmark_names())})"
    )


@dataclass
class IdData:
    """An ID training set with what a model needs to know about it."""

    train: datasets.Dataset
    val: datasets.Dataset | None
    channels: int
    image_size: int
    class_names: list[str] | None
    benchmark: str | None


def _is_benchmark(ref: str) -> bool:
    return Path(ref).suffix.lower() in (".json", ".yaml", ".yml") or (
        ref.partition("?")[0] in benchmark_names()
    )


def resolve_id(
    ref: str,
    *,
    data_root: str | Path | None = None,
    image_size: int | None = None,
    val: str | None = None,
) -> IdData:
    """``--id``: a benchmark (its ID train set and ID val set) or any dataset reference.

    For a plain dataset the channel count and image size come from its first image unless
    ``image_size`` is given; ``val`` names an optional validation set.
    """
    if _is_benchmark(ref):
        bench = get_benchmark(ref, data_root=data_root)
        train = bench.load("id_train")
        val_ds = (
            load_dataset_ref(val, data_root=data_root, channels=bench.channels)
            if val
            else (bench.load("id_val") if bench.id_val is not None else None)
        )
        size = image_size or bench.image_size or train[0]["image"].size[0]
        return IdData(train, val_ds, bench.channels, size, bench.class_names, bench.name)
    train = load_dataset_ref(ref, data_root=data_root)
    if len(train) == 0:
        raise OodkitError(f"{ref}: the ID dataset is empty")
    first = train[0]["image"]
    channels = channels_of(first)
    train = with_channels(train, channels)
    val_ds = load_dataset_ref(val, data_root=data_root, channels=channels) if val else None
    return IdData(train, val_ds, channels, image_size or max(first.size), None, None)


def dataset_input(ref: str, ds: datasets.Dataset, local: Path | None = None) -> dict[str, Any]:
    """The manifest ``inputs`` entry of a dataset: its reference, content fingerprint and,
    for a benchmark set read from a local folder, that folder (no output may go inside it)."""
    entry = {"kind": "dataset", "path": ref, "fingerprint": getattr(ds, "_fingerprint", None)}
    return entry | ({"local": str(local)} if local is not None else {})


def load_artifact_or_dataset(
    ref: str, data_root: str | Path | None, channels: int, what: str, kind: str
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """An artifact of ``kind`` or, for a path without a manifest, any dataset reference."""
    from oodkit.artifacts import MANIFEST_NAME, load_artifact

    path = Path(ref)
    if path.is_dir() and (path / MANIFEST_NAME).exists():
        art = load_artifact(path, kind=kind)
        ds, entry = normalise_columns(table_of(art), prefix=path.name), art.as_input()
    else:
        ds = load_dataset_ref(ref, data_root=data_root, channels=channels)
        entry = dataset_input(ref, ds)
    if len(ds) == 0:
        raise OodkitError(f"{what} {ref} is empty")
    return ds, entry


def _parse_options(query: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return opts


def _set_from(
    entry: Any, default_name: str, default_group: str, where: Path, data_root: Path | None
) -> DataSet:
    """One set of a benchmark file: a reference string or {name, group, data}."""
    if isinstance(entry, str):
        name, group, ref = default_name, default_group, entry
    elif isinstance(entry, dict) and "data" in entry:
        name = str(entry.get("name", default_name))
        group, ref = str(entry.get("group", default_group)), str(entry["data"])
    else:
        raise OodkitError(f"{where}: each set needs a 'data' reference")
    if not SET_NAME.fullmatch(name):
        raise OodkitError(
            f"{where}: set name {name!r} must be letters, digits, '_', '-', '.' or '+' and not "
            "start with '.' (it names files)"
        )
    load = partial(load_dataset_ref, ref, base_dir=where.parent, data_root=data_root)
    local = (where.parent / Path(ref).expanduser()).resolve()
    return DataSet(name=name, group=group, loader=load, ref=ref, local=local)


def load_benchmark_file(path: str | Path, data_root: str | Path | None = None) -> Benchmark:
    """Read a custom benchmark from JSON or YAML (docs/benchmarks.md)."""
    path = Path(path)
    spec = load_structured(path, f"benchmark file {path}")
    if not isinstance(spec, dict):
        raise OodkitError(f"{path}: a benchmark file holds one mapping")
    missing = [k for k in ("id_train", "id_test", "ood") if k not in spec]
    if missing:
        raise OodkitError(f"{path}: missing field(s) {', '.join(missing)}")
    if not isinstance(spec.get("ood_val", []), list):
        raise OodkitError(f"{path}: 'ood_val' must be a list of sets")
    if not isinstance(spec["ood"], list) or not spec["ood"]:
        raise OodkitError(f"{path}: 'ood' must be a non-empty list of sets")
    name = str(spec.get("name", path.stem))
    root = Path(data_root) if data_root else None

    def one(entry: Any, default_name: str, group: str) -> DataSet:
        return _set_from(entry, default_name, group, path, root)

    id_val = spec.get("id_val")
    channels = spec.get("channels")
    if channels is not None and (type(channels) is not int or channels not in (1, 3)):
        raise OodkitError(f"{path}: channels must be 1 or 3, got {brief(channels)}")
    size = spec.get("image_size")
    if size is not None and (type(size) is not int or not 1 <= size <= MAX_IMAGE_SIDE):
        raise OodkitError(
            f"{path}: image_size must be an integer in 1..{MAX_IMAGE_SIDE}, got {brief(size)}"
        )
    names = spec.get("class_names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names)
    ):
        raise OodkitError(f"{path}: class_names must be a list of non-empty names")
    if not isinstance(spec.get("name", ""), str):
        raise OodkitError(f"{path}: name must be a string, got {brief(spec['name'])}")
    bench = Benchmark(
        name=name,
        id_train=one(spec["id_train"], "id_train", "id"),
        id_test=one(spec["id_test"], name, "id"),
        id_val=None if id_val is None else one(id_val, "id_val", "id"),
        ood=[one(e, f"ood{i}", "far") for i, e in enumerate(spec["ood"])],
        ood_val=[one(e, f"ood_val{i}", "far") for i, e in enumerate(spec.get("ood_val", []))],
        class_names=spec.get("class_names"),
        image_size=spec.get("image_size"),
    )
    if channels is None:  # from the ID images: grayscale data stays 1-channel
        channels = _first_channels(bench.id_train, path)
    bench.channels = int(channels)
    return bench


def _first_channels(id_train: DataSet, where: Path) -> int:
    """The channel count of an ID train set's first image: read from one file when the set is
    an image folder (no need to index it all), else from the loaded set's first row."""
    from PIL import Image

    folder = Path(id_train.ref or "")
    if not folder.is_absolute():
        folder = where.parent / folder
    if folder.is_dir() and not any((folder / f).exists() for f in ("oodkit.json", "state.json")):
        for dirpath, dirs, names in os.walk(folder):
            dirs.sort()
            images = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
            if images:
                first = Path(dirpath) / images[0]
                check_image(first)  # a regular file, an image, within the pixel limit
                with Image.open(first) as im:
                    return channels_of(im)
    train = id_train.loader()
    if len(train) == 0:
        raise OodkitError(f"{where}: the ID train set {id_train.ref} is empty")
    return channels_of(train[0]["image"])


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
