"""Several score methods in one ``score`` call share one pass of the network over each set.

Runs in one process and prints one JSON object: ``score --method
vim,react,ash,mahalanobis,knn,energy`` on the digits CE detector (the demo's recipe, trained
here unless ``--detector`` is given) against the same six methods scored one call each, with
the feature cache off so every call pays for its own extraction. Reported: wall seconds of
each, the number of network passes over a set (calls of ``oodkit.scoring.features.extract``)
and the images they covered, and the ratio separate / together.

    python benchmarks/bench_score_methods.py [--detector PATH] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

METHODS = ["vim", "react", "ash", "mahalanobis", "knn", "energy"]


def _counting_extract():
    """Wrap ``extract`` so every network pass over a set is counted with its images."""
    from oodkit.scoring import features

    real = features.extract
    counts = {"passes": 0, "images": 0}

    def counted(model, table, *args, **kwargs):
        counts["passes"] += 1
        counts["images"] += len(table)
        return real(model, table, *args, **kwargs)

    features.extract = counted
    return counts


def _timed(det: Path, methods: str, out: Path, counts: dict[str, int]) -> dict[str, Any]:
    from oodkit.stages.score.run import score

    before = dict(counts)
    start = time.perf_counter()
    score(det, "digits", methods, out, cache=False, quiet=True)
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "network_passes": counts["passes"] - before["passes"],
        "images_through_network": counts["images"] - before["images"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-score-methods-"))
    os.environ.setdefault("OODKIT_CACHE", str(root / "cache"))
    det = args.detector
    if det is None:
        from oodkit.demo import DEMO_ARCH_KWARGS
        from oodkit.stages.train_detector.run import train_detector

        det = root / "ce"
        train_detector(
            "digits", det, epochs=15, batch_size=32, lr=0.1, augment="crop",
            arch_kwargs=DEMO_ARCH_KWARGS, seed=0, quiet=True,
        )  # fmt: skip
    counts = _counting_extract()
    _timed(det, "energy", root / "warm-up", counts)  # imports, first-touch allocations
    together = _timed(det, ",".join(METHODS), root / "together", counts)
    alone = {m: _timed(det, m, root / f"alone-{m}", counts) for m in METHODS}
    separate = sum(a["seconds"] for a in alone.values())
    print(
        json.dumps(
            {
                "benchmark": "digits",
                "methods": METHODS,
                "together": together,
                "alone": alone,
                "separate_seconds_sum": round(separate, 3),
                "separate_passes_sum": sum(a["network_passes"] for a in alone.values()),
                "ratio_separate_over_together": round(separate / together["seconds"], 2),
                "threads": args.threads,
                "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
