"""``oodkit demo``: every stage that exists, end to end on the bundled ``digits`` benchmark.

1. train the tiny class-conditional diffusion model on the ID classes (0–4);
2. generate SD outliers (wrong-class guidance) and SONA outliers (masked guidance toward
   another class) from every ID training image;
3. train, per seed, a ``ce`` baseline, ``oe`` with the SD outliers, ``sona`` with the SONA
   outliers and ``sd`` with the SD outliers (small ResNet-18, CIFAR-style stem);
4. score (energy; sd-vote for the sd detector); DiffGuard with the ``ce`` detector (both
   guidance paths, alone and combined with energy, on the first ``diffguard_limit`` samples
   of each test set, next to energy on the same samples); evaluate, and print one table.

The defaults are sized for about 15 minutes on two CPU cores. ``run_unsupervised_demo`` runs
the SD-outlier paper's label-free chain instead: SCAN pseudo-labels → diffusion on the
clusters → SD outliers → ``sd`` detector on the clusters → sd-vote → eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodkit import options as O
from oodkit.locks import writes_output
from oodkit.options import with_overrides

DEMO_ARCH_KWARGS = {"channels": [16, 32, 64, 128], "stem_width": 16}


@dataclass(kw_only=True)
class DemoOptions:
    """The demo's sizes; the defaults take about 15 minutes on two CPU cores."""

    seeds: int = O.option(3, "Detector seeds per method.", minimum=1)
    diffusion_steps: int = O.option(800, "Diffusion training steps.", minimum=1)
    epochs: int = O.option(15, "Detector training epochs.", minimum=1)
    limit: int | None = O.option(None, "ID images used for generation (default: all).", minimum=1)
    diffguard_limit: int | None = O.option(
        100,
        "DiffGuard rows: first N samples of each test set (default 100; all: none given).",
        minimum=1,
    )
    pretext_epochs: int = O.option(60, "Unsupervised chain: SimCLR epochs.", cli=False, minimum=1)
    # 501 images at batch 128: 3 steps an epoch
    scan_epochs: int = O.option(60, "Unsupervised chain: SCAN epochs.", cli=False, minimum=1)
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()


def _setup(options: DemoOptions | None, overrides: dict[str, Any]):
    """The checked options and what every stage of the demo shares (overwrite, quiet)."""
    o = with_overrides(DemoOptions, options, overrides)  # counts checked by their minimum
    return o, {"overwrite": o.overwrite, "quiet": o.quiet}


def _detector_options(o: DemoOptions, loss: str, seed: int):
    """The demo's detector recipe: small ResNet-18, CIFAR-style stem, SGD lr 0.1, batch 32."""
    from oodkit.stages.train_detector.options import TrainOptions

    return TrainOptions(
        loss=loss,
        epochs=o.epochs,
        batch_size=32,
        lr=0.1,
        augment="crop",
        arch_kwargs=DEMO_ARCH_KWARGS,
        seed=seed,
    )


@writes_output
def run_demo(
    out: str | Path = "runs/demo",
    options: DemoOptions | None = None,
    **overrides: Any,
) -> tuple[Any, list[dict[str, Any]]]:
    """Run the demo chain into ``out``; returns the metrics artifact and its blocks."""
    from oodkit.stages.evaluate.run import evaluate
    from oodkit.stages.generate.run import GenerateOptions, generate
    from oodkit.stages.score.run import score
    from oodkit.stages.train_detector.run import train_detector
    from oodkit.stages.train_diffusion.run import DiffusionOptions, train_diffusion

    o, common = _setup(options, overrides)
    out = Path(out)
    # every training stage resumes, so rerunning the demo continues an interrupted run
    model = train_diffusion(
        "digits",
        out / "diffusion",
        DiffusionOptions(steps=o.diffusion_steps),
        resume=True,
        **common,
    )
    outliers = {
        m: generate(
            "digits",
            str(model.path),
            out / f"outliers-{m}",
            GenerateOptions(method=m, batch_size=64, limit=o.limit),
            **common,
        ).path
        for m in ("sd", "sona")
    }
    recipes = [
        ("ce", None, "energy"),
        ("oe", "sd", "energy"),
        ("sona", "sona", "energy"),
        ("sd", "sd", "sd-vote"),
    ]
    scores = []
    for seed in range(o.seeds):
        for loss, source, method in recipes:
            opts = _detector_options(o, loss, seed)
            det = train_detector(
                "digits",
                out / f"detector-{loss}-seed{seed}",
                opts,
                outliers=[str(outliers[source])] if source else (),
                resume=True,
                **common,
            )
            arts = score(
                det.path,
                "digits",
                [method],
                out / f"scores-{loss}-seed{seed}",
                outliers=str(outliers[source]) if method == "sd-vote" else None,
                overwrite=o.overwrite,
            )
            scores += [a.path for a in arts]
        scores += _diffguard_rows(o, out, model.path, out / f"detector-ce-seed{seed}", seed)
    return evaluate(scores, out / "metrics", overwrite=o.overwrite)


