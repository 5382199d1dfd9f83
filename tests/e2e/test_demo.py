"""The demos end to end at toy size (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oodkit.artifacts import load_artifact
from oodkit.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The whole chain at toy size (the default sizes take ~15 min; see the closing notes)."""
    args = [
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--seeds",
        "1",
        "--diffusion-steps",
        "20",
        "--epochs",
        "2",
        "--limit",
        "40",
        "--diffguard-limit",
        "8",
        "--quiet",
    ]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "demo" / "metrics" / "metrics.json").read_text())
    methods = {b["method"]: b for b in doc["methods"]}
    # each recipe's Δ near / far AUROC to ce, paired by seed (one seed: no p-value); the rerun
    # reuses every artifact
    from oodkit.demo import DemoOptions, run_demo

    sizes = DemoOptions(seeds=1, diffusion_steps=20, epochs=2, limit=40, diffguard_limit=8)
    _, blocks = run_demo(tmp_path / "demo", sizes, quiet=True)
    deltas = {b["method"]: b.get("delta") for b in blocks}
    assert deltas["ce+energy"] is None and deltas["ce+energy[first 8]"] is None
    for name in ("oe+energy", "sona+energy", "sd+sd-vote"):
        for g in ("near", "far"):
            want = methods[name]["groups"][g]["auroc"] - methods["ce+energy"]["groups"][g]["auroc"]
            assert deltas[name][g]["per_seed"] == [pytest.approx(want)]
            assert deltas[name][g]["p_value"] is None
    diffguard = {
        f"ce[first 8]+diffguard-{path}-{d}{combined}"
        for path in ("cfg", "classifier-steps=25")  # the demo's classifier runs 25, not 100
        for d in ("logits-l1", "ssim")
        for combined in ("", "+energy")
    }
    assert set(methods) == {
        "ce+energy",
        "oe+energy",
        "sona+energy",
        "sd+sd-vote",
        "ce+energy[first 8]",
        *diffguard,
    }
    for block in methods.values():
        assert set(block["datasets"]) == {"digits-5-9", "photo-patches"}
    outliers = load_artifact(tmp_path / "demo" / "outliers-sona")
    assert outliers.kind == "outliers" and len(outliers.dataset()) == 40
    assert (tmp_path / "demo" / "diffusion" / "samples.png").exists()


@pytest.mark.slow
def test_unsupervised_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The label-free chain at toy size: pseudo-labels feed diffusion, generation and the detector."""
    from oodkit.demo import DemoOptions, run_unsupervised_demo

    opts = DemoOptions(
        seeds=1, diffusion_steps=10, epochs=1, limit=30, pretext_epochs=1, scan_epochs=1
    )
    art, blocks = run_unsupervised_demo(tmp_path / "u", opts, quiet=True)
    assert {b["method"] for b in blocks} == {"sd+sd-vote", "sd+energy"}
    assert all(b["id_accuracy"] is None for b in blocks)  # clusters are not label ids
    labels = str(tmp_path / "u" / "pseudo-labels")
    for stage in ("diffusion", "outliers-sd", "detector-sd-seed0"):
        assert labels in [i["path"] for i in load_artifact(tmp_path / "u" / stage).manifest.inputs]


def test_the_bundled_recipes_are_the_sweeps_choices() -> None:
    """oodkit/recipes/digits.yaml holds the cells docs/methods.md §10 names as chosen."""
    from oodkit.demo import read_recipes

    recipes = {r.name: r for r in read_recipes(None)}
    assert list(recipes) == ["ce", "oe", "sona", "sd"]
    assert recipes["ce"].generate is None and recipes["ce"].train["loss"] == "ce"
    assert recipes["oe"].generate == {"method": "sd", "batch_size": 64, "t_start": 300}
    assert recipes["oe"].train["beta"] == 1.0 and recipes["sd"].generate == recipes["oe"].generate
    sona = recipes["sona"]
    assert (sona.generate["ood_condition"], sona.generate["scale"]) == ("class", 10.0)
    assert sona.train["loss"] == "oe" and recipes["sd"].score == "sd-vote"
    shared = {k: v for k, v in recipes["ce"].train.items() if k != "loss"}
    assert all(r.train.items() >= shared.items() for r in recipes.values())
