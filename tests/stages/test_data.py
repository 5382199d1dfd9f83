"""Dataset references and benchmarks: digits, custom files, image folders, save_to_disk, OpenOOD lists."""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from oodkit.data.builtin import DIGITS_PATCHES
from oodkit.data.classes import imagenet1k, imagenet200_classes, imagenet800_classes
from oodkit.data.sources import get_benchmark, load_benchmark_file, load_dataset_ref
from oodkit.errors import OodkitError


def test_digits_sizes_and_classes_are_fixed() -> None:
    bench = get_benchmark("digits")
    sizes = {k: len(bench.load(k)) for k in bench.all_sets()}
    assert sizes == {
        "id_train": 501,
        "id_val": 100,
        "id_test": 300,
        "digits-5-9": 796,
        "photo-patches": 800,
        "digits-5-9-val": 100,
        "photo-patches-val": 100,
        "photo-patches-train": 1000,
    }
    assert {k: s.size for k, s in bench.all_sets().items()} == sizes
    assert [s.group for s in bench.ood] == ["near", "far"]
    for key in ("id_train", "id_val", "id_test"):
        assert sorted(set(bench.load(key)["label"])) == [0, 1, 2, 3, 4]
    for key in ("digits-5-9", "digits-5-9-val", "photo-patches"):
        assert set(bench.load(key)["label"]) == {-1}
    assert bench.class_names == ["0", "1", "2", "3", "4"] and bench.channels == 1


def test_digits_splits_are_disjoint_and_ood_classes_are_5_to_9() -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    bench = get_benchmark("digits")
    ids = {k: set(bench.load(k)["sample_id"]) for k in bench.all_sets()}
    keys = list(ids)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    classes = lambda key: {int(target[int(s.split("/")[1])]) for s in ids[key]}  # noqa: E731
    assert classes("id_train") | classes("id_test") | classes("id_val") == {0, 1, 2, 3, 4}
    assert classes("digits-5-9") | classes("digits-5-9-val") == {5, 6, 7, 8, 9}
    bands = sorted(band for _, band in DIGITS_PATCHES.values())
    assert all(a[1] <= b[0] for a, b in zip(bands, bands[1:], strict=False))  # photo bands disjoint


def test_digits_is_deterministic_and_resizable() -> None:
    a = get_benchmark("digits").load("id_test")
    b = get_benchmark("digits").load("id_test")
    assert np.array_equal(np.asarray(a[7]["image"]), np.asarray(b[7]["image"]))
    big = get_benchmark("digits?image_size=32").load("photo-patches")
    assert big[0]["image"].size == (32, 32) and big[0]["image"].mode == "L"
    other_split = get_benchmark("digits?split_seed=1").load("id_test")
    assert a["sample_id"] != other_split["sample_id"]
    with pytest.raises(OodkitError, match="bad option"):
        get_benchmark("digits?colour=red")


def test_glyphs_sets_are_fixed_disjoint_and_the_letters_they_name() -> None:
    from oodkit.data.builtin import glyphs_sets
    from oodkit.data.glyphs import GLYPH_FONTS, render_glyph

    bench = get_benchmark("glyphs")
    sizes = {k: len(bench.load(k)) for k in bench.all_sets()}
    assert sizes == {k: s.size for k, s in bench.all_sets().items()}
    assert sizes["id_train"] == 800 and sizes["glyphs-F-J"] == 500
    assert [s.group for s in bench.ood] == ["near", "far", "far"]
    assert [s.group for s in bench.ood_val] == ["near", "far", "far"]
    assert bench.class_names == list("ABCDE") and bench.image_size == 24 and bench.channels == 1
    ids = {k: set(bench.load(k)["sample_id"]) for k in bench.all_sets()}
    keys = list(ids)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    labels = np.asarray(bench.load("id_train")["label"])
    assert np.bincount(labels).tolist() == [160] * 5
    assert set(bench.load("glyphs-F-J")["label"]) == {-1}
    image = bench.load("id_test")[0]["image"]
    assert image.size == (24, 24) and image.mode == "L"
    again = glyphs_sets.__wrapped__(24, 0)["id_test"][0]["image"]  # a fresh render
    assert np.array_equal(np.asarray(image), np.asarray(again))
    assert get_benchmark("glyphs?image_size=32").load("id_val")[0]["image"].size == (32, 32)
    # a letter renders bright, and two letters differ
    rng = np.random.default_rng(0)
    a, f = (np.asarray(render_glyph(c, rng, 24), dtype=float) for c in "AF")
    assert a.max() > 200 and f.max() > 200 and np.abs(a - f).mean() > 5
    assert len(GLYPH_FONTS) == 21