# DiffGuard on digits: both paths on the tiny class-conditional model (the classifier path
# uses it unconditioned, through its null class), 25 DDIM steps each (docs/diffguard.md)
DIFFGUARD_DEMO = {
    "cfg": {"guidance": "cfg"},
    "classifier": {"guidance": "classifier", "steps": 25},
}


def _diffguard_rows(o: DemoOptions, out: Path, model: Path, detector: Path, seed: int) -> list:
    """Energy on the DiffGuard subset, then DiffGuard alone and combined with that energy."""
    from oodkit.stages.score.run import score

    limit = o.diffguard_limit
    energy = score(
        detector,
        "digits",
        ["energy"],
        out / f"scores-ce-energy-subset-seed{seed}",
        limit=limit,
        overwrite=o.overwrite,
    )[0]
    paths = [energy.path]
    for name, kw in DIFFGUARD_DEMO.items():
        arts = score(
            detector,
            "digits",
            ["diffguard"],
            out / f"scores-diffguard-{name}-seed{seed}",
            model=str(model),
            distance="logits-l1,ssim",
            combine_with=str(energy.path),
            limit=limit,
            diffusion_batch=32,
            overwrite=o.overwrite,
            quiet=o.quiet,
            **kw,
        )
        paths += [a.path for a in arts]
    return paths


@writes_output
def run_unsupervised_demo(
    out: str | Path = "runs/demo-unsupervised",
    options: DemoOptions | None = None,
    **overrides: Any,
) -> tuple[Any, list[dict[str, Any]]]:
    """The label-free chain on digits (labels hidden from every training stage)."""
    from oodkit.stages.evaluate.run import evaluate
    from oodkit.stages.generate.run import GenerateOptions, generate
    from oodkit.stages.pseudo_label.run import PseudoLabelOptions, pseudo_label
    from oodkit.stages.score.run import score
    from oodkit.stages.train_detector.run import train_detector
    from oodkit.stages.train_diffusion.run import DiffusionOptions, train_diffusion

    o, common = _setup(options, overrides)
    out = Path(out)
    pl = PseudoLabelOptions(
        num_clusters=5,
        arch_kwargs=DEMO_ARCH_KWARGS,
        pretext_epochs=o.pretext_epochs,
        scan_epochs=o.scan_epochs,
        scan_lr=1e-3,
        selflabel_epochs=10,
        selflabel_lr=1e-4,
        num_heads=10,
    )
    labels = str(pseudo_label("digits", out / "pseudo-labels", pl, **common).path)
    model = train_diffusion(
        "digits",
        out / "diffusion",
        DiffusionOptions(steps=o.diffusion_steps),
        labels=labels,
        resume=True,
        **common,
    )
    outliers = generate(
        "digits",
        str(model.path),
        out / "outliers-sd",
        GenerateOptions(method="sd", batch_size=64, limit=o.limit),
        labels=labels,
        **common,
    )
    scores = []
    for seed in range(o.seeds):
        opts = _detector_options(o, "sd", seed)
        det = train_detector(
            "digits",
            out / f"detector-sd-seed{seed}",
            opts,
            labels=labels,
            outliers=[str(outliers.path)],
            resume=True,
            **common,
        )
        scores += [
            a.path
            for a in score(
                det.path,
                "digits",
                ["sd-vote", "energy"],
                out / f"scores-sd-seed{seed}",
                outliers=str(outliers.path),
                overwrite=o.overwrite,
            )
        ]
    return evaluate(scores, out / "metrics", overwrite=o.overwrite)
