"""Built-in benchmarks: ``digits`` and ``glyphs`` (bundled, offline), ``cifar10``, ``imagenet200``
(OpenOOD v1.5).

``digits`` uses scikit-learn's bundled 8×8 digits: ID = classes 0–4, near-OOD = classes 5–9,
far-OOD = patches of scikit-learn's bundled sample photographs. All splits are fixed by
``split_seed``; the photo patches for test, validation and the outlier pool come from
disjoint column bands of the photographs, so no pixel is shared between them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from oodkit.data.benchmarks import Benchmark, DataSet, register_benchmark
from oodkit.data.classes import cifar10_classes, imagenet200_classes, imagenet200_wnids
from oodkit.errors import OodkitError
from oodkit.schemas import image_features

if TYPE_CHECKING:
    import datasets
    import numpy as np

# digits split sizes (per class for ID and near-OOD sets)
DIGITS_ID_CLASSES = (0, 1, 2, 3, 4)
DIGITS_NEAR_CLASSES = (5, 6, 7, 8, 9)
DIGITS_ID_TEST_PER_CLASS = 60
DIGITS_ID_VAL_PER_CLASS = 20
DIGITS_NEAR_VAL_PER_CLASS = 20
# photo patches: (number, column band as fractions of the photograph width)
DIGITS_PATCHES = {
    "photo-patches": (800, (0.0, 0.6)),
    "photo-patches-val": (100, (0.6, 0.75)),
    "photo-patches-train": (1000, (0.75, 1.0)),
}
PATCH_SIZE_RANGE = (24, 96)


def _to_dataset(images: list, labels: list[int], ids: list[str]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict(
        {"image": images, "label": labels, "sample_id": ids}, features=image_features()
    )


def _path_dataset(paths: list[str], labels: list[int], ids: list[str]) -> datasets.Dataset:
    """``_to_dataset`` for image paths, its Image column built as Arrow (no bytes, the path):
    the table and fingerprint that encoding each path gives, ~7× faster at 259k lines."""
    import datasets
    import pyarrow as pa

    images = pa.StructArray.from_arrays(
        [pa.nulls(len(paths), pa.binary()), pa.array(paths, pa.string())], names=["bytes", "path"]
    )
    return datasets.Dataset.from_dict(
        {"image": images, "label": pa.array(labels, pa.int64()), "sample_id": pa.array(ids)},
        features=image_features(),
    )


def _digit_image(pixels: np.ndarray, size: int):
    from PIL import Image

    arr = (pixels.reshape(8, 8) * (255.0 / 16.0)).round().astype("uint8")
    return Image.fromarray(arr, mode="L").resize((size, size), Image.BILINEAR)


def _photo_patches(n: int, band: tuple[float, float], size: int, rng: np.random.Generator) -> list:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(img).convert("L") for img in load_sample_images().images]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        x0, x1 = int(band[0] * w), int(band[1] * w)
        side = int(rng.integers(PATCH_SIZE_RANGE[0], min(PATCH_SIZE_RANGE[1], x1 - x0) + 1))
        x = int(rng.integers(x0, x1 - side + 1))
        y = int(rng.integers(0, h - side + 1))
        out.append(photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR))
    return out


@lru_cache(maxsize=4)
def digits_sets(image_size: int = 16, split_seed: int = 0) -> dict[str, datasets.Dataset]:
    """All sets of the digits benchmark, built in memory (about a second)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from oodkit.seeding import numpy_rng

    if not 8 <= image_size <= 256:
        raise OodkitError(f"digits image_size must be in 8..256, got {image_size}")
    data = load_digits()
    rng = numpy_rng(split_seed)
    parts: dict[str, list[int]] = {k: [] for k in ("train", "val", "test", "near", "near_val")}
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(data.target == cls)).tolist()
        if cls in DIGITS_ID_CLASSES:
            t, v = DIGITS_ID_TEST_PER_CLASS, DIGITS_ID_VAL_PER_CLASS
            parts["test"] += idx[:t]
            parts["val"] += idx[t : t + v]
            parts["train"] += idx[t + v :]
        else:
            v = DIGITS_NEAR_VAL_PER_CLASS
            parts["near_val"] += idx[:v]
            parts["near"] += idx[v:]
    names = {
        "train": "id_train",
        "val": "id_val",
        "test": "id_test",
        "near": "digits-5-9",
        "near_val": "digits-5-9-val",
    }
    sets: dict[str, datasets.Dataset] = {}
    for part, idx in parts.items():
        idx = sorted(idx)
        ood = part.startswith("near")
        sets[names[part]] = _to_dataset(
            [_digit_image(data.data[i], image_size) for i in idx],
            [-1 if ood else int(data.target[i]) for i in idx],
            [f"digits/{i:04d}" for i in idx],
        )
    for name, (n, band) in DIGITS_PATCHES.items():
        patch_rng = numpy_rng(split_seed, len(name), n)
        sets[name] = _to_dataset(
            _photo_patches(n, band, image_size, patch_rng),
            [-1] * n,
            [f"{name}/{i:04d}" for i in range(n)],
        )
    return sets


