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
