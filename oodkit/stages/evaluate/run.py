"""The ``eval`` stage: scores artifacts in, a metrics artifact (JSON, Markdown, plots) out."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from oodkit import report
from oodkit.artifacts import Artifact, check_output, load_artifact, write_artifact
from oodkit.errors import OodkitError, brief
from oodkit.locks import writes_output
from oodkit.metrics import METRIC_KEYS, group_means, mean_std, ood_metrics
from oodkit.options import with_overrides
from oodkit.schemas import (
    OOD_GROUPS,
    MetricsSummary,
    ScoreRun,
    ScoresParams,
    read_scores,
    run_label,
)
from oodkit.stages.evaluate.options import EvalOptions


def run_metrics(run: ScoreRun) -> dict[str, Any]:
    """Per-dataset metrics, near/far means and ID accuracy of one run."""
    rows = {
        name: {"group": grp, "n": int(s.size), **ood_metrics(run.id_scores, s)}
        for name, (grp, s) in run.ood.items()
    }
    groups = {}
    for grp in OOD_GROUPS:
        names = [n for n, r in rows.items() if r["group"] == grp]
        if names:
            groups[grp] = group_means(rows, names)
    return {
        "id_accuracy": run.id_accuracy,
        "n_id": int(run.id_scores.size),
        "datasets": rows,
        "groups": groups,
    }


def _aggregate(label: str, runs: list[ScoreRun], results: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's block of metrics.json; with several runs, numbers become mean ± std."""
    names = list(results[0]["datasets"])
    for run, res in zip(runs, results, strict=True):
        if list(res["datasets"]) != names:
            raise OodkitError(
                f"runs of {label!r} cover different OOD sets: {runs[0].path} has {names}, "
                f"{run.path} has {list(res['datasets'])}"
            )
    block: dict[str, Any] = {
        "method": label,
        "runs": len(runs),
        "sources": [str(r.path) for r in runs],
    }
    accs = [r["id_accuracy"] for r in results]
    if all(a is not None for a in accs):
        block["id_accuracy"] = accs[0] if len(runs) == 1 else mean_std(accs)
    else:
        block["id_accuracy"] = None
    block["n_id"] = results[0]["n_id"]

    def combine(entries: list[dict[str, Any]]) -> dict[str, Any]:
        if len(entries) == 1:
            return {k: entries[0][k] for k in METRIC_KEYS}
        return {k: mean_std(e[k] for e in entries) for k in METRIC_KEYS}

    block["datasets"] = {
        n: {
            "group": results[0]["datasets"][n]["group"],
            "n": results[0]["datasets"][n]["n"],
            **combine([r["datasets"][n] for r in results]),
        }
        for n in names
    }
    block["groups"] = {g: combine([r["groups"][g] for r in results]) for g in results[0]["groups"]}
    return block


# parameters that differ between seeds of one recipe: the seed and the artifacts it made
SEED_VARYING = ("seed", "detector", "combine_with", "outliers")


def check_pooling(arts: list[Artifact]) -> None:
    """Runs that share a label are averaged as seeds, so they must be seeds: distinct
    artifacts, the same recipe (parameters but :data:`SEED_VARYING`), the same data (the
    benchmark sets' content fingerprints) and, where recorded, different seeds."""
    seen: dict[str, Path] = {}
    for a in arts:  # the same folder twice, or a copy of it: the same content fingerprint
        if a.manifest.fingerprint in seen:
            twin = seen[a.manifest.fingerprint]
            raise OodkitError(f"{a.path} and {twin} hold the same scores: each run counts once")
        seen[a.manifest.fingerprint] = a.path
    groups: dict[str, list[Artifact]] = defaultdict(list)
    for a in arts:
        groups[run_label(a)].append(a)
    for label, group in groups.items():
        first = group[0]
        for a in group[1:]:
            p, q = first.manifest.params, a.manifest.params
            diff = sorted(
                k for k in set(p) | set(q) if k not in SEED_VARYING and p.get(k) != q.get(k)
            )
            if not diff and _data(first) != _data(a):
                diff = ["benchmark data (content fingerprints)"]
            if diff:
                k = diff[0]
                what = f"{k} ({brief(p.get(k))} vs {brief(q.get(k))})" if k in p or k in q else k
                raise OodkitError(
                    f"{first.path} and {a.path} share the label {label!r} but differ in {what}: "
                    "eval averages only seeds of one recipe (score the others with another "
                    "--label)"
                )
        seeds = [ScoresParams.read(a.manifest.params).seed for a in group]
        repeated = [s for s in seeds if s is not None and seeds.count(s) > 1]
        if repeated:
            raise OodkitError(
                f"runs labelled {label!r} share seed {repeated[0]}: eval averages seeds"
            )


def _data(art: Artifact) -> dict[str, Any]:
    return {
        i.get("path"): i.get("fingerprint")
        for i in art.manifest.inputs
        if i.get("kind") == "dataset"
    }


@writes_output
def evaluate(
    scores: list[str | Path],
    out: str | Path,
    options: EvalOptions | None = None,
    **overrides: Any,
) -> tuple[Artifact, list[dict[str, Any]]]:
    """Evaluate scores artifacts; write ``metrics.json``, the ``--format`` tables
    (``metrics.md``, ``openood.csv``) and plots to ``out``.

    Artifacts with the same label (``params.label`` or ``params.method``) are runs of one
    method (e.g. seeds) and are reported as mean ± std (population std over runs).
    Returns the metrics artifact and one block per method.
    """
    o = with_overrides(EvalOptions, options, overrides)
    formats = o.formats()
    if not scores:
        raise OodkitError("give at least one scores artifact")
    arts = [load_artifact(p, kind="scores") for p in scores]
    check_pooling(arts)
    inputs = [a.as_input() for a in arts]
    params = {"plots": o.plots, **({"format": formats} if formats != ["markdown"] else {})}
    existing = check_output(out, "metrics", params, inputs, o.overwrite)
    if existing is not None:
        return existing, report.read_blocks(existing.path)
    runs = [read_scores(a.path) for a in arts]
    by_label: dict[str, list[ScoreRun]] = defaultdict(list)
    for run in runs:
        by_label[run.label].append(run)
    blocks, table_rows = [], []
    for label, group in by_label.items():
        results = [run_metrics(r) for r in group]
        blocks.append(_aggregate(label, group, results))
        for i, (run, res) in enumerate(zip(group, results, strict=True)):
            for name, row in res["datasets"].items():
                table_rows.append(
                    {"method": label, "run": i, "source": str(run.path), "dataset": name, **row}
                )

    def write_files(tmp: Path) -> None:
        doc = blocks[0] if len(blocks) == 1 else {"methods": blocks}
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
        if "markdown" in formats:
            (tmp / "metrics.md").write_text(report.markdown(blocks))
        if "openood-csv" in formats:
            (tmp / "openood.csv").write_text(report.openood_csv(blocks))
        if o.plots:
            for label, group in by_label.items():
                report.plot_method(tmp / "plots", label, group[0])

    import datasets

    summary = {b["method"]: {g: v["auroc"] for g, v in b["groups"].items()} for b in blocks}
    art = write_artifact(
        out,
        "metrics",
        params,
        inputs,
        dataset=datasets.Dataset.from_list(table_rows),
        write_files=write_files,
        summary=MetricsSummary(summary, report.below_chance(blocks)).as_dict(),
    )
    return art, blocks
