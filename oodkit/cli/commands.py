"""The commands: each a thin wrapper that builds its stage's options (generated from the
options dataclass, ``oodkit.cli.generator``), calls the library function and prints what
``oodkit.cli.present`` makes of the result. Each command imports its stage when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oodkit.cli import present
from oodkit.cli.base import (
    DataRootOpt,
    IdOpt,
    OutOpt,
    _Command,
    app,
    guarded,
    import_app,
    train_app,
)
from oodkit.cli.generator import _fixed, stage_command
from oodkit.demo import DemoOptions
from oodkit.errors import OodkitError
from oodkit.methods import SCORE
from oodkit.scoring.options import ScoreOptions
from oodkit.stages.evaluate.options import EvalOptions
from oodkit.stages.generate.options import GenerateOptions
from oodkit.stages.import_detector.options import ImportOptions
from oodkit.stages.import_diffusion.options import ImportDiffusionOptions
from oodkit.stages.pseudo_label.options import PseudoLabelOptions
from oodkit.stages.train_detector.options import TrainOptions
from oodkit.stages.train_diffusion.options import DiffusionOptions
from oodkit.sweep import SweepOptions


@stage_command(
    app,
    "eval",
    EvalOptions,
    [
        _fixed(
            "scores",
            Annotated[
                list[Path], typer.Argument(help="Scores artifacts; same-method runs are averaged.")
            ],
        ),
        _fixed("out", OutOpt),
    ],
)
def eval_cmd(o: EvalOptions, scores: list[Path], out: Path) -> None:
    """Compute AUROC, AUPR-IN/OUT and FPR@95 per OOD set; write metrics.json, tables, plots."""
    from oodkit.stages.evaluate.run import evaluate

    art, blocks = evaluate(list(scores), out, o)
    console = present.console(o.quiet)
    present.metrics(console, blocks, warn=not o.quiet)
    console.print(f"metrics written to {art.path}")


@app.command("info", cls=_Command)
@guarded
def info_cmd(
    artifact: Annotated[Path | None, typer.Argument(help="An artifact directory.")] = None,
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", "-b", help="List a benchmark's sets.")
    ] = None,
    methods: Annotated[
        bool, typer.Option("--methods", help="List every registered method per stage.")
    ] = False,
    data_root: DataRootOpt = None,
) -> None:
    """Show an artifact's manifest, schema and rows, a benchmark's sets, or the methods."""
    from oodkit.stages.info import artifact_info, benchmark_info, methods_info

    if (artifact is not None) + (benchmark is not None) + methods != 1:
        raise OodkitError("give one of: an artifact directory, --benchmark NAME or --methods")
    console = present.console()
    if artifact is not None:
        for part in artifact_info(artifact):
            console.print(part)
    elif benchmark is not None:
        console.print(benchmark_info(benchmark, data_root))
    else:
        console.print(methods_info())


@app.command("verify", cls=_Command)
@guarded
def verify_cmd(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory.")],
) -> None:
    """Recompute an artifact's fingerprint and check its files against its manifest."""
    from oodkit.artifacts import verify_artifact

    art = verify_artifact(artifact)
    typer.echo(f"{art.path}: {art.kind} artifact intact (fingerprint {art.manifest.fingerprint})")


