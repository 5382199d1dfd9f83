"""``oodkit demo``: every stage that exists, end to end on the bundled ``digits`` benchmark.

Trains a small ResNet-18 (widths 16–128, CIFAR-style stem) with cross-entropy, scores the
benchmark with energy, MSP and kNN, and evaluates. Sized to finish in well under a minute
per seed on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_ARCH_KWARGS = {"channels": [16, 32, 64, 128], "stem_width": 16}
DEMO_METHODS = ("energy", "msp", "knn")


def run_demo(
    out: str | Path = "runs/demo", seeds: int = 1, overwrite: bool = False, quiet: bool = False
) -> tuple[Any, list[dict[str, Any]]]:
    """Run the demo chain into ``out``; returns the metrics artifact and its blocks."""
    from oodkit.detector.train import TrainOptions, train_detector
    from oodkit.evaluate import evaluate
    from oodkit.scoring.score import score

    out = Path(out)
    scores = []
    for seed in range(seeds):
        opts = TrainOptions(
            loss="ce",
            epochs=15,
            batch_size=32,
            lr=0.1,
            augment="crop",
            arch_kwargs=DEMO_ARCH_KWARGS,
            seed=seed,
        )
        det = train_detector(
            "digits", out / f"detector-ce-seed{seed}", opts, overwrite=overwrite, quiet=quiet
        )
        arts = score(
            det.path, "digits", DEMO_METHODS, out / f"scores-ce-seed{seed}", overwrite=overwrite
        )
        scores += [a.path for a in arts]
    return evaluate(scores, out / "metrics", overwrite=overwrite)
