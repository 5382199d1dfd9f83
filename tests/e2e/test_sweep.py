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
from oodkit.errors import OodkitError
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
    axis = {"train detector": {"loss": "oe", "extra-id": [[], ["a", "b"]], "beta": [0.5, 1.0]}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(axis, sort_keys=False))
    got = [
        (c["train detector"]["extra_id"], c["train detector"]["beta"])
        for c in cells(read_grid(tmp_path / "a.yaml"))
    ]
    assert got == [([], 0.5), ([], 1.0), (["a", "b"], 0.5), (["a", "b"], 1.0)]


def test_a_cell_keeps_only_the_options_its_loss_reads(tmp_path: Path) -> None:
    """``loss: [ce, oe, sona] × beta: [0.5, 1]``: one ce cell without β, generation or an
    outlier score (it is its own baseline), two oe and two sona cells; an option that no loss
    of the grid reads is refused."""
    grid = {
        "generate": {"method": "sd", "t_start": 300},
        "train detector": {"loss": ["ce", "oe", "sona"], "beta": [0.5, 1.0], "club_lr": 0.01},
        "score": {"method": "sd-vote", "k": 5},
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    got = cells(read_grid(tmp_path / "g.yaml"))
    assert [c["train detector"] for c in got] == [
        {"loss": "ce"},
        {"loss": "oe", "beta": 0.5},
        {"loss": "oe", "beta": 1.0},
        {"loss": "sona", "beta": 0.5, "club_lr": 0.01},
        {"loss": "sona", "beta": 1.0, "club_lr": 0.01},
    ]
    assert got[0]["generate"] == {} and got[0]["score"] == {"method": "energy"}
    assert all(c["generate"] == {"method": "sd", "t_start": 300} for c in got[1:])
    unread = {"train detector": {"loss": ["ce", "oe"], "sd_lambda": 1}}
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(unread))
    with pytest.raises(OodkitError, match="--sd-lambda is an option of sd, not of --loss ce,oe"):
        read_grid(tmp_path / "u.yaml")


def test_a_cell_that_beats_its_baseline_loses_to_a_stronger_baseline(tmp_path: Path) -> None:
    """b0 0.88 < cell0 0.90 (beats b0), cell1 0.94 < b1 0.95: the recipe is b1, and the
    report says outliers help only a weaker recipe."""
    from oodkit.sweep import SweepOptions, _write_results, choose, compare

    rows = [_row(0, 0.5, 0.90, [0.89, 0.91]), _row(1, 1.0, 0.94, [0.93, 0.95])]
    rows[1]["baseline"] = 1
    baselines = [_base(0.88, [0.87, 0.89]), {**_base(0.95, [0.95, 0.95]), "baseline": 1}]
    o = SweepOptions(seeds=2)
    compare(rows, baselines, o.alpha)
    assert rows[0]["delta"]["beats"] and not rows[1]["delta"]["beats"]
    best, helped = choose(rows, baselines)
    assert best is baselines[1] and not helped
    _write_results(tmp_path, rows, baselines, best, helped, o)
    verdict = (tmp_path / "results.md").read_text().splitlines()[2]
    assert verdict.startswith("**Outliers do not help the best recipe: a no-outlier baseline")
    recipe = (tmp_path / "recipe.yaml").read_text()
    assert "(baseline 1: a cell beat its own baseline, but this baseline scores higher)" in recipe
    assert yaml.safe_load(recipe)["train detector"] == {"loss": "ce"}
    rows[0]["seed_scores"][1] = None  # a seed without a score: no Δ, no p of NaN
    compare(rows, baselines, o.alpha)
    assert rows[0]["delta"] is None