@app.command("push", cls=_Command)
@guarded
def push_cmd(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory.")],
    repo_id: Annotated[
        str,
        typer.Option(
            "--repo-id", help="Hub repo, OWNER/NAME (a dataset repo; a model repo for models)."
        ),
    ],
    license: Annotated[
        str | None, typer.Option("--license", help="Hub license id for the card, e.g. cc-by-4.0.")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
) -> None:
    """Push an artifact to the Hugging Face Hub in one commit, with a card from its manifest."""
    from oodkit.stages.push import push_artifact

    typer.echo(push_artifact(artifact, repo_id, private=private, license=license))


DEMO_OUT = Path("runs/demo")


@stage_command(
    train_app,
    "detector",
    TrainOptions,
    [_fixed("id_ref", IdOpt), _fixed("out", OutOpt)],
    section="train detector",
)
def train_detector_cmd(o: TrainOptions, id_ref: str, out: Path) -> None:
    """Train a detector (SGD nesterov + per-step cosine) with a registered loss."""
    from oodkit.stages.train_detector.run import train_detector

    present.report(
        present.console(o.quiet), train_detector(id_ref, out, o), present.trained_detector
    )


@stage_command(
    train_app,
    "diffusion",
    DiffusionOptions,
    [_fixed("id_ref", IdOpt), _fixed("out", OutOpt)],
    section="train diffusion",
)
def train_diffusion_cmd(o: DiffusionOptions, id_ref: str, out: Path) -> None:
    """Train a class-conditional CFG pixel diffusion model (EMA, diffusers layout)."""
    from oodkit.stages.train_diffusion.run import train_diffusion

    result = train_diffusion(id_ref, out, o)
    present.report(present.console(o.quiet), result, present.trained_diffusion)


@stage_command(
    import_app,
    "detector",
    ImportOptions,
    [
        _fixed(
            "source",
            Annotated[
                str,
                typer.Argument(
                    help="torchvision:NAME[:WEIGHTS], timm:NAME, openood:ARCH or pytorch-ood:KEY."
                ),
            ],
        ),
        _fixed("out", OutOpt),
    ],
    section="import detector",
)
def import_detector_cmd(o: ImportOptions, source: str, out: Path) -> None:
    """Import a classifier (torchvision, timm, OpenOOD, pytorch-ood) as a detector artifact."""
    from oodkit.stages.import_detector.run import import_detector

    present.console(o.quiet).print(present.imported_detector(import_detector(source, out, o)))


@stage_command(
    import_app,
    "diffusion",
    ImportDiffusionOptions,
    [
        _fixed(
            "source",
            Annotated[
                str,
                typer.Argument(
                    help="adm:FILE (an OpenAI guided-diffusion checkpoint) or ldm:FILE (a "
                    "CompVis class-conditional latent diffusion checkpoint, e.g. cin256-v2)."
                ),
            ],
        ),
        _fixed("out", OutOpt),
    ],
    section="import diffusion",
)
def import_diffusion_cmd(o: ImportDiffusionOptions, source: str, out: Path) -> None:
    """Convert an ADM or LDM checkpoint into a diffusers model artifact."""
    from oodkit.stages.import_diffusion.run import import_diffusion

    present.console(o.quiet).print(present.imported_diffusion(import_diffusion(source, out, o)))


@stage_command(
    app,
    "generate",
    GenerateOptions,
    [
        _fixed("id_ref", IdOpt),
        _fixed(
            "model",
            Annotated[
                str, typer.Option("--model", help="Diffusion-model artifact, SD folder or Hub id.")
            ],
        ),
        _fixed("out", OutOpt),
    ],
)
def generate_cmd(o: GenerateOptions, id_ref: str, model: str, out: Path) -> None:
    """Generate outliers (sona, sd, global) or ID reconstructions from ID images."""
    from oodkit.stages.generate.run import generate

    present.report(present.console(o.quiet), generate(id_ref, model, out, o), present.outliers)


@stage_command(
    app, "pseudo-label", PseudoLabelOptions, [_fixed("id_ref", IdOpt), _fixed("out", OutOpt)]
)
def pseudo_label_cmd(o: PseudoLabelOptions, id_ref: str, out: Path) -> None:
    """Cluster unlabelled ID images into pseudo-classes (SCAN or k-means)."""
    from oodkit.stages.pseudo_label.run import pseudo_label

    present.report(present.console(o.quiet), pseudo_label(id_ref, out, o), present.pseudo_labels)


@stage_command(
    app,
    "score",
    ScoreOptions,
    [
        _fixed("detector", Annotated[Path, typer.Option("--detector", help="Detector artifact.")]),
        _fixed(
            "benchmark",
            Annotated[str, typer.Option("--benchmark", "-b", help="Benchmark name or file.")],
        ),
        _fixed(
            "method",
            Annotated[str, typer.Option("--method", help=f"{SCORE.help()}; comma list.")],
        ),
        _fixed("out", OutOpt),
    ],
)
def score_cmd(o: ScoreOptions, detector: Path, benchmark: str, method: str, out: Path) -> None:
    """Score a benchmark's ID test and OOD sets; one scores artifact per method."""
    from oodkit.stages.score.run import score

    present.report(
        present.console(o.quiet),
        score(detector, benchmark, method, out, o),
        lambda arts: "\n".join(present.scores(a) for a in arts),
    )


@stage_command(
    app,
    "demo",
    DemoOptions,
    [
        _fixed(
            "out",
            Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's artifacts.")],
            DEMO_OUT,
        ),
        _fixed(
            "unsupervised",
            Annotated[
                bool,
                typer.Option(
                    "--unsupervised", help="Label-free chain: SCAN → diffusion → SD → sd-vote."
                ),
            ],
            False,
        ),
    ],
)
def demo_cmd(o: DemoOptions, out: Path, unsupervised: bool) -> None:
    """digits end to end: diffusion → SD and SONA outliers → ce/oe/sona/sd detectors → eval."""
    from oodkit.demo import run_demo, run_unsupervised_demo

    if unsupervised and out == DEMO_OUT:
        out = Path("runs/demo-unsupervised")
    run = run_unsupervised_demo if unsupervised else run_demo
    art, blocks = run(out, o)
    console = present.console(o.quiet)
    present.metrics(console, blocks, warn=False, summary=True)
    console.print(f"artifacts in {Path(out)}; metrics in {art.path}")


@stage_command(
    app,
    "sweep",
    SweepOptions,
    [
        _fixed("id_ref", IdOpt),
        _fixed(
            "model",
            Annotated[
                str, typer.Option("--model", help="Diffusion model for the generate section.")
            ],
        ),
        _fixed(
            "grid",
            Annotated[
                Path,
                typer.Option("--grid", help="YAML / JSON grid: generate, train detector, score."),
            ],
        ),
        _fixed("out", OutOpt),
    ],
)
def sweep_cmd(o: SweepOptions, id_ref: str, model: str, grid: Path, out: Path) -> None:
    """Choose a generation + detector recipe on validation sets only; write recipe.yaml."""
    from oodkit.sweep import sweep

    doc = sweep(id_ref, model, grid, out, o)
    if doc["outliers_help"]:
        best = doc["cells"][doc["chosen"]]
        which = f"cell {best['cell']}"
    else:
        best = doc["baselines"][doc["chosen_baseline"]]
        which = f"the no-outlier baseline {best['baseline']} (no cell beat it beyond seed noise)"
    present.console(o.quiet).print(
        f"{len(doc['cells'])} cells on validation sets; chosen: {which} "
        f"(val AUROC {o.select} {100 * best['score']:.2f}); recipe in {Path(out) / 'recipe.yaml'}, "
        f"table in {Path(out) / 'results.md'}"
    )
