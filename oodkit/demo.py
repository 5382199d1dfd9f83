"""``oodkit demo``: every stage that exists, end to end on the bundled ``digits`` benchmark.

1. train the tiny class-conditional diffusion model on the ID classes (0–4);
2. run each recipe of ``oodkit/recipes/digits.yaml`` — chosen by ``oodkit sweep`` on digits'
   validation sets (docs/sweep.md) — per seed: its outliers (generated once, shared by
   recipes with the same generation options), its detector, its post-hoc score;
3. DiffGuard with the ``ce`` recipe's detector (both guidance paths, alone and combined with
   energy, on the first ``diffguard_limit`` samples of each test set, next to energy on the
   same samples); evaluate, and print one table.

The defaults (5 seeds) took 19 minutes on two CPU cores, 3 of them for the diffusion model.
``run_unsupervised_demo`` runs the SD-outlier paper's label-free chain instead: SCAN
pseudo-labels → diffusion on the clusters → SD outliers → ``sd`` detector on the clusters →
sd-vote → eval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from oodkit import options as O
from oodkit.errors import OodkitError
from oodkit.locks import writes_output
from oodkit.options import with_overrides

DEMO_ARCH_KWARGS = {"channels": [16, 32, 64, 128], "stem_width": 16}


@dataclass(kw_only=True)
class DemoOptions:
    """The demo's sizes; the defaults take about 20 minutes on two CPU cores."""

    seeds: int = O.option(5, "Detector seeds per recipe.", minimum=1)
    recipes: str | None = O.option(
        None,
        "Recipes file (default: the digits recipes oodkit sweep chose on validation sets).",
        role="input",
    )
    diffusion_steps: int = O.option(800, "Diffusion training steps.", minimum=1)
    epochs: int | None = O.option(
        None, "Detector training epochs (default: each recipe's).", minimum=1
    )
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


@dataclass
class Recipe:
    """One named recipe: generation options (none: no outliers), detector options, score."""

    name: str
    score: str
    generate: dict[str, Any] | None
    train: dict[str, Any] = field(default_factory=dict)


def read_recipes(path: str | Path | None) -> list[Recipe]:
    """The recipes of a file: ``NAME: {score: METHOD, generate: {...}, train detector: {...}}``
    (sections as in a sweep's ``recipe.yaml``), every option checked like ``--config``."""
    import yaml

    from oodkit.methods import DETECTOR_LOSS, SCORE
    from oodkit.stages.generate.options import GenerateOptions
    from oodkit.stages.train_detector.options import TrainOptions

    where = f"--recipes {path}" if path else "the bundled digits recipes"
    if path is None:
        data = yaml.safe_load(resources.files("oodkit.recipes").joinpath("digits.yaml").read_text())
    elif not Path(path).is_file():
        raise OodkitError(f"--recipes {path} does not exist")
    else:
        data = O.load_structured(path, where)
    if not isinstance(data, dict) or not data:
        raise OodkitError(f"{where}: holds one non-empty mapping of recipe names")
    recipes = []
    for name, entry in data.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):
            raise OodkitError(f"{where}: recipe name {name!r} is not a plain folder name")
        sections = {O.option_key(k): v for k, v in entry.items()} if isinstance(entry, dict) else {}
        unknown = sorted(set(sections) - {"score", "generate", "train_detector"})
        if not sections or unknown or not isinstance(sections.get("score"), str):
            raise OodkitError(
                f"{where}: recipe {name!r} needs score: METHOD and may hold generate and "
                f"train detector sections" + (f" (unknown: {unknown[0]})" if unknown else "")
            )
        ctx = f"{where}, recipe {name!r}"
        try:
            needs = SCORE.get(sections["score"]).needs
        except OodkitError as exc:
            raise OodkitError(f"{ctx}: {str(exc).replace(SCORE.option, 'score')}") from None
        gen, train = sections.get("generate"), sections.get("train_detector") or {}
        if gen is None and "outliers" in needs:
            raise OodkitError(f"{ctx}: score {sections['score']} needs a generate section")
        if gen is not None and "method" not in gen:
            raise OodkitError(f"{ctx}: the generate section needs a method")
        gen = None if gen is None else O.config_options(GenerateOptions, gen, ctx)
        train = O.config_options(TrainOptions, train, ctx)
        detector = TrainOptions(**train)
        try:  # the checks the stages make, named by the recipe
            if gen is not None:
                GenerateOptions(**gen).resolved()
            detector.check()
        except OodkitError as exc:
            raise OodkitError(f"{ctx}: {exc}") from None
        if gen is None and "outliers" in DETECTOR_LOSS.get(detector.loss).needs:
            raise OodkitError(f"{ctx}: loss {detector.loss} needs a generate section")
        recipes.append(Recipe(str(name), sections["score"], gen, train))
    return recipes


