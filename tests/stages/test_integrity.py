"""Results follow the content of their inputs (issue 22, classes A and B): a benchmark rewritten
in place, high-bit-depth images, duplicate ids, what eval may average, and artifacts that
point outside themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodkit.artifacts import load_artifact
from oodkit.errors import OodkitError
from oodkit.scoring.features import cache_root
from oodkit.stages.score.run import score


def _images(folder: Path, seed: int, n: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for c in range(2):
        d = folder / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
            Image.fromarray(pixels).save(d / f"{i}.png")


def _bench(root: Path) -> Path:
    _images(root / "id", 0)
    _images(root / "ood", 1)
    spec = {"id_train": "id", "id_test": "id", "ood": [{"name": "o", "data": "ood"}]}
    (root / "bench.json").write_text(json.dumps({**spec, "image_size": 16}))
    return root / "bench.json"


def _scores(art) -> list[float]:
    return list(art.dataset()["id_score"])


def test_a_benchmark_rewritten_in_place_reaches_the_cache_and_the_manifest(
    ce_detector, tmp_path
) -> None:
    bench = _bench(tmp_path)
    [first] = score(ce_detector, str(bench), "energy", tmp_path / "s1", quiet=True)
    cached = set(cache_root().glob("*.safetensors"))
    [again] = score(ce_detector, str(bench), "energy", tmp_path / "s2", quiet=True)
    assert _scores(again) == _scores(first)  # same content: the cache serves it
    assert set(cache_root().glob("*.safetensors")) == cached

    _images(tmp_path / "ood", 7)  # same names, new pixels
    [changed] = score(ce_detector, str(bench), "energy", tmp_path / "s3", quiet=True)
    [fresh] = score(ce_detector, str(bench), "energy", tmp_path / "s4", quiet=True, cache=False)
    assert _scores(changed) == _scores(fresh) != _scores(first)  # not the old features
    assert len(set(cache_root().glob("*.safetensors")) - cached) == 1  # the OOD set's entry
    inputs = {i["path"]: i["fingerprint"] for i in first.manifest.inputs}
    now = {i["path"]: i["fingerprint"] for i in changed.manifest.inputs}
    assert inputs[f"{bench}:o"] != now[f"{bench}:o"]
    assert inputs[f"{bench}:id_test"] == now[f"{bench}:id_test"]
    with pytest.raises(OodkitError, match=r"different inputs \(.*:o changed\)"):
        score(ce_detector, str(bench), "energy", tmp_path / "s1", quiet=True)
    assert _scores(load_artifact(tmp_path / "s1")) == _scores(first)  # refused, not replaced


def test_a_damaged_feature_cache_entry_is_recomputed(ce_detector, tmp_path) -> None:
    bench = _bench(tmp_path)
    before = set(cache_root().glob("*.safetensors"))
    [first] = score(ce_detector, str(bench), "energy", tmp_path / "s1", quiet=True)
    entries = sorted(set(cache_root().glob("*.safetensors")) - before)
    assert len(entries) == 2  # ID test and OOD
    for e in entries:
        e.write_bytes(e.read_bytes()[:40])  # cut off
    [again] = score(ce_detector, str(bench), "energy", tmp_path / "s2", quiet=True)
    assert _scores(again) == _scores(first)
    assert all(e.stat().st_size > 40 for e in entries)  # rewritten


def test_high_bit_depth_images_are_scaled_by_their_range_not_clipped(tmp_path) -> None:
    """The same picture as 8-bit PNG, 16-bit PNG, 16-bit TIFF, signed 32-bit TIFF and float
    TIFF decodes to the same 8-bit pixels (reference: value / full scale × 255, rounded)."""
    from oodkit.data.sources import load_dataset_ref

    pixels = np.random.default_rng(3).integers(0, 256, (12, 12)).astype(np.uint8)
    top32 = 2**31 - 1
    encoded = {
        "a8.png": pixels,
        "b16.png": pixels.astype(np.uint16) * 257,
        "c16.tif": pixels.astype(np.uint16) * 257,
        "d32.tif": np.round(pixels.astype(np.float64) * top32 / 255).astype(np.int32),
        "e.tif": (pixels / 255).astype(np.float32),
    }
    for name, arr in encoded.items():
        Image.fromarray(arr).save(tmp_path / name)
    assert Image.open(tmp_path / "b16.png").mode == "I;16"  # what PIL clipped to 255
    for channels in (1, 3):
        ds = load_dataset_ref(str(tmp_path), channels=channels)
        for row in ds:
            got = np.asarray(row["image"])
            want = pixels if channels == 1 else np.repeat(pixels[..., None], 3, axis=-1)
            np.testing.assert_array_equal(got, want, err_msg=row["sample_id"])


def test_images_outside_their_range_are_refused(tmp_path) -> None:
    from oodkit.data.sources import load_dataset_ref

    Image.fromarray(np.full((4, 4), 1.5, np.float32)).save(tmp_path / "hot.tif")
    ds = load_dataset_ref(str(tmp_path), channels=1)
    with pytest.raises(OodkitError, match=r"hot.tif: F image with values outside 0..1"):
        ds[0]["image"]


def test_repeated_sample_ids_are_refused_where_data_enters(tmp_path) -> None:
    import datasets

    from oodkit.data.sources import load_dataset_ref
    from oodkit.schemas import image_features

    rows = {
        "image": [Image.new("L", (8, 8), i) for i in range(4)],
        "label": [0, 1, 0, 1],
        "sample_id": ["a", "b", "a", "c"],
    }
    datasets.Dataset.from_dict(rows, features=image_features()).save_to_disk(tmp_path / "d")
    with pytest.raises(OodkitError, match=r"sample id 'a' is not unique \(1 repeated"):
        load_dataset_ref(str(tmp_path / "d"))


def test_eval_averages_seeds_of_one_recipe_and_nothing_else(tmp_path) -> None:
    import shutil

    from oodkit.schemas import SetScores, write_scores
    from oodkit.stages.evaluate.run import evaluate

    def run(name: str, seed: int, shift: float, **params) -> Path:
        rng = np.random.default_rng(seed)
        sets = [
            SetScores("test", "id", [f"t{i}" for i in range(20)], rng.normal(1 + shift, 1, 20)),
            SetScores("o", "far", [f"o{i}" for i in range(20)], rng.normal(0, 1, 20)),
        ]
        p = {"method": "energy", "benchmark": "b.json", "seed": seed, **params}
        write_scores(tmp_path / name, sets, p)
        return tmp_path / name

    s0, s1 = run("s0", 0, 0.0), run("s1", 1, 0.0)
    _, [block] = evaluate([s0, s1], tmp_path / "m", plots=False)
    assert block["runs"] == 2
    shutil.copytree(s0, tmp_path / "copy")
    cases = {
        "the same artifact twice": ([s0, s0], "hold the same scores"),
        "a copy of it": ([s0, tmp_path / "copy"], "hold the same scores"),
        "another benchmark": ([s0, run("b", 2, 0.0, benchmark="other.json")], "benchmark"),
        "another temperature": ([s0, run("t", 3, 0.0, temperature=2.0)], "temperature"),
        "a repeated seed": ([s0, s1, run("r", 1, 0.5)], "share seed 1"),
    }
    for what, (arts, message) in cases.items():
        with pytest.raises(OodkitError, match=message):
            evaluate(arts, tmp_path / "refused", plots=False)
        assert not (tmp_path / "refused").exists(), what


def test_an_artifact_never_reaches_outside_itself(tmp_path, make_scores) -> None:
    """A link inside an artifact is refused by load, verify and push alike, naming only its
    place inside; a manifest entry that climbs out is refused before anything is read."""
    import shutil

    from oodkit.artifacts import MANIFEST_NAME, verify_artifact
    from oodkit.stages.push import push_artifact

    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    good = make_scores("s", {"test": ("id", [1.0, 2.0]), "o": ("far", [0.0, 1.0])})
    linked = tmp_path / "linked"
    shutil.copytree(good, linked)
    (linked / "notes.txt").symlink_to(secret)
    for call in (verify_artifact, lambda p: push_artifact(p, "me/x")):
        with pytest.raises(OodkitError, match=r"notes.txt is a symbolic link") as err:
            call(linked)
        assert str(secret) not in str(err.value)
    swapped = tmp_path / "swapped"
    shutil.copytree(good, swapped)
    arrow = next((swapped / "data").glob("*.arrow"))
    shutil.copy(arrow, tmp_path / "elsewhere.arrow")
    arrow.unlink()
    arrow.symlink_to(tmp_path / "elsewhere.arrow")  # same size, same bytes
    with pytest.raises(OodkitError, match="is not a regular file inside it"):
        load_artifact(swapped)
    climbing = tmp_path / "climbing"
    shutil.copytree(good, climbing)
    manifest = json.loads((climbing / MANIFEST_NAME).read_text())
    manifest["files"]["../secret.txt"] = len("outside")
    (climbing / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(OodkitError, match="lists a file outside it"):
        load_artifact(climbing)


def test_special_files_and_decompression_bombs_are_refused_without_reading_them(
    tmp_path, monkeypatch
) -> None:
    import os

    from PIL import Image as PILImage

    from oodkit.data.sources import load_dataset_ref

    fifo = tmp_path / "fifo" / "c0"
    fifo.mkdir(parents=True)
    Image.new("L", (8, 8)).save(fifo / "a.png")
    os.mkfifo(fifo / "b.png")  # opening it for reading would block forever
    with pytest.raises(OodkitError, match=r"b.png is not a regular file"):
        load_dataset_ref(str(tmp_path / "fifo"))
    big = tmp_path / "big" / "c0"
    big.mkdir(parents=True)
    Image.new("L", (64, 64)).save(big / "a.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # a 4096-pixel header is "too big"
    with pytest.raises(OodkitError, match=r"a.png: Image size \(4096 pixels\) exceeds limit"):
        load_dataset_ref(str(tmp_path / "big"))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 3000)  # over the limit, under twice it
    with pytest.raises(OodkitError, match=r"a.png: Image size \(4096 pixels\) exceeds limit"):
        load_dataset_ref(str(tmp_path / "big"))


def test_tampered_manifests_and_columns_are_one_line(tmp_path, make_scores) -> None:
    import shutil

    import datasets

    from oodkit.artifacts import MANIFEST_NAME, verify_artifact, write_artifact
    from oodkit.schemas import read_scores

    good = make_scores("s", {"test": ("id", [1.0, 2.0]), "o": ("far", [0.0, 1.0])})
    verify_artifact(good)

    def edited(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        change(manifest)
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
        return folder

    relabelled = edited("relabelled", lambda m: m["params"].update(label="other"))
    with pytest.raises(OodkitError, match="manifest was changed after it was written"):
        verify_artifact(relabelled)
    for field, value in (("params", []), ("inputs", {}), ("fingerprint", 7), ("summary", "x")):
        bad = edited(f"type-{field}", lambda m, f=field, v=value: m.update({f: v}))
        with pytest.raises(OodkitError, match=f"is corrupt: {field} is not a"):
            load_artifact(bad)
    table = datasets.Dataset.from_dict(
        {"sample_id": ["a"], "dataset": ["t"], "group": ["id"], "id_score": ["high"]}
    )
    write_artifact(tmp_path / "strings", "scores", {"method": "x"}, dataset=table)
    with pytest.raises(OodkitError, match="column id_score holds string, a scores artifact holds"):
        read_scores(tmp_path / "strings")


def test_only_a_writer_failing_on_a_full_disk_becomes_the_disk_error(tmp_path, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    from oodkit.artifacts import as_disk_error

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))  # full
    mapped = as_disk_error(RuntimeError("PytorchStreamWriter failed writing"), tmp_path / "x")
    assert isinstance(mapped, OSError) and mapped.errno == errno.ENOSPC
    refusal = OodkitError("--k 9 must lie in 1..8")
    assert as_disk_error(refusal, tmp_path / "x") is refusal  # already one line: kept
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))  # room left
    bug = RuntimeError("shape mismatch")
    assert as_disk_error(bug, tmp_path / "x") is bug  # a bug stays a bug
    quota = as_disk_error(RuntimeError("IoError: Disk quota exceeded"), tmp_path / "x")
    assert isinstance(quota, OSError)
