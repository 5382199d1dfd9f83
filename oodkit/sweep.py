"""``oodkit sweep``: choose a generation + detector recipe on validation sets only.

A grid file names options per command; a list is an axis (``t_start: [100, 300]``), anything
else is fixed::

    generate: {method: sd, t_start: [100, 300], w: [2, 4]}
    train detector: {loss: oe, epochs: 10, beta: [0.5, 1.0]}
    score: {method: energy}

Every cell is a normal chain of artifacts (outliers → detector per seed → scores → metrics),
each in a folder named by a hash of the options that shape it, so cells that share a
generation share its artifact, and a rerun reuses every finished artifact (interrupted
trainings resume). Scores are taken on the benchmark's **validation** sets only, through a
benchmark file that holds the ID val set as its test set and the ``ood_val`` sets as its OOD
sets; the test sets are never loaded.

Every cell is compared with the no-outlier baseline of its detector recipe (the same
options, ``loss: ce``, no generation), trained with the same seeds: Δ per seed and a paired
one-sided t-test over seeds. The best cell by the ``--select`` metric among those that beat
their baseline beyond seed noise is written as ``recipe.yaml``, which every stage takes with
``--config``; when none does, the recipe is the baseline, and the report says so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodkit import options as O
from oodkit.artifacts import atomic_file
from oodkit.errors import OodkitError
from oodkit.locks import claim, writes_output
from oodkit.methods import DETECTOR_LOSS, Method
from oodkit.options import option_key, read_config, with_overrides

SECTIONS = ("generate", "train detector", "score")
SELECT = ("near", "far", "all")
# outlier diagnostics shown per cell (the outliers' summary; left/reached need a --judge)
DIAGNOSTICS = ("mean_ssim", "left_source", "reached_target")


@dataclass(kw_only=True)
class SweepOptions:
    """What ``sweep`` takes besides the benchmark, model, grid file and output folder."""

    seeds: int = O.option(
        1, "Detector seeds per cell (their mean is compared; Δ is paired by seed).", minimum=1
    )
    alpha: float = O.option(
        0.05,
        "A cell beats its no-outlier baseline when its mean Δ is positive and the one-sided "
        "paired t-test over seeds gives p below this.",
        above=0,
        below=1,
    )
    select: str = O.option(
        "near", "Choose by mean validation AUROC over near, far or all sets.", choices=SELECT
    )
    data_root: str | None = O.data_root_option()
    quiet: bool = O.quiet_option()


def read_grid(path: str | Path) -> dict[str, dict[str, Any]]:
    """The grid file's sections (``generate``, ``train detector``, ``score``), options checked."""
    from oodkit.options import config_options
    from oodkit.scoring.options import ScoreOptions
    from oodkit.stages.generate.options import GenerateOptions
    from oodkit.stages.train_detector.options import TrainOptions

    classes = {"generate": GenerateOptions, "train detector": TrainOptions, "score": ScoreOptions}
    grid: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        raw = read_config(path, section, flag="--grid")
        method = raw.pop("method", None) if section == "score" else None
        opts: dict[str, Any] = {}
        for name, value in raw.items():  # every value of an axis must be a valid option value
            axis = _is_axis(option_key(name), value)
            if axis and not value:
                raise OodkitError(f"--grid {path}: {section}.{name} is an empty list")
            checked = [
                config_options(classes[section], {name: v}, f"--grid {path}")
                for v in (value if axis else [value])
            ]
            field = next(iter(checked[0]))
            opts[field] = [c[field] for c in checked] if axis else checked[0][field]
        if method is not None:
            opts["method"] = str(method)
        grid[section] = opts
    if not grid["train detector"]:
        raise OodkitError(f"--grid {path}: no 'train detector' section")
    try:  # a loss option that no loss of the grid reads
        DETECTOR_LOSS.check_read(_losses(grid["train detector"]), grid["train detector"])
    except OodkitError as exc:
        raise OodkitError(f"--grid {path}: {exc}") from None
    return grid