def test_glyphs_refuses_a_missing_font(monkeypatch, tmp_path) -> None:
    import matplotlib

    from oodkit.data import glyphs

    glyphs.font_files.cache_clear()
    monkeypatch.setattr(matplotlib, "get_data_path", lambda: str(tmp_path))
    try:
        with pytest.raises(
            OodkitError, match="glyphs: matplotlib's font DejaVuSans.ttf is missing"
        ):
            glyphs.font_files()
    finally:
        glyphs.font_files.cache_clear()


def _save_png(path: Path, mode: str, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        im = Image.new("P", (10, 10), 3)
        im.putpalette([value] * 768)
    else:
        im = Image.new(mode, (10, 10), value if mode == "L" else (value,) * len(mode))
    im.save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    _save_png(root / "cat" / "a.png", "RGBA", 10)
    _save_png(root / "cat" / "b.png", "L", 20)
    _save_png(root / "dog" / "c.png", "P", 30)
    _save_png(root / "dog" / "sub" / "d.png", "RGB", 40)
    return root


def test_image_folder_labels_and_channel_normalisation(folder: Path) -> None:
    ds = load_dataset_ref(str(folder), channels=3)
    assert ds["label"] == [0, 0, 1, 1]
    assert ds["sample_id"] == ["cat/a.png", "cat/b.png", "dog/c.png", "dog/sub/d.png"]
    assert {im.mode for im in ds["image"]} == {"RGB"}
    assert (
        np.asarray(ds[2]["image"]).shape == (10, 10, 3)
        and np.asarray(ds[2]["image"])[0, 0, 0] == 30
    )
    gray = load_dataset_ref(str(folder), channels=1)
    assert {im.mode for im in gray["image"]} == {"L"}


def test_mixed_folder_layout_is_refused(folder: Path) -> None:
    with pytest.raises(OodkitError, match="mixes class folders"):
        load_dataset_ref(str(folder / "dog"))


def test_corrupt_image_is_named(folder: Path) -> None:
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(OodkitError, match=r"corrupt image file .*broken\.png"):
        load_dataset_ref(str(folder))


def test_save_to_disk_reference_loads(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(3)], "labels": [2, 1, 0]},
        features=datasets.Features({"img": datasets.Image(), "labels": datasets.Value("int64")}),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    got = load_dataset_ref(str(tmp_path / "saved"), channels=1)
    assert got["label"] == [2, 1, 0]
    assert got["sample_id"] == ["saved/0000000", "saved/0000001", "saved/0000002"]
    assert got[1]["image"].mode == "L"


def test_custom_benchmark_round_trip(tmp_path: Path, folder: Path) -> None:
    datasets.Dataset.from_dict({"image": [Image.new("L", (6, 6))], "label": [-1]}).save_to_disk(
        str(tmp_path / "far")
    )
    spec = {
        "name": "mine",
        "id_train": "imgs",
        "id_test": "imgs",
        "ood": [
            {"name": "near-set", "group": "near", "data": "imgs/cat"},
            {"name": "far-set", "group": "far", "data": "far"},
        ],
        "class_names": ["cat", "dog"],
        "image_size": 10,
    }
    (tmp_path / "bench.json").write_text(json.dumps(spec))
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(spec))
    for name in ("bench.json", "bench.yaml"):
        bench = get_benchmark(str(tmp_path / name))
        assert bench.to_dict() == {**spec, "channels": 3}
        assert len(bench.load("id_test")) == 4
        assert bench.load("near-set")["sample_id"] == ["a.png", "b.png"]
        assert bench.load("far-set")[0]["image"].mode == "RGB"
    bench.save(tmp_path / "again.json")
    again = load_benchmark_file(tmp_path / "again.json")
    assert again.to_dict() == bench.to_dict()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{}", "missing field"),
        ('{"id_train": "a", "id_test": "a", "ood": []}', "non-empty list"),
        (
            '{"id_train": "a", "id_test": "a", "ood": [{"data": "b", "group": "middle"}]}',
            "group must be",
        ),
        ("[1, 2", "cannot parse"),
    ],
)
def test_bad_benchmark_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "b.json").write_text(text)
    with pytest.raises(OodkitError, match=message):
        get_benchmark(str(tmp_path / "b.json"))


def test_builtin_references_and_unknown_reference() -> None:
    near = load_dataset_ref("digits:digits-5-9")
    assert len(near) == 796 and near[0]["image"].mode == "L"
    assert len(load_dataset_ref("digits")) == 501  # a benchmark name means its ID train set
    with pytest.raises(OodkitError, match="unknown dataset reference"):
        load_dataset_ref("no-such-thing")
    with pytest.raises(OodkitError, match="has no set 'nope'"):
        load_dataset_ref("digits:nope")


def test_hub_reference_fails_fast_offline() -> None:
    start = time.perf_counter()
    with pytest.raises(OodkitError, match="cannot load hub:someone/some-data"):
        load_dataset_ref("hub:someone/some-data")
    assert time.perf_counter() - start < 10


