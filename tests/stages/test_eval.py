"""``oodkit eval``: hand-computed numbers, outputs, seeds, and refusal of bad scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from oodkit.artifacts import load_artifact, write_artifact
from oodkit.cli import app
from oodkit.metrics import ood_metrics

runner = CliRunner()

# ID = [1, 2, 3, 4]; near "a" = [0, 2.5]; far "b" = [5, 6]. Worked by hand (OOD positive,
# s = -id_score): for "a", 6 of the 8 (ID, OOD) pairs rank the OOD sample lower -> AUROC 0.75;
# detecting both OOD samples needs a cut at 2.5, which flags ID {1, 2} -> FPR@95 0.5; keeping
# every ID sample (cut at 1) accepts 2.5 -> FPR@95-classic 0.5. PR-IN points (recall,
# precision) from the top: (.25,1) (.5,1) (.5,2/3) (.75,.75) (1,.8) (1,4/6), trapezoids from
# (0,1) give 0.25 + 0.25 + 0.1770833 + 0.19375 = 0.8708333. PR-OUT from the bottom: (.5,1)
# (.5,.5) (.5,1/3) (1,.5) (1,.4) (1,1/3) -> 0.5 + 0.2083333 = 0.7083333. "b" is ranked
# entirely as ID: AUROC 0, both FPR@95 = 1, AUPR-IN 0.0416667 + 0.1041667 + 0.1375 +
# 0.1583333 = 0.4416667, AUPR-OUT 0.05 + 0.1333333 = 0.1833333.
HAND = {
    "a": {
        "auroc": 0.75,
        "aupr_in": 0.8708333333,
        "aupr_out": 0.7083333333,
        "fpr95": 0.5,
        "fpr95_classic": 0.5,
    },
    "b": {
        "auroc": 0.0,
        "aupr_in": 0.4416666667,
        "aupr_out": 0.1833333333,
        "fpr95": 1.0,
        "fpr95_classic": 1.0,
    },
}
SETS = {"test": ("id", [1.0, 2.0, 3.0, 4.0]), "a": ("near", [0.0, 2.5]), "b": ("far", [5.0, 6.0])}


def test_eval_reproduces_hand_computed_numbers(make_scores, tmp_path: Path) -> None:
    scores = make_scores("s", SETS, pred=[0, 1, 1, 0], label=[0, 1, 0, 0])
    out = tmp_path / "metrics"
    result = runner.invoke(app, ["eval", str(scores), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["method"] == "energy" and doc["runs"] == 1 and doc["n_id"] == 4
    assert doc["id_accuracy"] == 0.75
    for name, want in HAND.items():
        got = doc["datasets"][name]
        assert got["n"] == 2
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=1e-9), (name, k)
    assert doc["datasets"]["a"]["group"] == "near" and doc["datasets"]["b"]["group"] == "far"
    assert doc["groups"]["near"]["auroc"] == 0.75 and doc["groups"]["far"][
        "aupr_out"
    ] == pytest.approx(0.1833333333)
    md = (out / "metrics.md").read_text()
    assert "| energy (1 run) | 75.00 | 75.00 | 0.00 ⚠ | 0.00 ⚠ | 75.00 |" in md
    assert (
        "### FPR@95-classic" in md and "| energy (1 run) | 50.00 | 50.00 | 100.00 | 100.00 |" in md
    )
    for png in ("plots/roc-energy.png", "plots/hist-energy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    art = load_artifact(out, kind="metrics")
    assert art.manifest.inputs[0]["fingerprint"] == load_artifact(scores).manifest.fingerprint
    assert len(art.dataset()) == 2
    assert "AUROC" in result.output and "near mean" in result.output


def test_eval_groups_means_and_seeds(make_scores, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths, per_run = [], []
    for seed in range(3):
        sets = {
            "test": ("id", rng.normal(1, 1, 50)),
            "n1": ("near", rng.normal(0, 1, 40)),
            "n2": ("near", rng.normal(0.5, 1, 30)),
            "f1": ("far", rng.normal(-2, 1, 20)),
        }
        paths.append(make_scores(f"s{seed}", sets, seed=seed))
        per_run.append(
            {n: ood_metrics(sets["test"][1], s) for n, (_, s) in sets.items() if n != "test"}
        )
    other = make_scores("msp", {"test": ("id", [1.0, 2.0]), "n1": ("near", [0.0])}, method="msp")
    out = tmp_path / "m"
    result = runner.invoke(
        app, ["eval", *map(str, paths), str(other), "--out", str(out), "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    blocks = json.loads((out / "metrics.json").read_text())["methods"]
    energy = next(b for b in blocks if b["method"] == "energy")
    assert energy["runs"] == 3 and energy["id_accuracy"] is None
    for k in ("auroc", "fpr95"):
        vals = [r["n1"][k] for r in per_run]
        assert energy["datasets"]["n1"][k] == pytest.approx(
            {"mean": np.mean(vals), "std": np.std(vals)}
        )
        near = [(r["n1"][k] + r["n2"][k]) / 2 for r in per_run]
        assert energy["groups"]["near"][k]["mean"] == pytest.approx(np.mean(near))
    assert next(b for b in blocks if b["method"] == "msp")["runs"] == 1
    assert " ± " in (out / "metrics.md").read_text()
    assert not (out / "plots").exists()


def test_rerun_is_up_to_date_and_changes_are_refused(make_scores, tmp_path: Path) -> None:
    scores = make_scores("s", SETS)
    out = tmp_path / "m"
    assert runner.invoke(app, ["eval", str(scores), "--out", str(out)]).exit_code == 0
    first = load_artifact(out).manifest.created
    assert runner.invoke(app, ["eval", str(scores), "--out", str(out)]).exit_code == 0
    assert load_artifact(out).manifest.created == first
    refused = runner.invoke(app, ["eval", str(scores), "--out", str(out), "--no-plots"])
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    forced = runner.invoke(
        app, ["eval", str(scores), "--out", str(out), "--no-plots", "--overwrite"]
    )
    assert forced.exit_code == 0 and not (out / "plots").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("nan", "ID set has 1 NaN value"),
        ("inf", "OOD set 'ood' has 1 infinite value"),
        ("no-id", "ID set is empty"),
        ("no-ood", "OOD set is empty"),
        ("missing-column", "lacks column(s) id_score"),
    ],
)
def test_bad_scores_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, case: str, message: str, broken_scores
) -> None:
    scores = tmp_path / f"scores-{case}"
    write_artifact(scores, "scores", {"method": "x"}, dataset=broken_scores(case))
    out = tmp_path / "metrics"
    result = runner.invoke(app, ["eval", str(scores), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob("metrics*"))


def test_wrong_kind_and_missing_input(tmp_path: Path) -> None:
    write_artifact(tmp_path / "det", "detector", {})
    result = runner.invoke(app, ["eval", str(tmp_path / "det"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "is a detector artifact, expected scores" in result.stderr
    result = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no such directory" in result.stderr


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--debug", "eval", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 1 and type(result.exception).__name__ == "OodkitError"


def test_an_ood_set_below_chance_is_flagged_everywhere(make_scores, tmp_path: Path) -> None:
    """OOD samples scored as more in-distribution than the ID set: AUROC < 50 is a finding."""
    scores = make_scores(
        "s",
        {
            "test": ("id", [0.1, 0.2, 0.3, 0.4]),
            "good": ("near", [0.0, 0.05]),
            "inverted": ("far", [0.9, 0.35]),
        },
    )
    out = tmp_path / "m"
    result = runner.invoke(app, ["eval", str(scores), "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    # inverted: 0.9 beats every ID score, 0.35 beats 3 of 4 → P(OOD > ID) = 7/8 → AUROC 12.5
    assert result.stderr.splitlines() == [
        "warning: energy ranks OOD set inverted below chance (AUROC 12.50)",
        "warning: energy ranks OOD set far mean below chance (AUROC 12.50)",
    ]
    md = (out / "metrics.md").read_text()
    assert "| 12.50 ⚠ |" in md and "AUROC below 50" in md and "| 100.00 |" in md
    low = load_artifact(out).manifest.summary["below_chance"]
    assert [(x["set"], round(x["auroc"], 4)) for x in low] == [
        ("inverted", 0.125),
        ("far mean", 0.125),
    ]
    fine = make_scores("t", {"test": ("id", [1.0, 2.0]), "o": ("far", [0.0])})
    ok = runner.invoke(app, ["eval", str(fine), "--out", str(tmp_path / "n"), "--no-plots"])
    assert ok.stderr == "" and "⚠" not in (tmp_path / "n" / "metrics.md").read_text()


def test_openood_csv_has_openood_columns_and_the_hand_computed_numbers(
    make_scores, tmp_path: Path
) -> None:
    scores = make_scores("s", SETS, pred=[0, 1, 1, 0], label=[0, 1, 0, 0])
    out = tmp_path / "metrics"
    args = ["eval", str(scores), "--out", str(out), "--no-plots", "--format", "openood-csv"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (out / "metrics.md").exists() and (out / "metrics.json").exists()
    assert (out / "openood.csv").read_text().splitlines() == [
        "method,dataset,FPR@95,AUROC,AUPR_IN,AUPR_OUT,ACC",
        "energy,a,50.00,75.00,87.08,70.83,75.00",
        "energy,nearood,50.00,75.00,87.08,70.83,75.00",
        "energy,b,100.00,0.00,44.17,18.33,75.00",
        "energy,farood,100.00,0.00,44.17,18.33,75.00",
    ]
    bad = runner.invoke(app, [*args[:-1], "html", "--overwrite"])
    assert (
        bad.exit_code == 2 and "unknown format 'html' (one of markdown, openood-csv)" in bad.output
    )


def test_the_summary_table_shows_a_paired_delta_where_a_block_has_one() -> None:
    from rich.console import Console

    from oodkit import report
    from oodkit.metrics import paired_delta

    def block(method, near, far, delta=None):
        b = {
            "method": method,
            "runs": 3,
            "groups": {"near": {"auroc": near, "fpr95": 0.2}, "far": {"auroc": far, "fpr95": 0.3}},
            "id_accuracy": 0.99,
            "datasets": {},
        }
        return b | ({"delta": delta} if delta else {})

    d = paired_delta([0.95, 0.96, 0.94], [0.93, 0.95, 0.94])
    blocks = [block("ce", 0.94, 0.5), block("oe", 0.95, 0.9, {"near": d})]
    console = Console(width=200, record=True)
    console.print(report.summary_table(blocks))
    text = console.export_text()
    assert "Δ near (p)" in text and "Δ far (p)" in text
    assert f"+1.00 ± {100 * d['std']:.2f} ({d['p_value']:.2f})" in text
    console = Console(width=200, record=True)
    console.print(report.summary_table(blocks[:1]))
    assert "Δ" not in console.export_text()  # no block with a delta: no column
