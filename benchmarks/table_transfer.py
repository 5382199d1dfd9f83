"""Do outlier recipes transfer? The README's table for digits and glyphs.

1. **Choose on validation sets only** (``oodkit sweep``, ``--sweep-seeds`` detector seeds per
   cell, every cell against its no-outlier baseline): on digits, outlier filters for the
   ``oe`` and ``sd`` losses (S = 300 outliers judged by the diffusion model), and the target
   shift of ``--t-start auto`` for ``oe`` (grids in ``GRIDS``); on glyphs, the same
   target-shift grid.
2. **Apply on test sets** of both benchmarks, ``--seeds`` detector seeds each: ``ce``; the
   bundled digits recipes chosen by the earlier constant-S sweeps (``oe`` and ``sd``, S = 300);
   the recipe each target-shift sweep wrote (possibly the baseline); and the best auto cell
   of the digits sweep whatever the sweep decided (to show what it would have cost).

Prints one JSON object (also ``OUT/transfer.json``) and writes ``OUT/transfer.md``: per
benchmark and recipe, near / far AUROC (mean ± std over seeds), Δ near AUROC to ``ce``
paired by seed with the one-sided paired t-test's p, ID accuracy and the start step the
outliers used. Every stage resumes, so a rerun continues where it stopped.

    python benchmarks/table_transfer.py --out runs/transfer [--digits-model DIR]
        [--glyphs-model DIR] [--seeds 5] [--sweep-seeds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

DETECTOR = {
    "epochs": 15,
    "batch_size": 32,
    "lr": 0.1,
    "augment": "crop",
    "arch_kwargs": {"channels": [16, 32, 64, 128], "stem_width": 16},
}
JUDGED_S300 = {"method": "sd", "batch_size": 64, "t_start": 300, "judge": "model"}
FILTERS = [
    None,
    "left,!reached",
    "ssim<0.5",
]  # none; moved off its class but not into another ID class; far from its source
GRIDS = {
    "filter-oe": {
        "generate": JUDGED_S300,
        "train detector": {**DETECTOR, "loss": "oe", "beta": 1.0, "outlier_filter": FILTERS},
        "score": {"method": "energy"},
    },
    "filter-sd": {
        "generate": JUDGED_S300,
        "train detector": {**DETECTOR, "loss": "sd", "outlier_filter": FILTERS},
        "score": {"method": "sd-vote"},
    },
    "auto-oe": {
        "generate": {
            "method": "sd",
            "batch_size": 64,
            "t_start": "auto",
            "judge": "model",
            "target_shift": [0.5, 0.8, 0.95],
        },
        "train detector": {**DETECTOR, "loss": "oe", "beta": 1.0},
        "score": {"method": "energy"},
    },
}
SWEEPS = {"digits": ["filter-oe", "filter-sd", "auto-oe"], "glyphs": ["auto-oe"]}


def _bundled() -> dict[str, dict[str, Any]]:
    text = resources.files("oodkit.recipes").joinpath("digits.yaml").read_text()
    return {k: v for k, v in yaml.safe_load(text).items() if k in ("ce", "oe", "sd")}


def _recipe_file(path: Path) -> dict[str, Any]:
    """A sweep's recipe.yaml as a recipe (its first line names the score method)."""
    text = path.read_text()
    method = text.splitlines()[0].rsplit("--method ", 1)[1].strip()
    return {"score": method, **yaml.safe_load(text)}


def _model(bench: str, given: str | None, out: Path) -> str:
    from oodkit.stages.train_diffusion.run import train_diffusion

    if given:
        return given
    return str(train_diffusion(bench, out / bench / "diffusion", steps=800, resume=True).path)


def choose(bench: str, model: str, out: Path, seeds: int) -> dict[str, dict[str, Any]]:
    """Each sweep of ``bench`` (validation sets only): its results document."""
    from oodkit.sweep import sweep

    docs = {}
    for name in SWEEPS[bench]:
        folder = out / bench / "sweeps"  # one folder: sweeps share their baselines
        grid = out / "grids" / f"{name}.yaml"
        grid.parent.mkdir(parents=True, exist_ok=True)
        grid.write_text(yaml.safe_dump(GRIDS[name], sort_keys=False))
        doc = sweep(bench, model, grid, folder, seeds=seeds, quiet=True)
        for f in ("results.json", "results.md", "recipe.yaml", "results.png"):
            (folder / f).replace(folder / f"{name}-{f}")
        docs[name] = doc
    return docs


def _groups(path: Path) -> dict[str, Any]:
    from oodkit.schemas import read_scores
    from oodkit.stages.evaluate.run import run_metrics

    return run_metrics(read_scores(path))


def _made_by_sweep(out: Path, bench: str, kind: str, *parts: Any) -> Path | None:
    """The artifact a sweep of ``bench`` already made from the same options (the sweep
    names its outliers and detectors by a digest of them), if any: identical recipe, seed
    and inputs, so it is reused instead of trained again."""
    from oodkit.sweep import _digest

    folder = out / bench / "sweeps" / f"{kind}-{_digest(*parts)}"
    return folder if (folder / "oodkit.json").is_file() else None