@register_benchmark("digits")
def digits(image_size: int = 16, split_seed: int = 0, data_root: object = None) -> Benchmark:
    """Offline benchmark from scikit-learn's bundled digits and sample photographs."""

    def loader(key: str):
        return lambda: digits_sets(int(image_size), int(split_seed))[key]

    n_id = {0: 178, 1: 182, 2: 177, 3: 183, 4: 181}
    n_near = {5: 182, 6: 181, 7: 179, 8: 174, 9: 180}
    n_test = DIGITS_ID_TEST_PER_CLASS * 5
    n_val = DIGITS_ID_VAL_PER_CLASS * 5
    n_near_val = DIGITS_NEAR_VAL_PER_CLASS * 5
    return Benchmark(
        name="digits",
        id_train=DataSet(
            "id_train", "id", loader=loader("id_train"), size=sum(n_id.values()) - n_test - n_val
        ),
        id_val=DataSet("id_val", "id", loader=loader("id_val"), size=n_val),
        id_test=DataSet("digits-0-4", "id", loader=loader("id_test"), size=n_test),
        ood=[
            DataSet(
                "digits-5-9",
                "near",
                loader=loader("digits-5-9"),
                size=sum(n_near.values()) - n_near_val,
            ),
            DataSet(
                "photo-patches",
                "far",
                loader=loader("photo-patches"),
                size=DIGITS_PATCHES["photo-patches"][0],
            ),
        ],
        ood_val=[
            DataSet("digits-5-9-val", "near", loader=loader("digits-5-9-val"), size=n_near_val),
            DataSet(
                "photo-patches-val",
                "far",
                loader=loader("photo-patches-val"),
                size=DIGITS_PATCHES["photo-patches-val"][0],
            ),
        ],
        extra=[
            DataSet(
                "photo-patches-train",
                "far",
                loader=loader("photo-patches-train"),
                size=DIGITS_PATCHES["photo-patches-train"][0],
            ),
        ],
        class_names=[str(c) for c in DIGITS_ID_CLASSES],
        image_size=int(image_size),
        channels=1,
    )


# glyphs: letters A–E (ID) and F–J (near) in matplotlib's fonts; far: handwritten digits and
# photo patches. Per letter: (train, val, test) for ID, (val, test) for near.
GLYPHS_ID, GLYPHS_NEAR = "ABCDE", "FGHIJ"
GLYPHS_ID_PER_LETTER = (160, 20, 60)
GLYPHS_NEAR_PER_LETTER = (20, 100)
GLYPHS_DIGITS = (500, 100)  # far: handwritten digits (test, val)


