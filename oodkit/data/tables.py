"""Image tables from files: Hub datasets, ``save_to_disk`` folders and image folders, all
normalised to the image schema (``image``, ``label``, ``sample_id``) and a channel count."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodkit.errors import OodkitError, first_line
from oodkit.schemas import image_features

if TYPE_CHECKING:
    import datasets


def image_mode(channels: int) -> str:
    """PIL mode for a channel count: L (1) or RGB (3)."""
    return "L" if channels == 1 else "RGB"


HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits a sample
GRAY_MODES = ("L", "1", "LA", *HIGH_DEPTH)


def channels_of(image: Any) -> int:
    """1 for a grayscale PIL image, else 3 (what oodkit decodes it to)."""
    return 1 if image.mode in GRAY_MODES else 3


IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def admitted(ds: datasets.Dataset, where: str) -> datasets.Dataset:
    """A dataset as every stage may take it: sample ids unique (they are keys) and a
    fingerprint of its content, not of where it lies (once per dataset object).

    ``datasets`` fingerprints a table loaded from disk by its recorded state and a table of
    image paths by the paths: rewriting the files in place keeps the fingerprint, so caches
    and manifests keyed by it would serve old results. Here the fingerprint also covers the
    bytes of every Arrow file behind the table and of every image file it refers to by path
    (SHA-256, cached by path, size and modification time: a later run re-reads only files
    that changed). In-memory tables are already fingerprinted by their values.
    """
    import hashlib

    import datasets

    from oodkit.artifacts import column
    from oodkit.hashing import FileHashes
    from oodkit.schemas import check_unique

    if getattr(ds, "_oodkit_by_content", False):
        return ds
    if "sample_id" in ds.features:
        check_unique(column(ds, "sample_id"), where)
    files = [Path(c["filename"]) for c in ds.cache_files]
    if isinstance(ds.features.get("image"), datasets.Image):
        import pyarrow.compute as pc

        cells = ds.with_format("arrow").select_columns(["image"])[:]["image"]
        by_path = pc.and_(
            pc.is_null(pc.struct_field(cells, "bytes")), pc.is_valid(pc.struct_field(cells, "path"))
        )
        files += [Path(f) for f in pc.filter(pc.struct_field(cells, "path"), by_path).to_pylist()]
    if files:
        h = hashlib.sha256(str(ds._fingerprint).encode())
        with FileHashes() as hashes:
            for f in files:
                h.update(b"\0" + _digest(hashes, f).encode())
        ds._fingerprint = h.hexdigest()
    ds._oodkit_by_content = True
    return ds


def _digest(hashes: Any, path: Path) -> str:
    try:
        return hashes.digest(path)
    except OSError as exc:
        raise OodkitError(f"cannot read {path}: {exc.strerror}") from None


def to_mode(img: Any, mode: str) -> Any:
    """A PIL image in ``mode`` (L or RGB). Images of more than 8 bits a sample are scaled
    from their full range (16-bit: 65535, a 32-bit TIFF: its bits and sample format, float:
    [0, 1]) to 8 bits, never clipped as PIL's ``convert`` does; values outside that range,
    or an integer image whose range cannot be told, are refused with one line."""
    import numpy as np
    from PIL import Image

    if img.mode == mode:
        return img
    if img.mode in HIGH_DEPTH:
        top = _full_scale(img)
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > top):
            raise OodkitError(
                f"{_name(img)}: {img.mode} image with values outside 0..{top:.10g} (its range); "
                "convert it to 8 or 16 bits"
            )
        img = Image.fromarray(np.round(arr * (255 / top)).astype(np.uint8), "L")
    return img.convert(mode)


def _name(img: Any) -> str:
    return getattr(img, "filename", "") or f"a {img.format or 'decoded'} image"


def _full_scale(img: Any) -> float:
    """The value of full white of a high-bit-depth PIL image."""
    if img.mode == "F":
        return 1.0
    if img.mode.startswith("I;16"):
        return 65535.0
    tags = getattr(img, "tag_v2", None)
    if tags is not None and tags.get(258):  # a TIFF: BitsPerSample, SampleFormat (2: signed)
        bits, signed = int(tags[258][0]), tags.get(339, (1,))[0] == 2
        return float(2 ** (bits - 1) - 1 if signed else 2**bits - 1)
    if img.format in ("PNG", "PPM"):  # 16-bit files PIL opens as 32-bit integers
        return 65535.0
    raise OodkitError(
        f"{_name(img)}: cannot tell the range of this 32-bit integer image; convert it to 8 or "
        "16 bits"
    )


@functools.cache
def _scaled_image() -> type:
    """``ScaledImage``: a ``datasets.Image`` feature that decodes through :func:`to_mode`
    (recorded as ``Image``: its ``_type``). Made on first use, so importing this module does
    not import ``datasets``; reachable by name (PEP 562), so loader workers can unpickle it."""
    import datasets

    @dataclass
    class ScaledImage(datasets.Image):
        def decode_example(self, value: dict, token_per_repo_id=None) -> Any:
            plain = datasets.Image(decode=True)
            with bounded_decoding(value.get("path") or "an image"):
                img = plain.decode_example(value, token_per_repo_id)
            return to_mode(img, self.mode)

    ScaledImage.__module__, ScaledImage.__qualname__ = __name__, "ScaledImage"
    return ScaledImage


def __getattr__(name: str) -> Any:
    if name == "ScaledImage":
        return _scaled_image()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def with_channels(ds: datasets.Dataset, channels: int | None) -> datasets.Dataset:
    """Decode images as grayscale (1) or RGB (3), whatever mode (L, RGBA, P, 16-bit, float,
    ...) they are in (:func:`to_mode`)."""
    if channels is None:
        return ds
    if channels not in (1, 3):
        raise OodkitError(f"channels must be 1 or 3, got {channels}")
    return ds.cast_column("image", _scaled_image()(mode=image_mode(channels)))


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


@contextlib.contextmanager
def bounded_decoding(where: Any) -> Iterator[None]:
    """Decode images with PIL's pixel limit as a hard limit: an image over
    ``Image.MAX_IMAGE_PIXELS`` (a decompression bomb's header, or a picture far beyond any
    model's input) is refused with one line instead of a warning or a traceback."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise OodkitError(f"{where}: {first_line(exc)}") from None


def check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device would block the read
            raise OodkitError(f"{path} is not a regular file")
        with bounded_decoding(path), Image.open(path) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise OodkitError(f"corrupt image file {path}: {first_line(exc)}") from None


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
        check_image(path)
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
            first = next(iter(obj))
            raise OodkitError(
                f"{path} holds several splits ({', '.join(obj)}); pass one of them, "
                f"e.g. {path / first}"
            )
        obj = next(iter(obj.values()))
    return normalise_columns(obj, prefix=path.name)