def _setup(options: DemoOptions | None, overrides: dict[str, Any]):
    """The checked options and what every stage of the demo shares (overwrite, quiet)."""
    o = with_overrides(DemoOptions, options, overrides)  # counts checked by their minimum
    return o, {"overwrite": o.overwrite, "quiet": o.quiet}


def _detector_options(o: DemoOptions, loss: str, seed: int):
    """The unsupervised chain's detector: small ResNet-18, CIFAR-style stem, SGD lr 0.1."""
    from oodkit.stages.train_detector.options import TrainOptions

    return TrainOptions(
        loss=loss,
        epochs=o.epochs or 15,
        batch_size=32,
        lr=0.1,
        augment="crop",
        arch_kwargs=DEMO_ARCH_KWARGS,
        seed=seed,
    )


def _outliers(o: DemoOptions, recipes: list[Recipe], model: Path, out: Path, common) -> dict:
    """Each recipe's outliers folder (None: no generation); one per distinct generation."""
    from oodkit.stages.generate.run import GenerateOptions, generate

    made: list[tuple[dict[str, Any], Path]] = []
    paths: dict[str, Path | None] = {}
    for r in recipes:
        if r.generate is None:
            paths[r.name] = None
            continue
        gen = {**r.generate, "limit": o.limit}
        done = next((p for g, p in made if g == gen), None)
        if done is None:
            opts = GenerateOptions(**gen)
            done = generate("digits", str(model), out / f"outliers-{r.name}", opts, **common).path
            made.append((gen, done))
        paths[r.name] = done
    return paths


@writes_output
def run_demo(
    out: str | Path = "runs/demo",
    options: DemoOptions | None = None,
    **overrides: Any,
) -> tuple[Any, list[dict[str, Any]]]:
    """Run the demo chain into ``out``; returns the metrics artifact and its blocks."""
    from oodkit.stages.evaluate.run import evaluate
    from oodkit.stages.score.run import score
    from oodkit.stages.train_detector.options import TrainOptions
    from oodkit.stages.train_detector.run import train_detector
    from oodkit.stages.train_diffusion.run import DiffusionOptions, train_diffusion

    o, common = _setup(options, overrides)
    recipes = read_recipes(o.recipes)  # checked before anything is written
    out = Path(out)
    # every training stage resumes, so rerunning the demo continues an interrupted run
    model = train_diffusion(
        "digits",
        out / "diffusion",
        DiffusionOptions(steps=o.diffusion_steps),
        resume=True,
        **common,
    )
    outliers = _outliers(o, recipes, model.path, out, common)
    scores = []
    runs: dict[str, list[Path]] = {r.name: [] for r in recipes}  # per recipe, by seed
    for seed in range(o.seeds):
        for r in recipes:
            train = {**r.train, "seed": seed, **({"epochs": o.epochs} if o.epochs else {})}
            source = outliers[r.name]
            det = train_detector(
                "digits",
                out / f"detector-{r.name}-seed{seed}",
                TrainOptions(**train),
                outliers=[str(source)] if source else (),
                resume=True,
                **common,
            )
            arts = score(
                det.path,
                "digits",
                [r.score],
                out / f"scores-{r.name}-seed{seed}",
                outliers=str(source) if r.score == "sd-vote" else None,
                label=r.name,
                overwrite=o.overwrite,
            )
            scores += [a.path for a in arts]
            runs[r.name].append(arts[0].path)
        if any(r.name == "ce" for r in recipes):
            scores += _diffguard_rows(o, out, model.path, out / f"detector-ce-seed{seed}", seed)
    art, blocks = evaluate(scores, out / "metrics", overwrite=o.overwrite)
    if "ce" in runs:
        add_deltas(blocks, runs, "ce")
    return art, blocks


def add_deltas(blocks: list[dict[str, Any]], runs: dict[str, list[Path]], baseline: str) -> None:
    """Each recipe's block gets ``delta``: its near / far AUROC minus the ``baseline``
    recipe's, paired by seed (``metrics.paired_delta``). ``runs``: recipe → its scores
    artifacts by seed."""
    from oodkit.metrics import paired_delta
    from oodkit.schemas import read_scores
    from oodkit.stages.evaluate.run import run_metrics

    groups, labels = {}, {}
    for name, paths in runs.items():
        scored = [read_scores(p) for p in paths]
        labels[name] = scored[0].label  # the block's name: the recipe and its score method
        groups[labels[name]] = [run_metrics(r)["groups"] for r in scored]
    base = groups[labels[baseline]]
    for block in blocks:
        mine = groups.get(block["method"])
        if mine is None or block["method"] == labels[baseline]:
            continue
        block["delta"] = {
            g: paired_delta([m[g]["auroc"] for m in mine], [b[g]["auroc"] for b in base])
            for g in mine[0]
            if all(g in b for b in base)
        }


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