def _losses(train: dict[str, Any]) -> list[Method]:
    """The registered losses a ``train detector`` section names (one, or an axis)."""
    from oodkit.stages.train_detector.options import TrainOptions

    loss = train.get("loss", TrainOptions.__dataclass_fields__["loss"].default)
    return [DETECTOR_LOSS.get(name) for name in (loss if isinstance(loss, list) else [loss])]


_LIST_OPTIONS = {"outliers", "extra_id"}  # options whose value is itself a list


def _is_axis(name: str, value: Any) -> bool:
    """A list is an axis; for an option whose value is a list, a list of lists is."""
    if not isinstance(value, list):
        return False
    if name in _LIST_OPTIONS:
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def cells(grid: dict[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Every combination of the axes (list values), in file order. A cell keeps only the loss
    options its loss reads (``loss: [ce, oe]`` with ``beta: 1``: ce without β; a loss
    without outliers gets no generation either, as a baseline), and a combination equal to an
    earlier cell is dropped."""
    axes = [
        (section, name, value)
        for section, opts in grid.items()
        for name, value in opts.items()
        if _is_axis(name, value)
    ]
    out = []
    for combo in itertools.product(*(values for _, _, values in axes)):
        cell = {section: dict(opts) for section, opts in grid.items()}
        for (section, name, _), value in zip(axes, combo, strict=True):
            cell[section][name] = value
        train = cell["train detector"]
        loss = _losses(train)[0]
        if "outliers" not in loss.needs:  # ce: no generation, no outliers (its own baseline)
            cell = baseline_of(cell)
        else:
            cell["train detector"] = {
                k: v for k, v in train.items() if k not in DETECTOR_LOSS.params or k in loss.options
            }
        if cell not in out:
            out.append(cell)
    return out


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def benchmark_with_validation(ref: str, data_root: str | None) -> Any:
    """The benchmark ``ref``, refused when it has no ID and OOD validation sets."""
    from oodkit.data.sources import get_benchmark

    bench = get_benchmark(ref, data_root=data_root)
    if bench.id_val is None or not bench.ood_val:
        raise OodkitError(
            f"benchmark {bench.name!r} has no validation sets (id_val and ood_val): a sweep "
            "never chooses on test sets; add them to the benchmark file"
        )
    return bench


def validation_benchmark(bench: Any, ref: str, folder: Path) -> Path:
    """A benchmark file whose test sets are ``bench``'s validation sets (``ref`` names it)."""
    from oodkit.data.sources import benchmark_names

    builtin = ref.partition("?")[0] in benchmark_names()
    base = Path(ref).parent

    def where(s) -> str:
        if builtin:
            return f"{ref}:{s.name if s is not bench.id_val else 'id_val'}"
        r = str(s.ref)
        return r if r.startswith("hub:") or Path(r).is_absolute() else str(base / r)

    spec = {
        "name": f"{bench.name}-validation",
        "id_train": f"{ref}" if builtin else where(bench.id_train),
        "id_test": {"name": "id_val", "group": "id", "data": where(bench.id_val)},
        "ood": [{"name": s.name, "group": s.group, "data": where(s)} for s in bench.ood_val],
        "channels": bench.channels,
    }
    if bench.image_size is not None:
        spec["image_size"] = bench.image_size
    if bench.class_names is not None:
        spec["class_names"] = list(bench.class_names)
    path = folder / "validation-benchmark.json"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_file(path, lambda tmp: tmp.write_text(json.dumps(spec, indent=2) + "\n"))
    return path


def _mean_auroc(block: dict[str, Any], select: str) -> float | None:
    groups = block["groups"]
    picked = [g for g in (("near", "far") if select == "all" else (select,)) if g in groups]
    if not picked and select == "near" and "far" in groups:
        picked = ["far"]  # no near validation set: the far ones decide
    values = [groups[g]["auroc"] for g in picked]
    values = [v["mean"] if isinstance(v, dict) else v for v in values]
    return sum(values) / len(values) if values else None


def baseline_of(cell: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The no-outlier baseline of a cell: its detector options with ``loss: ce`` and without
    the options only outlier losses read, no generation, and its score method unless that
    needs outliers or a detector trained with them (then energy)."""
    from oodkit.methods import SCORE

    only = {*DETECTOR_LOSS.params, "outliers"}  # what losses with outliers read
    train = {k: v for k, v in cell["train detector"].items() if k not in only}
    score = dict(cell["score"])
    method = score.get("method", "energy")
    if "outliers" in SCORE.get(method).needs:
        score = {"method": "energy"}
    return {"generate": {}, "train detector": {**train, "loss": "ce"}, "score": score}


def _run_cell(cell, name, ref, model, val_bench, out: Path, o: SweepOptions) -> dict[str, Any]:
    """One chain: outliers (shared by hash), a detector per seed, validation scores, metrics."""
    from oodkit.schemas import OutliersSummary, read_scores
    from oodkit.stages.evaluate.run import evaluate, run_metrics
    from oodkit.stages.generate.run import GenerateOptions, generate
    from oodkit.stages.score.run import score
    from oodkit.stages.train_detector.run import TrainOptions, train_detector

    started = time.perf_counter()
    common = {"quiet": True, "data_root": o.data_root}
    outliers, diagnostics = None, {}
    if cell["generate"]:
        gen = GenerateOptions(**(cell["generate"] | common))
        path = out / f"outliers-{_digest(model, cell['generate'])}"
        made = generate(ref, model, path, gen)
        outliers = made.path
        summary = OutliersSummary.read(made.manifest.summary).as_dict()
        diagnostics = {k: summary[k] for k in DIAGNOSTICS}
        if summary["auto"]:  # --t-start auto / --scale auto: what the probe chose
            diagnostics["auto"] = {summary["auto"]["option"]: summary["auto"]["chosen"]}
    score_opts = dict(cell["score"])
    method = score_opts.pop("method", "energy")
    paths = []
    for seed in range(o.seeds):
        det_opts = cell["train detector"] | {"seed": seed}
        tag = _digest(model if outliers else None, cell["generate"], det_opts)
        det = train_detector(
            ref,
            out / f"detector-{tag}",
            TrainOptions(**(det_opts | common)),
            outliers=[str(outliers)] if outliers else (),
            resume=True,
        )
        arts = score(
            det.path,
            str(val_bench),
            [method],
            out / f"scores-{tag}-{_digest(score_opts, method)}",
            outliers=str(outliers) if method == "sd-vote" else None,
            quiet=True,
            **score_opts,
        )
        paths += [a.path for a in arts]
    if outliers is not None:  # a filter: the diagnostics of the rows the detectors trained on
        diagnostics = trained_on(diagnostics, det.manifest.summary, str(outliers))
    metrics, blocks = evaluate(paths, out / f"metrics-{name}-{_digest(cell, o.seeds)}", plots=False)
    block = blocks[0]
    per_seed = [_mean_auroc(run_metrics(read_scores(p)), o.select) for p in paths]
    return {
        "options": cell,
        "metrics": str(metrics.path),
        "val_auroc": {g: v["auroc"] for g, v in block["groups"].items()},
        "val_fpr95": {g: v["fpr95"] for g, v in block["groups"].items()},
        "id_val_accuracy": block.get("id_accuracy"),
        "score": _mean_auroc(block, o.select),
        "seed_scores": per_seed,
        "outliers": diagnostics,
        "seconds": round(time.perf_counter() - started, 1),
    }


def trained_on(diagnostics: dict[str, Any], summary: dict[str, Any], ref: str) -> dict[str, Any]:
    """A cell's outlier diagnostics over the rows its detector trained on: for a filtered set,
    the kept rows' (from the detector's summary) and the share kept replace the generation's."""
    kept = (summary.get("kept_diagnostics") or {}).get(ref)
    if kept is None:
        return diagnostics
    count, total = summary["outliers_kept"][ref]
    return {**diagnostics, **kept, "kept": count / total}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def compare(rows: list[dict[str, Any]], baselines: list[dict[str, Any]], alpha: float) -> None:
    """Each cell's ``delta`` to its baseline (``row["baseline"]`` indexes ``baselines``),
    paired by seed (``metrics.paired_delta``); None where a score is missing."""
    from oodkit.metrics import paired_delta

    for r in rows:
        base = baselines[r["baseline"]]
        known = all(v is not None for v in [*r["seed_scores"], *base["seed_scores"]])
        r["delta"] = paired_delta(r["seed_scores"], base["seed_scores"], alpha) if known else None


def choose(rows: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> tuple[dict, bool]:
    """(the chosen row, whether it is a cell): the best cell by score among those that beat
    their baseline beyond seed noise, unless a no-outlier baseline scores higher still; else
    the best baseline (first of equals: file order)."""
    winners = [r for r in rows if r["delta"] is not None and r["delta"]["beats"]]
    scored = [b for b in baselines if b["score"] is not None]
    best_base = max(scored, key=lambda b: b["score"]) if scored else None
    if winners:
        best = max(winners, key=lambda r: r["score"])
        if best_base is None or best["score"] >= best_base["score"]:
            return best, True
    if best_base is None:
        raise OodkitError("no cell has a validation AUROC to compare")
    return best_base, False


def _verdict(o: SweepOptions, helped: bool, some_beat: bool) -> str:
    """The report's one line on whether outliers help."""
    test = (
        f"one-sided paired t-test over {o.seeds} seeds, p < {o.alpha:g}"
        if o.seeds > 1
        else "1 seed: no noise estimate, a positive Δ decides"
    )
    if helped:
        return f"Outliers help: the chosen cell beats its no-outlier baseline ({test})."
    if some_beat:
        return (
            "Outliers do not help the best recipe: a no-outlier baseline scores above every "
            f"cell that beats its own baseline ({test}); the recipe is that baseline."
        )
    return (
        f"Outliers do not help: no cell beats its no-outlier baseline beyond seed noise ({test}); "
        "the recipe is the baseline."
    )


def _delta_text(d: dict[str, Any] | None) -> tuple[str, str]:
    if d is None:
        return "-", "-"
    p = "-" if d["p_value"] is None else f"{d['p_value']:.3f}"
    return f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}", p


def _write_results(
    out: Path,
    rows: list[dict[str, Any]],
    baselines: list[dict[str, Any]],
    best: dict[str, Any],
    helped: bool,
    o: SweepOptions,
) -> None:
    import yaml

    doc = {
        "select": o.select,
        "seeds": o.seeds,
        "alpha": o.alpha,
        "outliers_help": helped,
        "chosen": best["cell"] if helped else None,
        "chosen_baseline": None if helped else best["baseline"],
        "cells": rows,
        "baselines": baselines,
    }
    atomic_file(out / "results.json", lambda t: t.write_text(json.dumps(doc, indent=2) + "\n"))
    axes = sorted(
        {
            f"{s}.{k}"
            for r in rows
            for s, opts in r["options"].items()
            for k, v in opts.items()
            if len({json.dumps(x["options"][s].get(k), sort_keys=True) for x in rows}) > 1
        }
    )
    some_beat = any(r["delta"] and r["delta"]["beats"] for r in rows)
    shown = [
        k for k in (*DIAGNOSTICS, "kept") if any(r["outliers"].get(k) is not None for r in rows)
    ]
    auto = any("auto" in r["outliers"] for r in rows)
    head = ["cell", *axes, "val AUROC", "Δ to baseline", "p", *shown, *(["auto"] * auto)]
    lines = [
        f"Sweep on validation sets only; chosen by mean val AUROC ({o.select}), "
        f"{o.seeds} seed(s) per cell; Δ = cell − its no-outlier baseline (×100, mean ± std "
        "over seeds); outlier diagnostics of the outliers each cell trained on (after its "
        "filter: kept = share of the generation kept).",
        "",
        f"**{_verdict(o, helped, some_beat)}**",
        "",
        "| " + " | ".join([*head, "seconds"]) + " |",
        "|" + "---|" * (len(head) + 1),
    ]

    def value(r: dict[str, Any], axis: str) -> str:
        section, name = axis.split(".", 1)
        v = r["options"].get(section, {}).get(name)
        return "-" if v is None else str(v)

    def score_text(r: dict[str, Any]) -> str:
        return "-" if r["score"] is None else f"{100 * r['score']:.2f}"

    for b in baselines:
        mark = " **(chosen)**" if not helped and b is best else ""
        blank = ["-"] * (len(shown) + auto)
        line = [f"baseline {b['baseline']}{mark}", *(value(b, a) for a in axes), score_text(b)]
        lines.append("| " + " | ".join([*line, "0", "-", *blank, str(b["seconds"])]) + " |")
    for r in rows:
        mark = " **(chosen)**" if helped and r is best else ""
        diag = [_number(r["outliers"].get(k)) for k in shown]
        if auto:
            chosen = r["outliers"].get("auto") or {}
            diag.append(", ".join(f"{k}={v:g}" for k, v in chosen.items()) or "-")
        line = [f"{r['cell']}{mark}", *(value(r, a) for a in axes), score_text(r)]
        line += [*_delta_text(r.get("delta")), *diag, str(r["seconds"])]
        lines.append("| " + " | ".join(line) + " |")
    atomic_file(out / "results.md", lambda t: t.write_text("\n".join(lines) + "\n"))
    recipe = {s: dict(v) for s, v in best["options"].items() if v}
    method = recipe.get("score", {}).pop("method", "energy")  # an argument of score, not an option
    recipe = {s: v for s, v in recipe.items() if v}
    which = (
        f"cell {best['cell']}"
        if helped
        else f"baseline {best['baseline']}: "
        + (
            "a cell beat its own baseline, but this baseline scores higher"
            if some_beat
            else "no cell beat its no-outlier baseline beyond seed noise"
        )
    )
    text = (
        f"# chosen by oodkit sweep on validation sets ({which}); score with --method {method}\n"
        + yaml.safe_dump(recipe, sort_keys=False)
    )
    atomic_file(out / "recipe.yaml", lambda t: t.write_text(text))
    _plot(out / "results.png", rows, baselines, best)


def _plot(path: Path, rows: list[dict[str, Any]], baselines: list[dict[str, Any]], best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = [*baselines, *rows]
    fig, ax = plt.subplots(figsize=(0.6 * len(every) + 3, 3))
    scores = [100 * (r["score"] or 0) for r in every]
    names = [f"b{r['baseline']}" if "cell" not in r else str(r["cell"]) for r in every]
    colors = [
        "tab:orange" if r is best else "tab:gray" if "cell" not in r else "tab:blue" for r in every
    ]
    ax.bar(names, scores, color=colors)
    ax.set_xlabel("cell (b: no-outlier baselines)")
    ax.set_ylabel("validation AUROC (×100)")
    ax.set_ylim(min(scores + [50]) - 5, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@writes_output
def sweep(
    ref: str,
    model: str,
    grid_file: str | Path,
    out: str | Path,
    options: SweepOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run every cell of the grid on ``ref``'s validation sets; return the results document
    (also in ``out/results.json``, with ``results.md``, ``results.png`` and ``recipe.yaml``)."""
    o = with_overrides(SweepOptions, options, overrides)
    grid = read_grid(grid_file)
    out = Path(out)
    bench = benchmark_with_validation(ref, o.data_root)  # refused before anything is made
    claim(out)
    val_bench = validation_benchmark(bench, ref, out)
    grid_cells = cells(grid)
    base_cells: list[dict[str, Any]] = []
    for c in grid_cells:
        if baseline_of(c) not in base_cells:
            base_cells.append(baseline_of(c))
    baselines = [
        {"baseline": j, **_run_cell(b, f"baseline{j}", ref, model, val_bench, out, o)}
        for j, b in enumerate(base_cells)
    ]
    rows = [
        {
            "cell": i,
            "baseline": base_cells.index(baseline_of(c)),
            **_run_cell(c, f"cell{i}", ref, model, val_bench, out, o),
        }
        for i, c in enumerate(grid_cells)
    ]
    compare(rows, baselines, o.alpha)
    best, helped = choose(rows, baselines)
    _write_results(out, rows, baselines, best, helped, o)
    return {
        "select": o.select,
        "outliers_help": helped,
        "chosen": best["cell"] if helped else None,
        "chosen_baseline": None if helped else best["baseline"],
        "cells": rows,
        "baselines": baselines,
    }
