"""The ``eval`` stage: scores artifacts in, a metrics artifact (JSON, Markdown, plots) out."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oodkit.artifacts import Artifact, check_output, load_artifact, write_artifact
from oodkit.errors import OodkitError
from oodkit.metrics import METRIC_KEYS, accuracy, as_scores, group_means, mean_std, ood_metrics

REQUIRED_COLUMNS = ("sample_id", "dataset", "group", "id_score")
OOD_GROUPS = ("near", "far")


@dataclass
class ScoreRun:
    """One scores artifact as arrays: the ID test scores and each OOD set's scores."""

    path: Path
    label: str
    id_scores: np.ndarray
    ood: dict[str, tuple[str, np.ndarray]]  # dataset -> (group, id_scores)
    id_accuracy: float | None


def run_label(art: Artifact) -> str:
    """Runs that share a label (seeds of one method) are averaged together."""
    params = art.manifest.params
    return str(params.get("label") or params.get("method") or "scores")


def read_scores(path: str | Path) -> ScoreRun:
    """Load and validate one scores artifact."""
    art = load_artifact(path, kind="scores")
    ds = art.dataset()
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise OodkitError(f"{art.path}: scores artifact lacks column(s) {', '.join(missing)}")
    table = ds.data.table
    group = np.asarray(table.column("group").to_pylist(), dtype=object)
    dataset = np.asarray(table.column("dataset").to_pylist(), dtype=object)
    score = table.column("id_score").to_numpy().astype(np.float64)
    bad_groups = set(group.tolist()) - {"id", *OOD_GROUPS}
    if bad_groups:
        raise OodkitError(f"{art.path}: unknown group(s) {sorted(bad_groups)} (id, near, far)")
    is_id = group == "id"
    try:
        id_scores = as_scores(score[is_id], f"{art.path}: ID set")
    except ValueError as exc:
        raise OodkitError(str(exc)) from None
    ood: dict[str, tuple[str, np.ndarray]] = {}
    for name in dict.fromkeys(dataset[~is_id].tolist()):
        rows = (dataset == name) & ~is_id
        groups = set(group[rows].tolist())
        if len(groups) != 1:
            raise OodkitError(f"{art.path}: dataset {name!r} is tagged with several groups")
        try:
            ood[name] = (groups.pop(), as_scores(score[rows], f"{art.path}: OOD set {name!r}"))
        except ValueError as exc:
            raise OodkitError(str(exc)) from None
    if not ood:
        raise OodkitError(f"{art.path}: OOD set is empty (no rows with group near or far)")
    id_acc = None
    if "pred" in ds.column_names and "label" in ds.column_names:
        pred = table.column("pred").to_numpy()[is_id]
        label = table.column("label").to_numpy()[is_id]
        known = (pred >= 0) & (label >= 0)
        if known.any():
            id_acc = accuracy(pred[known], label[known])
    return ScoreRun(art.path, run_label(art), id_scores, ood, id_acc)


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


def evaluate(
    scores: list[str | Path],
    out: str | Path,
    *,
    plots: bool = True,
    overwrite: bool = False,
) -> tuple[Artifact, list[dict[str, Any]]]:
    """Evaluate scores artifacts; write ``metrics.json``, ``metrics.md`` and plots to ``out``.

    Artifacts with the same label (``params.label`` or ``params.method``) are runs of one
    method (e.g. seeds) and are reported as mean ± std (population std over runs).
    Returns the metrics artifact and one block per method.
    """
    from oodkit import report

    if not scores:
        raise OodkitError("give at least one scores artifact")
    arts = [load_artifact(p, kind="scores") for p in scores]
    inputs = [a.as_input() for a in arts]
    params = {"plots": plots}
    existing = check_output(out, "metrics", params, inputs, overwrite)
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
        (tmp / "metrics.md").write_text(report.markdown(blocks))
        if plots:
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
        summary={"auroc": summary},
    )
    return art, blocks