@pytest.mark.slow
def test_a_2x2_sweep_picks_its_winner_from_validation_sets_only(
    class_model, tmp_path, monkeypatch
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    doc = sweep("digits", str(class_model), grid, tmp_path / "a", quiet=True)
    rows, (base,) = doc["cells"], doc["baselines"]  # one detector recipe: one baseline
    assert len(rows) == 4 and all(0 <= r["score"] <= 1 for r in rows + [base])
    assert base["options"]["train detector"]["loss"] == "ce"
    assert "beta" not in base["options"]["train detector"] and not base["options"]["generate"]
    # one seed: a positive Δ to the baseline decides
    for r in rows:
        assert r["delta"]["per_seed"] == [pytest.approx(r["score"] - base["score"])]
    winners = [i for i in range(4) if rows[i]["score"] > base["score"]]
    want_cell = max(winners, key=lambda i: (rows[i]["score"], -i)) if winners else None
    assert doc["chosen"] == want_cell and doc["outliers_help"] == bool(winners)
    out = tmp_path / "a"
    assert len(list(out.glob("outliers-*"))) == 2  # cells that share a generation share it
    assert len(list(out.glob("detector-*"))) == 5  # four cells and their baseline
    scores = load_artifact(next(out.glob("scores-*")))
    assert set(scores.dataset()["dataset"]) == {"id_val", "digits-5-9-val", "photo-patches-val"}
    text = (out / "recipe.yaml").read_text()
    assert text.startswith("# chosen by oodkit sweep") and "score with --method energy" in text
    chosen = rows[want_cell] if winners else base
    want = {k: v for k, v in chosen["options"].items() if k != "score" and v}
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
    assert again["baselines"][0]["score"] == base["score"]

    # the chosen recipe is a config every stage takes
    monkeypatch.setitem(BENCHMARKS, "digits", original)
    outliers = ["--outliers", str(next(out.glob("outliers-*")))] if winners else []
    det = CliRunner().invoke(
        app,
        ["train", "detector", "--id", "digits", "--config", str(out / "recipe.yaml")]
        + ["--out", str(tmp_path / "det"), *outliers, "-q"],
    )
    assert det.exit_code == 0, det.output
    params = load_artifact(tmp_path / "det").manifest.params
    assert params["loss"] == chosen["options"]["train detector"]["loss"]
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


def _row(i, beta, score, seeds, diagnostics=None, baseline=0):
    return {
        "cell": i,
        "baseline": baseline,
        "options": {"train detector": {"loss": "oe", "beta": beta}, "generate": {"t_start": 5}},
        "score": score,
        "seed_scores": seeds,
        "outliers": diagnostics or {},
        "seconds": 1,
    }


def _base(score, seeds):
    return {
        "baseline": 0,
        "options": {"train detector": {"loss": "ce"}, "generate": {}, "score": {}},
        "score": score,
        "seed_scores": seeds,
        "outliers": {},
        "seconds": 2,
    }


def test_the_results_table_lists_the_axes_and_the_delta_to_the_baseline(tmp_path: Path) -> None:
    """Axes that vary, the validation AUROC, Δ to the baseline with its p-value, and the
    outlier diagnostics some cell has; baselines first."""
    from oodkit.sweep import SweepOptions, _write_results, choose, compare

    diagnostics = {"mean_ssim": 0.8, "left_source": 0.25, "auto": {"t_start": 270}}
    rows = [_row(0, 0.5, 0.90, [0.89, 0.91]), _row(1, 1.0, 0.95, [0.94, 0.96], diagnostics)]
    baselines = [_base(0.91, [0.90, 0.92])]
    o = SweepOptions(seeds=2)
    compare(rows, baselines, o.alpha)
    assert rows[1]["delta"]["per_seed"] == pytest.approx([0.04, 0.04])
    assert rows[1]["delta"]["p_value"] == 0.0 and rows[1]["delta"]["beats"]  # no spread
    best, helped = choose(rows, baselines)
    assert best is rows[1] and helped
    _write_results(tmp_path, rows, baselines, best, helped, o)
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[2].startswith("**Outliers help: the chosen cell beats")
    assert lines[4] == (
        "| cell | train detector.beta | val AUROC | Δ to baseline | p | mean_ssim | left_source "
        "| auto | seconds |"
    )
    assert lines[6] == "| baseline 0 | - | 91.00 | 0 | - | - | - | - | 2 |"
    assert lines[7] == "| 0 | 0.5 | 90.00 | -1.00 ± 0.00 | 1.000 | - | - | - | 1 |"
    assert (
        lines[8]
        == "| 1 **(chosen)** | 1.0 | 95.00 | +4.00 ± 0.00 | 0.000 | 0.800 | 0.250 | t_start=270 | 1 |"
    )


def test_the_sweep_writes_the_baseline_recipe_when_every_cell_loses(tmp_path: Path) -> None:
    from oodkit.sweep import SweepOptions, _write_results, choose, compare

    # cell 1 is better on average but not beyond seed noise (Δ +0.03 and −0.01)
    rows = [_row(0, 0.5, 0.80, [0.79, 0.81]), _row(1, 1.0, 0.92, [0.93, 0.91])]
    baselines = [_base(0.91, [0.90, 0.92])]
    o = SweepOptions(seeds=2)
    compare(rows, baselines, o.alpha)
    assert rows[1]["delta"]["mean"] == pytest.approx(0.01) and not rows[1]["delta"]["beats"]
    best, helped = choose(rows, baselines)
    assert best is baselines[0] and not helped
    _write_results(tmp_path, rows, baselines, best, helped, o)
    md = (tmp_path / "results.md").read_text()
    assert "**Outliers do not help: no cell beats its no-outlier baseline beyond seed noise" in md
    assert md.count("(chosen)") == 1 and "| baseline 0 **(chosen)** |" in md
    recipe = (tmp_path / "recipe.yaml").read_text()
    assert "no cell beat its no-outlier baseline" in recipe.splitlines()[0]
    assert yaml.safe_load(recipe) == {"train detector": {"loss": "ce"}}
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["chosen"] is None and doc["chosen_baseline"] == 0 and not doc["outliers_help"]


def test_a_filter_cell_reports_the_diagnostics_of_the_rows_it_kept(tmp_path: Path) -> None:
    """The generation's diagnostics are replaced by the kept rows', with the share kept, and
    the table shows the kept column; an unfiltered cell keeps the generation's."""
    from oodkit.sweep import SweepOptions, _write_results, choose, compare, trained_on

    made = {"mean_ssim": 0.6, "left_source": 0.5, "reached_target": 0.1}
    summary = {
        "outliers_kept": {"o": [10, 40]},
        "kept_diagnostics": {"o": {"mean_ssim": 0.3, "left_source": 1.0, "reached_target": 0.4}},
    }
    kept = trained_on(made, summary, "o")
    assert kept == {"mean_ssim": 0.3, "left_source": 1.0, "reached_target": 0.4, "kept": 0.25}
    assert trained_on(made, {"outliers_kept": {"o": [40, 40]}}, "o") == made
    rows = [_row(0, 0.5, 0.90, [0.89, 0.91], made), _row(1, 1.0, 0.95, [0.94, 0.96], kept)]
    baselines = [_base(0.91, [0.90, 0.92])]
    o = SweepOptions(seeds=2)
    compare(rows, baselines, o.alpha)
    best, helped = choose(rows, baselines)
    _write_results(tmp_path, rows, baselines, best, helped, o)
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[4].endswith("| mean_ssim | left_source | reached_target | kept | seconds |")
    assert lines[7].endswith("| 0.600 | 0.500 | 0.100 | - | 1 |")
    assert lines[8].endswith("| 0.300 | 1.000 | 0.400 | 0.250 | 1 |")


def test_the_paired_delta_is_the_hand_computed_t_test() -> None:
    from scipy import stats

    from oodkit.metrics import paired_delta

    a, b = [0.91, 0.95, 0.90, 0.97, 0.93], [0.90, 0.92, 0.91, 0.93, 0.90]
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    got = paired_delta(a, b, alpha=0.05)
    assert got["p_value"] == pytest.approx(stats.t.sf(t, len(d) - 1))
    assert got["mean"] == pytest.approx(d.mean()) and got["std"] == pytest.approx(d.std())
    assert got["beats"] == (got["p_value"] < 0.05)
    one = paired_delta([0.9], [0.8])
    assert one["p_value"] is None and one["beats"]
    assert not paired_delta([0.8], [0.9])["beats"]


def test_a_baseline_drops_what_only_outlier_losses_read() -> None:
    from oodkit.sweep import baseline_of

    cell = {
        "generate": {"method": "sd", "t_start": 300},
        "train detector": {"loss": "sd", "epochs": 3, "sd_lambda": 0.3, "outlier_filter": "left"},
        "score": {"method": "sd-vote", "k": 5},
    }
    assert baseline_of(cell) == {
        "generate": {},
        "train detector": {"loss": "ce", "epochs": 3},
        "score": {"method": "energy"},
    }
    oe = {
        "generate": {"method": "sd"},
        "train detector": {"loss": "oe", "beta": 1.0},
        "score": {"method": "msp"},
    }
    assert baseline_of(oe)["score"] == {"method": "msp"}