@lru_cache(maxsize=4)
def glyphs_sets(image_size: int = 24, split_seed: int = 0) -> dict[str, datasets.Dataset]:
    """All sets of the glyphs benchmark, rendered in memory (a few seconds)."""
    from sklearn.datasets import load_digits

    from oodkit.data.glyphs import glyph_images
    from oodkit.seeding import numpy_rng

    if not 16 <= image_size <= 256:
        raise OodkitError(f"glyphs image_size must be in 16..256, got {image_size}")
    counts = {
        "id_train": (GLYPHS_ID, GLYPHS_ID_PER_LETTER[0]),
        "id_val": (GLYPHS_ID, GLYPHS_ID_PER_LETTER[1]),
        "id_test": (GLYPHS_ID, GLYPHS_ID_PER_LETTER[2]),
        "glyphs-F-J-val": (GLYPHS_NEAR, GLYPHS_NEAR_PER_LETTER[0]),
        "glyphs-F-J": (GLYPHS_NEAR, GLYPHS_NEAR_PER_LETTER[1]),
    }
    sets: dict[str, datasets.Dataset] = {}
    for k, (name, (letters, per)) in enumerate(counts.items()):
        images, labels = glyph_images(letters, per, image_size, (split_seed, 1, k))
        ood = letters == GLYPHS_NEAR
        sets[name] = _to_dataset(
            images,
            [-1 if ood else y for y in labels],
            [f"glyphs/{name}/{i:04d}" for i in range(len(images))],
        )
    digits = load_digits()
    order = numpy_rng(split_seed, 2).permutation(len(digits.target)).tolist()
    n_test, n_val = GLYPHS_DIGITS
    for name, idx in (
        ("handwritten-digits", order[:n_test]),
        ("handwritten-digits-val", order[n_test : n_test + n_val]),
    ):
        idx = sorted(idx)
        sets[name] = _to_dataset(
            [_digit_image(digits.data[i], image_size) for i in idx],
            [-1] * len(idx),
            [f"digits/{i:04d}" for i in idx],
        )
    for name, (n, band) in DIGITS_PATCHES.items():
        patch_rng = numpy_rng(split_seed, len(name), n)
        sets[name] = _to_dataset(
            _photo_patches(n, band, image_size, patch_rng),
            [-1] * n,
            [f"{name}/{i:04d}" for i in range(n)],
        )
    return sets


@register_benchmark("glyphs")
def glyphs(image_size: int = 24, split_seed: int = 0, data_root: object = None) -> Benchmark:
    """Offline benchmark of letters rendered in matplotlib's fonts (another resolution and
    style than digits): ID = A–E, near-OOD = F–J, far-OOD = handwritten digits, photo patches."""

    def s(name: str, group: str, size: int, key: str | None = None) -> DataSet:
        load = lambda: glyphs_sets(int(image_size), int(split_seed))[key or name]  # noqa: E731
        return DataSet(name, group, loader=load, size=size)

    n_id, n_near = len(GLYPHS_ID), len(GLYPHS_NEAR)
    train, val, test = (n_id * c for c in GLYPHS_ID_PER_LETTER)
    near_val, near = (n_near * c for c in GLYPHS_NEAR_PER_LETTER)
    patches = {name: n for name, (n, _) in DIGITS_PATCHES.items()}
    return Benchmark(
        name="glyphs",
        id_train=s("id_train", "id", train),
        id_val=s("id_val", "id", val),
        id_test=s("glyphs-A-E", "id", test, "id_test"),
        ood=[
            s("glyphs-F-J", "near", near),
            s("handwritten-digits", "far", GLYPHS_DIGITS[0]),
            s("photo-patches", "far", patches["photo-patches"]),
        ],
        ood_val=[
            s("glyphs-F-J-val", "near", near_val),
            s("handwritten-digits-val", "far", GLYPHS_DIGITS[1]),
            s("photo-patches-val", "far", patches["photo-patches-val"]),
        ],
        extra=[s("photo-patches-train", "far", patches["photo-patches-train"])],
        class_names=list(GLYPHS_ID),
        image_size=int(image_size),
        channels=1,
    )


# ----------------------------------------------------------------------------------------
# OpenOOD v1.5 benchmarks: image lists ("relative/path label" per line) under a data root
# laid out as OpenOOD's download script leaves it: benchmark_imglist/, images_classic/,
# images_largescale/.

DATA_ROOT_ENV = "OODKIT_OPENOOD_ROOT"


def _data_root(data_root: str | Path | None, bench: str) -> Path:
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise OodkitError(
            f"{bench} needs the OpenOOD v1.5 data folder (with benchmark_imglist/ and "
            f"images_classic/): pass --data-root or set {DATA_ROOT_ENV}"
        )
    root = Path(root).expanduser()
    if not (root / "benchmark_imglist").is_dir():
        raise OodkitError(f"{root} has no benchmark_imglist/ folder (not an OpenOOD data root)")
    return root