def test_openood_image_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "openood"
    lists = root / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    for i in range(3):
        _save_png(root / "images_classic" / "cifar10" / "test" / f"{i}.png", "RGB", i)
    (lists / "test_cifar10.txt").write_text(
        "".join(f"cifar10/test/{i}.png {i}\n" for i in range(3))
    )
    (lists / "test_mnist.txt").write_text("cifar10/test/0.png -1\n")
    bench = get_benchmark("cifar10", data_root=root)
    test = bench.load("id_test")
    assert test["label"] == [0, 1, 2] and test["sample_id"][0] == "cifar10/test/0.png"
    assert bench.load("mnist")["label"] == [-1]
    (lists / "test_svhn.txt").write_text("svhn/missing.png -1\n")
    with pytest.raises(
        OodkitError, match=r"test_svhn.txt:1: image file .*missing.png does not exist"
    ):
        bench.load("svhn")
    monkeypatch.delenv("OODKIT_OPENOOD_ROOT", raising=False)
    with pytest.raises(OodkitError, match="--data-root"):
        get_benchmark("cifar10").load("id_test")
    monkeypatch.setenv("OODKIT_OPENOOD_ROOT", str(root))
    assert len(get_benchmark("cifar10").load("id_test")) == 3
    from oodkit.stages.info import benchmark_info

    caption = benchmark_info("cifar10").caption
    assert "warning: id_test (cifar10) has 3 of the 9000 samples it should have (0%)" in caption
    assert "warning: mnist has 1 of the 70000" in caption
    assert "does not exist and 7 more set(s)" in caption


def test_channels_of_a_benchmark_file_come_from_its_images(tmp_path: Path) -> None:
    import datasets

    for mode, want in (("L", 1), ("RGB", 3)):
        folder = tmp_path / mode
        _save_png(folder / "imgs" / "a" / "0.png", mode, 1)
        spec = {"id_train": "imgs", "id_test": "imgs", "ood": ["imgs/a"]}
        (folder / "b.json").write_text(json.dumps(spec))
        bench = get_benchmark(str(folder / "b.json"))
        assert bench.channels == want and bench.load("id_test")[0]["image"].mode == mode
    (tmp_path / "L" / "c.json").write_text(json.dumps({**spec, "channels": 3}))
    assert get_benchmark(str(tmp_path / "L" / "c.json")).load("id_test")[0]["image"].mode == "RGB"

    splits = datasets.DatasetDict(
        {k: datasets.Dataset.from_dict({"label": [0]}) for k in ("train", "test")}
    )
    splits.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(
        OodkitError, match=r"several splits \(train, test\); pass one of them, e\.g\. .*dd/train"
    ):
        load_dataset_ref(str(tmp_path / "dd"))


def test_class_name_lists() -> None:
    assert len(imagenet1k()) == 1000 and imagenet1k()[0] == ("n01440764", "tench")
    assert len(imagenet200_classes()) == 200 and imagenet200_classes()[0] == "goldfish"
    i800 = imagenet800_classes()
    assert len(i800) == 800 and not set(i800) & set(imagenet200_classes())
    assert len(get_benchmark("imagenet200").class_names) == 200
    assert get_benchmark("cifar10").class_names[:2] == ["airplane", "automobile"]


def test_image_list_paths_are_the_pathlib_joins(tmp_path: Path) -> None:
    """The string-joined fast path gives the paths (hence the dataset fingerprint) that
    ``images_dir / token`` gives, normalising lines pathlib would normalise; a missing file
    is named with its list line."""
    from oodkit.data.builtin import _to_dataset, load_image_list

    images = tmp_path / "imgs"
    for rel in ("a/0.png", "a/1.png", "b/c/2.png"):
        _save_png(images / rel, "RGB", 1)
    tokens = ["a/0.png", "./a/1.png", "b//c/2.png", "b/c/./2.png"]
    (tmp_path / "list.txt").write_text("".join(f"{t} 3\n" for t in tokens))
    ds = load_image_list(tmp_path / "list.txt", images, ood=False)
    assert [d["path"] for d in ds.with_format("arrow")["image"].to_pylist()] == [
        str(images / t) for t in tokens
    ]
    assert ds["sample_id"][:] == tokens
    encoded = _to_dataset([str(images / t) for t in tokens], [3] * 4, tokens)  # one by one
    assert ds.data.table.equals(encoded.data.table) and ds.features == encoded.features
    assert ds._fingerprint == encoded._fingerprint  # dataset inputs fingerprint as before
    (tmp_path / "bad.txt").write_text("a/0.png 1\n\na/9.png 1\n")
    with pytest.raises(OodkitError, match=r"bad.txt:3: image file .*a/9.png does not exist"):
        load_image_list(tmp_path / "bad.txt", images, ood=False)