def apply(bench: str, model: str, recipes: dict[str, dict], out: Path, seeds: int) -> dict:
    """Each recipe on ``bench``'s test sets, ``seeds`` detectors: per-seed metrics."""
    from oodkit.stages.generate.run import generate
    from oodkit.stages.score.run import score
    from oodkit.stages.train_detector.run import train_detector

    made: dict[str, Path] = {}
    results: dict[str, Any] = {}
    same: dict[str, str] = {}  # a recipe's content → the first name it ran under
    for name, r in recipes.items():
        key = json.dumps(r, sort_keys=True)
        if key in same:  # e.g. a sweep that chose the baseline: the ce runs themselves
            results[name] = {**results[same[key]], "same_as": same[key]}
            continue
        same[key] = name
        outliers, start, start_ssim = None, None, None
        if r.get("generate"):
            key = json.dumps(r["generate"], sort_keys=True)
            if key not in made:
                folder = _made_by_sweep(out, bench, "outliers", model, r["generate"])
                folder = folder or out / bench / f"outliers-{len(made)}"
                made[key] = generate(bench, model, folder, quiet=True, **r["generate"]).path
            outliers = made[key]
            summary = json.loads((outliers / "oodkit.json").read_text())["summary"]
            auto = summary.get("auto")
            start = auto["chosen"] if auto else r["generate"].get("t_start")
            start_ssim = summary.get("mean_ssim")
        runs = []
        for seed in range(seeds):
            options = {**r.get("train detector", {}), "seed": seed}
            done = _made_by_sweep(
                out, bench, "detector", model if outliers else None, r.get("generate") or {},
                options,
            )  # fmt: skip
            det = train_detector(
                bench,
                done or out / bench / f"detector-{name}-{seed}",
                outliers=[str(outliers)] if outliers else [],
                resume=True,
                quiet=True,
                **options,
            )
            (art,) = score(
                det.path,
                bench,
                [r["score"]],
                out / bench / f"scores-{name}-{seed}",
                outliers=str(outliers) if r["score"] == "sd-vote" else None,
                label=name,
                quiet=True,
            )
            runs.append(_groups(art.path))
        results[name] = {
            "recipe": r,
            "t_start": start,
            "outliers_mean_ssim": start_ssim,
            "runs": runs,
        }
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std per group, Δ near / far AUROC to ce paired by seed."""
    from oodkit.metrics import mean_std, paired_delta

    base = results["ce"]["runs"]
    table = {}
    for name, res in results.items():
        row: dict[str, Any] = {
            "t_start": res["t_start"],
            "mean_ssim": res["outliers_mean_ssim"],
            "same_as": res.get("same_as"),
        }
        for g in ("near", "far"):
            mine = [r["groups"][g]["auroc"] for r in res["runs"]]
            row[g] = mean_std(mine)
            if res["runs"] is not base:
                row[f"delta_{g}"] = paired_delta(mine, [r["groups"][g]["auroc"] for r in base])
        row["id_accuracy"] = mean_std(r["id_accuracy"] for r in res["runs"])
        table[name] = row
    return table


def markdown(tables: dict[str, dict[str, Any]], seeds: int) -> str:
    def ms(d: dict[str, float]) -> str:
        return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"

    def delta(d: dict[str, Any] | None) -> str:
        if d is None:
            return "–"
        return f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f} (p {d['p_value']:.2f})"

    lines = [
        f"| benchmark | recipe | S used | near AUROC | Δ near to ce (paired, p) | far AUROC | "
        f"Δ far to ce | ID acc. |  ({seeds} seeds, ×100, mean ± std)",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bench, table in tables.items():
        for name, row in table.items():
            start = "–" if row["t_start"] is None else str(row["t_start"])
            if row["same_as"]:
                name = f"{name} (= {row['same_as']})"
            lines.append(
                f"| {bench} | {name} | {start} | {ms(row['near'])} | {delta(row.get('delta_near'))}"
                f" | {ms(row['far'])} | {delta(row.get('delta_far'))} | {ms(row['id_accuracy'])} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--digits-model", default=None)
    parser.add_argument("--glyphs-model", default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sweep-seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OODKIT_CACHE", str(args.out / "cache"))
    models = {
        "digits": _model("digits", args.digits_model, args.out),
        "glyphs": _model("glyphs", args.glyphs_model, args.out),
    }
    sweeps = {b: choose(b, models[b], args.out, args.sweep_seeds) for b in models}
    recipes = {name: dict(r) for name, r in _bundled().items()}
    for b in models:
        recipes[f"{b}-sweep-choice"] = _recipe_file(args.out / b / "sweeps" / "auto-oe-recipe.yaml")
    auto = sweeps["digits"]["auto-oe"]["cells"]
    best = max(auto, key=lambda c: c["score"])
    sections = {k: v for k, v in best["options"].items() if k != "score" and v}
    recipes["digits-best-auto-cell"] = {"score": "energy", **sections}
    tables = {b: summarise(apply(b, models[b], recipes, args.out, args.seeds)) for b in models}
    doc = {
        "seeds": args.seeds,
        "sweep_seeds": args.sweep_seeds,
        "sweeps": {
            b: {
                n: {
                    "outliers_help": d["outliers_help"],
                    "chosen": d["chosen"],
                    "cells": [
                        {
                            "options": c["options"],
                            "val": c["score"],
                            "delta": c["delta"],
                            "diagnostics": c["outliers"],
                        }
                        for c in d["cells"]
                    ],
                    "baseline_val": [x["score"] for x in d["baselines"]],
                }
                for n, d in s.items()
            }
            for b, s in sweeps.items()
        },
        "recipes": recipes,
        "test": tables,
    }
    (args.out / "transfer.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "transfer.md").write_text(markdown(tables, args.seeds))
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
