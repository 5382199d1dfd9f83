"""Every post-hoc score method on digits: the README's table.

Trains the demo's CE detector with seeds 0..N-1 (``--seeds``), scores the benchmark with each
registered post-hoc method that needs no outliers (one ``score`` call per method and seed,
feature cache off, so each call pays for its own network passes), evaluates the seeds of a
method together and prints one JSON object: per method near / far AUROC and FPR@95 (mean ±
std over seeds, OpenOOD's FPR@95) and seconds per 1,000 scored images (mean over seeds).

    python benchmarks/table_score_methods.py [--seeds 5] [--threads 2] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root or Path(tempfile.mkdtemp(prefix="table-score-methods-"))
    os.environ.setdefault("OODKIT_CACHE", str(root / "cache"))

    from oodkit.artifacts import column
    from oodkit.demo import DEMO_ARCH_KWARGS
    from oodkit.methods import SCORE
    from oodkit.schemas import table_of
    from oodkit.stages.evaluate.run import evaluate
    from oodkit.stages.score.run import score
    from oodkit.stages.train_detector.run import train_detector

    methods = [m.name for m in SCORE if not {"outliers", "model"} & set(m.needs)]
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    arts: dict[str, list[Path]] = {m: [] for m in methods}
    accuracy = []
    for seed in range(args.seeds):
        det = root / f"ce-{seed}"
        train_detector(
            "digits", det, epochs=15, batch_size=32, lr=0.1, augment="crop",
            arch_kwargs=DEMO_ARCH_KWARGS, seed=seed, quiet=True,
        )  # fmt: skip
        for m in methods:
            start = time.perf_counter()
            (art,) = score(det, "digits", m, root / f"s-{seed}" / m, cache=False, quiet=True)
            spent = time.perf_counter() - start
            seconds[m].append(1000 * spent / len(column(table_of(art), "id_score")))
            arts[m].append(art.path)
        accuracy.append(art.manifest.summary["id_accuracy"])
    rows = {}
    for m in methods:
        _, (block,) = evaluate(arts[m], root / "eval" / m, plots=False, quiet=True)
        rows[m] = {
            **{
                f"{g}_{k}": block["groups"][g][k]
                for g in ("near", "far")
                for k in ("auroc", "fpr95")
            },
            "seconds_per_1k": round(sum(seconds[m]) / len(seconds[m]), 3),
        }
    print(json.dumps({"seeds": list(range(args.seeds)), "id_accuracy": accuracy, "methods": rows,
                      "threads": args.threads, "torch": torch.__version__}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
