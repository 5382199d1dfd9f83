"""Resolve a dataset reference string to a ``datasets.Dataset`` with image, label, sample_id.

A reference is one of (DESIGN.md §4):

- ``hub:owner/name`` or ``hub:owner/name:split`` — a dataset on the Hugging Face Hub;
- a directory written by ``Dataset.save_to_disk`` or an oodkit artifact with tabular data;
- an image folder, ``class_name/xxx.png`` (labels by sorted folder name) or flat (label -1);
- a built-in benchmark name, optionally with a set: ``digits`` (its ID train set),
  ``digits:id_test``, ``digits:photo-patches``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodkit.errors import OodkitError

if TYPE_CHECKING:
    import datasets

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
MODES = {1: "L", 3: "RGB"}


def image_features() -> datasets.Features:
    """The canonical schema of an image dataset."""
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Value("int64"),
            "sample_id": datasets.Value("string"),
        }
    )


def with_channels(ds: datasets.Dataset, channels: int | None) -> datasets.Dataset:
    """Decode images as grayscale (1) or RGB (3), whatever mode (L, RGBA, P, ...) they are in."""
    import datasets

    if channels is None:
        return ds
    if channels not in MODES:
        raise OodkitError(f"channels must be 1 or 3, got {channels}")
    return ds.cast_column("image", datasets.Image(mode=MODES[channels]))


def _hub_offline_message(exc: BaseException) -> str | None:
    text = f"{type(exc).__name__}: {exc}"
    offline_markers = (
        "Offline",
        "offline",
        "ConnectionError",
        "ConnectError",
        "resolve",
        "Max retries",
    )
    return text if any(m in text for m in offline_markers) else None


def load_hub(repo_split: str) -> datasets.Dataset:
    """Load ``owner/name[:split]`` from the Hub; fail fast with one line when offline."""
    import datasets

    repo, _, split = repo_split.partition(":")
    split = split or "train"
    try:
        ds = datasets.load_dataset(repo, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for network failure
        reason = _hub_offline_message(exc)
        if reason is not None:
            first = reason.splitlines()[0]
            raise OodkitError(
                f"cannot load hub:{repo_split}: the Hugging Face Hub is unreachable ({first})"
            ) from None
        raise OodkitError(f"cannot load hub:{repo_split}: {exc}") from None
    return normalise_columns(ds, prefix=f"{repo}/{split}")


def normalise_columns(ds: datasets.Dataset, prefix: str) -> datasets.Dataset:
    """Rename/add columns so the dataset has ``image``, ``label`` and ``sample_id``."""
    import datasets

    feats = ds.features
    if "image" not in feats:
        img_cols = [c for c, f in feats.items() if isinstance(f, datasets.Image)]
        if not img_cols:
            raise OodkitError(f"{prefix}: no image column (columns: {', '.join(feats)})")
        ds = ds.rename_column(img_cols[0], "image")
    if "label" not in ds.features:
        alt = [c for c in ("labels", "fine_label", "class") if c in ds.features]
        ds = ds.rename_column(alt[0], "label") if alt else ds.add_column("label", [-1] * len(ds))
    if "sample_id" not in ds.features:
        ds = ds.add_column("sample_id", [f"{prefix}/{i:07d}" for i in range(len(ds))])
    return ds


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise OodkitError(f"corrupt image file {path}: {exc}") from None


def load_image_folder(root: Path) -> datasets.Dataset:
    """``root/class_name/*.png`` (labels = sorted class folder index) or flat ``root/*.png``."""
    import datasets

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = sorted(
        p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if classes and loose:
        raise OodkitError(
            f"{root} mixes class folders ({classes[0]}/, ...) with loose images ({loose[0].name}, "
            "...): use one layout"
        )
    files: list[tuple[Path, int]] = []
    if classes:
        for label, name in enumerate(classes):
            for dirpath, _, names in sorted(os.walk(root / name)):
                files += [
                    (Path(dirpath) / n, label)
                    for n in sorted(names)
                    if Path(n).suffix.lower() in IMAGE_EXTENSIONS
                ]
    else:
        files = [(p, -1) for p in loose]
    if not files:
        raise OodkitError(f"{root}: no image files found (expected class folders of images)")
    for path, _ in files:
        _check_image(path)
    return datasets.Dataset.from_dict(
        {
            "image": [str(p) for p, _ in files],
            "label": [label for _, label in files],
            "sample_id": [p.relative_to(root).as_posix() for p, _ in files],
        },
        features=image_features(),
    )


def load_saved(path: Path) -> datasets.Dataset:
    """A ``save_to_disk`` directory (Dataset, or a DatasetDict with one split)."""
    import datasets

    obj = datasets.load_from_disk(str(path))
    if isinstance(obj, datasets.DatasetDict):
        if len(obj) != 1:
            raise OodkitError(
                f"{path} holds several splits ({', '.join(obj)}); save the one you want on its own"
            )
        obj = next(iter(obj.values()))
    return normalise_columns(obj, prefix=path.name)


def load_dataset_ref(
    ref: str,
    *,
    base_dir: str | Path | None = None,
    channels: int | None = None,
    data_root: str | Path | None = None,
) -> datasets.Dataset:
    """Resolve ``ref`` (see module docstring) to a dataset with image, label and sample_id."""
    from oodkit.artifacts import MANIFEST_NAME, load_artifact
    from oodkit.data.benchmarks import benchmark_names, get_benchmark

    if ref.startswith("hub:"):
        return with_channels(load_hub(ref[4:]), channels)
    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        if (path / MANIFEST_NAME).exists():
            ds = normalise_columns(load_artifact(path).dataset(), prefix=path.name)
        elif (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            ds = load_saved(path)
        else:
            ds = load_image_folder(path)
        return with_channels(ds, channels)
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
    from oodkit.data.benchmarks import benchmark_names

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
    from oodkit.data.benchmarks import get_benchmark

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
    channels = 1 if first.mode in ("L", "1", "I", "F", "I;16") else 3
    train = with_channels(train, channels)
    val_ds = load_dataset_ref(val, data_root=data_root, channels=channels) if val else None
    return IdData(train, val_ds, channels, image_size or max(first.size), None, None)


def dataset_input(ref: str, ds: datasets.Dataset) -> dict[str, Any]:
    """The manifest ``inputs`` entry of a plain dataset reference."""
    return {"kind": "dataset", "path": ref, "fingerprint": getattr(ds, "_fingerprint", None)}


def load_artifact_or_dataset(
    ref: str, data_root: str | Path | None, channels: int, what: str, kind: str
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """An artifact of ``kind`` or, for a path without a manifest, any dataset reference."""
    from oodkit.artifacts import MANIFEST_NAME, load_artifact

    path = Path(ref)
    if path.is_dir() and (path / MANIFEST_NAME).exists():
        art = load_artifact(path, kind=kind)
        ds, entry = normalise_columns(art.dataset(), prefix=path.name), art.as_input()
    else:
        ds = load_dataset_ref(ref, data_root=data_root, channels=channels)
        entry = dataset_input(ref, ds)
    if len(ds) == 0:
        raise OodkitError(f"{what} {ref} is empty")
    return ds, entry
