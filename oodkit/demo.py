"""``oodkit demo``: every stage that exists, end to end on the bundled ``digits`` benchmark.

Until the detector stages exist, the demo's classifier is a multinomial logistic regression
on raw pixels (scikit-learn), scored with maximum softmax probability: a real, if weak,
baseline that exercises the benchmark, scores artifact and eval stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oodkit.artifacts import Artifact, check_output


def _pixels(ds) -> Any:
    import numpy as np

    return np.stack([np.asarray(im, dtype=np.float32).reshape(-1) / 255.0 for im in ds["image"]])


def pixel_logreg_scores(out: Path, seed: int, overwrite: bool) -> Artifact:
    """Fit logistic regression on digits ID train and write MSP scores for all test sets."""
    from sklearn.linear_model import LogisticRegression

    from oodkit.data.benchmarks import get_benchmark
    from oodkit.scores import SetScores, write_scores

    params = {"method": "msp", "label": "pixel-logreg+msp", "benchmark": "digits", "seed": seed}
    existing = check_output(out, "scores", params, (), overwrite)
    if existing is not None:
        return existing
    bench = get_benchmark("digits")
    train = bench.load("id_train")
    clf = LogisticRegression(max_iter=2000, C=0.5, random_state=seed)
    clf.fit(_pixels(train), train["label"])
    sets = []
    for key, spec in [("id_test", bench.id_test), *((s.name, s) for s in bench.ood)]:
        ds = bench.load(key)
        proba = clf.predict_proba(_pixels(ds))
        sets.append(
            SetScores(
                spec.name,
                spec.group,
                ds["sample_id"],
                proba.max(1),
                clf.classes_[proba.argmax(1)],
                ds["label"],
            )
        )
    return write_scores(out, sets, params)


def run_demo(out: str | Path = "runs/demo", seed: int = 0, overwrite: bool = False):
    """Run the demo chain into ``out``; returns the metrics artifact and its blocks."""
    from oodkit.evaluate import evaluate

    out = Path(out)
    scores = pixel_logreg_scores(out / "scores-pixel-logreg-msp", seed, overwrite)
    return evaluate([scores.path], out / "metrics", overwrite=overwrite)