def load_image_list(list_file: Path, images_dir: Path, ood: bool) -> datasets.Dataset:
    """An OpenOOD image list as a dataset; OOD sets get label -1. Missing files are named.

    Built for ~259k-line lists: paths joined as strings (``pathlib`` only for lines that need
    normalising) and existence checked with one listing per folder, not a stat per image.
    """
    if not list_file.is_file():
        raise OodkitError(f"image list {list_file} does not exist")
    root = str(images_dir).rstrip("/")
    paths: list[str] = []
    labels: list[int] = []
    ids: list[str] = []
    listed: dict[str, set[str]] = {}  # folder -> its entries
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2 and not ood:
            raise OodkitError(f"{list_file}:{n}: expected 'path label'")
        rel = tokens[0]
        plain = root not in ("", ".") and not (
            rel.startswith(("/", ".")) or "//" in rel or "/." in rel or rel.endswith("/")
        )
        path = f"{root}/{rel}" if plain else str(images_dir / rel)  # == str(Path) when plain
        folder, _, name = path.rpartition("/")
        if folder not in listed:
            try:
                listed[folder] = {e.name for e in os.scandir(folder or "/")}
            except OSError:
                listed[folder] = set()
        if name not in listed[folder]:
            raise OodkitError(f"{list_file}:{n}: image file {path} does not exist")
        paths.append(path)
        labels.append(-1 if ood else int(tokens[1]))
        ids.append(rel)
    return _path_dataset(paths, labels, ids)


def _openood_set(
    root_arg: str | Path | None,
    bench: str,
    name: str,
    group: str,
    rel: str,
    images: str,
    size: int | None,
) -> DataSet:
    def load() -> datasets.Dataset:
        root = _data_root(root_arg, bench)
        return load_image_list(root / "benchmark_imglist" / rel, root / images, ood=group != "id")

    return DataSet(name, group, loader=load, size=size)


@register_benchmark("cifar10")
def cifar10(data_root: str | Path | None = None) -> Benchmark:
    """CIFAR-10 vs CIFAR-100, TinyImageNet (near) and MNIST, SVHN, Textures, Places365 (far)."""
    c, s = "images_classic", lambda *a: _openood_set(data_root, "cifar10", *a)
    return Benchmark(
        name="cifar10",
        id_train=s("id_train", "id", "cifar10/train_cifar10.txt", c, 50000),
        id_val=s("id_val", "id", "cifar10/val_cifar10.txt", c, 1000),
        id_test=s("cifar10", "id", "cifar10/test_cifar10.txt", c, 9000),
        ood=[
            s("cifar100", "near", "cifar10/test_cifar100.txt", c, None),
            s("tin", "near", "cifar10/test_tin.txt", c, 7793),
            s("mnist", "far", "cifar10/test_mnist.txt", c, 70000),
            s("svhn", "far", "cifar10/test_svhn.txt", c, 26032),
            s("texture", "far", "cifar10/test_texture.txt", c, 5640),
            s("places365", "far", "cifar10/test_places365.txt", c, 35195),
        ],
        ood_val=[s("tin-val", "near", "cifar10/val_tin.txt", c, None)],
        class_names=cifar10_classes(),
        image_size=32,
        channels=3,
    )


@register_benchmark("imagenet200")
def imagenet200(data_root: str | Path | None = None) -> Benchmark:
    """ImageNet-200 vs SSB-hard, NINCO (near) and iNaturalist, Textures, OpenImage-O (far)."""
    L, C = "images_largescale", "images_classic"
    s = lambda *a: _openood_set(data_root, "imagenet200", *a)  # noqa: E731
    return Benchmark(
        name="imagenet200",
        id_train=s("id_train", "id", "imagenet200/train_imagenet200.txt", L, None),
        id_val=s("id_val", "id", "imagenet200/val_imagenet200.txt", L, 1000),
        id_test=s("imagenet200", "id", "imagenet200/test_imagenet200.txt", L, 9000),
        ood=[
            s("ssb_hard", "near", "imagenet200/test_ssb_hard.txt", L, 49000),
            s("ninco", "near", "imagenet200/test_ninco.txt", L, 5879),
            s("inaturalist", "far", "imagenet200/test_inaturalist.txt", L, 10000),
            s("textures", "far", "imagenet200/test_textures.txt", C, 5160),
            s("openimage_o", "far", "imagenet200/test_openimage_o.txt", L, 15869),
        ],
        ood_val=[s("openimage_o-val", "far", "imagenet200/val_openimage_o.txt", L, 1763)],
        class_names=imagenet200_classes(),
        image_size=224,
        channels=3,
        class_ids=imagenet200_wnids(),
    )
