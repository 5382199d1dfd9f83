"""``oodkit sweep``: a 2 × 2 grid on digits at toy size, chosen on validation sets only."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from oodkit.artifacts import load_artifact
from oodkit.cli import app
from oodkit.data.benchmarks import BENCHMARKS
from oodkit.demo import DEMO_ARCH_KWARGS
from oodkit.schemas import image_features
from oodkit.sweep import cells, read_grid, sweep

GRID = {
    "generate": {"method": "sd", "limit": 24, "batch_size": 24, "t-start": [100, 600]},
    "train detector": {
        "loss": "oe",
        "epochs": 1,
        "batch_size": 32,
        "augment": "crop",
        "arch_kwargs": DEMO_ARCH_KWARGS,
        "beta": [0.5, 2.0],
    },
    "score": {"method": "energy"},
}


def _noise(n: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {
            "image": [
                Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)) for _ in range(n)
            ],
            "label": [-1] * n,
            "sample_id": [f"noise/{i}" for i in range(n)],
        },
        features=image_features(),
    )


def test_the_grid_expands_to_every_combination(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(GRID))
    grid = read_grid(tmp_path / "g.yaml")
    assert grid["generate"]["t_start"] == [100, 600]  # flag spelling normalised
    combos = [(c["generate"]["t_start"], c["train detector"]["beta"]) for c in cells(grid)]
    assert combos == [(100, 0.5), (100, 2.0), (600, 0.5), (600, 2.0)]
    # a list option is fixed as a list of strings, an axis as a list of such lists
    fixed = {"train detector": {"extra_id": ["a"]}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(fixed))
    assert [c["train detector"]["extra_id"] for c in cells(read_grid(tmp_path / "f.yaml"))] == [
        ["a"]
    ]
    axis = {"train detector": {"extra-id": [[], ["a", "b"]], "beta": [0.5, 1.0]}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(axis, sort_keys=False))
    got = [
        (c["train detector"]["extra_id"], c["train detector"]["beta"])
        for c in cells(read_grid(tmp_path / "a.yaml"))
    ]
    assert got == [([], 0.5), ([], 1.0), (["a", "b"], 0.5), (["a", "b"], 1.0)]


@pytest.mark.slow
def test_a_2x2_sweep_picks_its_winner_from_validation_sets_only(
    class_model, tmp_path, monkeypatch
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    doc = sweep("digits", str(class_model), grid, tmp_path / "a", quiet=True)
    rows = doc["cells"]
    assert len(rows) == 4 and all(0 <= r["score"] <= 1 for r in rows)
    assert doc["chosen"] == max(range(4), key=lambda i: (rows[i]["score"], -i))
    out = tmp_path / "a"
    assert len(list(out.glob("outliers-*"))) == 2  # cells that share a generation share it
    assert len(list(out.glob("detector-*"))) == 4
    scores = load_artifact(next(out.glob("scores-*")))
    assert set(scores.dataset()["dataset"]) == {"id_val", "digits-5-9-val", "photo-patches-val"}
    text = (out / "recipe.yaml").read_text()
    assert text.startswith("# chosen by oodkit sweep") and "score with --method energy" in text
    want = {k: v for k, v in rows[doc["chosen"]]["options"].items() if k != "score"}
    assert yaml.safe_load(text) == want
    assert (out / "results.md").read_text().count("(chosen)") == 1 and (
        out / "results.png"
    ).exists()

    # the OOD and ID test sets turned to noise: the same validation numbers, the same choice
    original = BENCHMARKS["digits"]

    def noisy(**kw):
        bench = original(**kw)
        for k, s in enumerate([*bench.ood, bench.id_test]):
            s.loader = lambda k=k: _noise(40, k)
        return bench

    monkeypatch.setitem(BENCHMARKS, "digits", noisy)
    result = CliRunner().invoke(
        app,
        ["sweep", "--id", "digits", "--model", str(class_model), "--grid", str(grid)]
        + ["--out", str(tmp_path / "b"), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["chosen"] == doc["chosen"]
    assert [r["score"] for r in again["cells"]] == [r["score"] for r in rows]

    # the chosen recipe is a config every stage takes
    monkeypatch.setitem(BENCHMARKS, "digits", original)
    chosen = rows[doc["chosen"]]
    det = CliRunner().invoke(
        app,
        ["train", "detector", "--id", "digits", "--config", str(out / "recipe.yaml")]
        + ["--out", str(tmp_path / "det"), "--outliers", str(next(out.glob("outliers-*"))), "-q"],
    )
    assert det.exit_code == 0, det.output
    params = load_artifact(tmp_path / "det").manifest.params
    assert params["beta"] == chosen["options"]["train detector"]["beta"]
    assert params["epochs"] == 1 and params["arch_kwargs"] == DEMO_ARCH_KWARGS


def test_a_benchmark_without_validation_sets_is_refused(class_model, tmp_path: Path) -> None:
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.new("L", (16, 16)).save(tmp_path / "imgs" / "a" / "0.png")
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"id_train": "imgs", "id_test": "imgs", "ood": ["imgs/a"]}))
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(GRID))
    result = CliRunner().invoke(
        app,
        ["sweep", "--id", str(bench), "--model", str(class_model), "--grid"]
        + [str(tmp_path / "g.yaml"), "--out", str(tmp_path / "s")],
    )
    assert result.exit_code == 2 and "has no validation sets (id_val and ood_val)" in result.stderr
    assert not (tmp_path / "s").exists()


def test_the_results_table_lists_only_the_axes(tmp_path: Path) -> None:
    """Axes that vary, then the validation AUROC and the outlier diagnostics some cell has."""
    from oodkit.sweep import SweepOptions, _write_results

    diagnostics = [{}, {"mean_ssim": 0.8, "left_source": 0.25, "reached_target": None}]
    rows = [
        {
            "cell": i,
            "options": {"train detector": {"loss": "ce", "beta": b}},
            "score": s,
            "outliers": d,
            "seconds": 1,
        }
        for i, (b, s, d) in enumerate([(0.5, 0.9, diagnostics[0]), (1.0, 0.95, diagnostics[1])])
    ]
    _write_results(tmp_path, rows, rows[1], SweepOptions())
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert (
        lines[2] == "| cell | train detector.beta | val AUROC | mean_ssim | left_source | seconds |"
    )
    assert lines[4] == "| 0 | 0.5 | 90.00 | - | - | 1 |"
    assert lines[5] == "| 1 **(chosen)** | 1.0 | 95.00 | 0.800 | 0.250 | 1 |"
    single = [dict(rows[0], options={"train detector": {"loss": "ce"}})]
    _write_results(tmp_path, single, single[0], SweepOptions())
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[2:] == [
        "| cell | val AUROC | seconds |",
        "|---|---|---|",
        "| 0 **(chosen)** | 90.00 | 1 |",
    ]
