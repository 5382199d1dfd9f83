"""The ``oodkit`` command line: thin Typer wrappers over library functions.

Nothing heavy is imported at module level so that ``oodkit --help`` stays fast; each command
imports what it needs. Bad input (:class:`~oodkit.errors.OodkitError`) becomes one line on
stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from oodkit import __version__
from oodkit.errors import OodkitError

app = typer.Typer(
    name="oodkit",
    help="Diffusion-based OOD detection: SONA, semantic-discrepant outliers, DiffGuard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output artifact directory.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing artifact made differently.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="OpenOOD v1.5 data folder for cifar10 / imagenet200 (or $OODKIT_OPENOOD_ROOT).",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oodkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug


def guarded(fn: F) -> F:
    """Turn OodkitError into one line on stderr and exit code 2 (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OodkitError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet)


@app.command("eval")
@guarded
def eval_cmd(
    scores: Annotated[
        list[Path], typer.Argument(help="Scores artifacts; same-method runs are averaged.")
    ],
    out: OutOpt,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write ROC and histogram PNGs.")
    ] = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compute AUROC, AUPR-IN/OUT and FPR@95 per OOD set; write metrics.json, metrics.md, plots."""
    from oodkit import report
    from oodkit.evaluate import evaluate

    art, blocks = evaluate(list(scores), out, plots=plots, overwrite=overwrite)
    console = _console(quiet)
    for table in report.rich_tables(blocks):
        console.print(table)
    console.print(f"metrics written to {art.path}")


@app.command("info")
@guarded
def info_cmd(
    artifact: Annotated[Path | None, typer.Argument(help="An artifact directory.")] = None,
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", "-b", help="List a benchmark's sets.")
    ] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Show an artifact's manifest, schema and rows, or a benchmark's sets and sizes."""
    from oodkit.info import artifact_info, benchmark_info

    if (artifact is None) == (benchmark is None):
        raise OodkitError("give either an artifact directory or --benchmark NAME")
    console = _console()
    if artifact is not None:
        for part in artifact_info(artifact):
            console.print(part)
    else:
        console.print(benchmark_info(benchmark, data_root))


@app.command("push")
@guarded
def push_cmd(
    artifact: Annotated[Path, typer.Argument(help="A tabular artifact directory.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo, OWNER/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
) -> None:
    """Push an artifact's table, manifest and a dataset card to the Hugging Face Hub."""
    from oodkit.hub import push_artifact

    typer.echo(push_artifact(artifact, repo_id, private=private))


train_app = typer.Typer(help="Train models: detector, diffusion.", no_args_is_help=True)
app.add_typer(train_app, name="train")
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
WorkersOpt = Annotated[int, typer.Option("--num-workers", help="Data-loading worker processes.")]


def _json_option(text: str | None, name: str) -> dict[str, Any]:
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OodkitError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise OodkitError(f"{name} must be a JSON object")
    return value


@train_app.command("detector")
@guarded
def train_detector_cmd(
    id_ref: Annotated[
        str, typer.Option("--id", help="Benchmark (its ID train set) or dataset reference.")
    ],
    out: OutOpt,
    loss: Annotated[str, typer.Option("--loss", help="ce, oe, energy, sona or sd.")] = "ce",
    labels: Annotated[str | None, typer.Option("--labels", help="Pseudo-labels artifact.")] = None,
    outliers: Annotated[
        list[str] | None,
        typer.Option("--outliers", help="Outliers artifact or dataset reference; repeatable."),
    ] = None,
    extra_id: Annotated[
        list[str] | None,
        typer.Option("--extra-id", help="Extra ID images keeping their label; repeatable."),
    ] = None,
    val: Annotated[
        str | None, typer.Option("--val", help="ID validation set (default: benchmark's).")
    ] = None,
    arch: Annotated[str, typer.Option("--arch", help="Any timm model name.")] = "resnet18",
    arch_kwargs: Annotated[
        str | None,
        typer.Option(
            "--arch-kwargs", help="JSON for timm.create_model, e.g. '{\"drop_rate\": 0.1}'."
        ),
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Local backbone weights.")
    ] = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="timm hub weights (online).")
    ] = False,
    epochs: Annotated[int, typer.Option("--epochs")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    outlier_batch_size: Annotated[int | None, typer.Option("--outlier-batch-size")] = None,
    lr: Annotated[float, typer.Option("--lr")] = 0.1,
    momentum: Annotated[float, typer.Option("--momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 5e-4,
    nesterov: Annotated[bool, typer.Option("--nesterov/--no-nesterov")] = True,
    min_lr: Annotated[float, typer.Option("--min-lr", help="End of the per-step cosine.")] = 1e-6,
    beta: Annotated[float, typer.Option("--beta", help="OE weight (oe, sona).")] = 0.5,
    club_weight: Annotated[float, typer.Option("--club-weight", help="CLUB weight (sona).")] = 1.0,
    club_steps: Annotated[int, typer.Option("--club-steps", help="Estimator steps per batch.")] = 5,
    club_lr: Annotated[float, typer.Option("--club-lr")] = 1e-4,
    sd_lambda: Annotated[
        float, typer.Option("--sd-lambda", help="Out-class head weight (sd).")
    ] = 0.3,
    energy_weight: Annotated[float, typer.Option("--energy-weight")] = 0.1,
    m_in: Annotated[float, typer.Option("--m-in")] = -25.0,
    m_out: Annotated[float, typer.Option("--m-out")] = -7.0,
    augment: Annotated[
        str, typer.Option("--augment", help="auto, none, crop, crop-flip, rrc-flip.")
    ] = "auto",
    image_size: Annotated[int | None, typer.Option("--image-size")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    num_workers: WorkersOpt = 0,
    data_root: DataRootOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    stop_after_epochs: Annotated[
        int | None,
        typer.Option("--stop-after-epochs", help="Pause after N epochs (then --resume)."),
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a detector (SGD nesterov + per-step cosine) with ce, oe, energy, sona or sd loss."""
    from oodkit.detector.train import TrainOptions, train_detector

    opts = TrainOptions(
        loss=loss,
        arch=arch,
        arch_kwargs=_json_option(arch_kwargs, "--arch-kwargs"),
        epochs=epochs,
        batch_size=batch_size,
        outlier_batch_size=outlier_batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
        min_lr=min_lr,
        beta=beta,
        club_weight=club_weight,
        club_steps=club_steps,
        club_lr=club_lr,
        sd_lambda=sd_lambda,
        energy_weight=energy_weight,
        m_in=m_in,
        m_out=m_out,
        augment=augment,
        image_size=image_size,
        seed=seed,
    )
    art = train_detector(
        id_ref,
        out,
        opts,
        labels=labels,
        outliers=outliers or (),
        extra_id=extra_id or (),
        val=val,
        weights=weights,
        pretrained=pretrained,
        data_root=data_root,
        device=device,
        num_workers=num_workers,
        resume=resume,
        overwrite=overwrite,
        stop_after_epochs=stop_after_epochs,
        quiet=quiet,
    )
    console = _console(quiet)
    if art is None:
        console.print(f"paused; continue with --resume (state in {out}.partial)")
    else:
        s = art.manifest.summary
        acc = s.get("id_val_accuracy")
        console.print(
            f"detector written to {art.path}: final loss {s['final_loss']:.4f}"
            + (f", ID val accuracy {acc:.4f}" if acc is not None else "")
        )


@train_app.command("diffusion")
@guarded
def train_diffusion_cmd(
    id_ref: Annotated[
        str, typer.Option("--id", help="Benchmark (its ID train set) or dataset reference.")
    ],
    out: OutOpt,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Pseudo-labels artifact (clusters as classes).")
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", help="tiny (CPU, ~1 M params) or cifar (DDPM CIFAR-10 UNet).")
    ] = "tiny",
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 2000,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    p_uncond: Annotated[
        float, typer.Option("--p-uncond", help="Label dropout to the null class.")
    ] = 0.1,
    ema_decay: Annotated[float, typer.Option("--ema-decay")] = 0.999,
    betas: Annotated[str, typer.Option("--betas", help="linear or cosine.")] = "linear",
    flip: Annotated[bool, typer.Option("--flip", help="Random horizontal flips.")] = False,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between checkpoints and sample grids.")
    ] = 250,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    stop_after_steps: Annotated[
        int | None, typer.Option("--stop-after-steps", help="Pause after N steps.")
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a class-conditional CFG pixel diffusion model (EMA, diffusers layout)."""
    from oodkit.diffusion.train import DiffusionOptions, train_diffusion

    opts = DiffusionOptions(
        preset=preset,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        p_uncond=p_uncond,
        ema_decay=ema_decay,
        betas=betas,
        flip=flip,
        seed=seed,
        checkpoint_every=checkpoint_every,
    )
    art = train_diffusion(
        id_ref,
        out,
        opts,
        labels=labels,
        data_root=data_root,
        device=device,
        resume=resume,
        overwrite=overwrite,
        stop_after_steps=stop_after_steps,
        quiet=quiet,
    )
    console = _console(quiet)
    if art is None:
        console.print(f"paused; continue with --resume (state in {out}.partial)")
    else:
        loss = art.manifest.summary["final_loss"]
        console.print(f"diffusion model written to {art.path} (final loss {loss:.4f})")


@app.command("generate")
@guarded
def generate_cmd(
    method: Annotated[str, typer.Option("--method", help="sona, sd, global or reconstruct.")],
    id_ref: Annotated[
        str, typer.Option("--id", help="Benchmark (its ID train set) or dataset reference.")
    ],
    model: Annotated[
        str, typer.Option("--model", help="Diffusion-model artifact, SD folder or Hub id.")
    ],
    out: OutOpt,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Pseudo-labels artifact (sd).")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="DDIM steps (50; sd: 100).")] = None,
    t_start: Annotated[
        int | None,
        typer.Option(
            "--t-start", help="Fixed start: DDIM steps (sona...), training timesteps (sd, 100)."
        ),
    ] = None,
    lam: Annotated[float, typer.Option("--lam", help="SONA mask fraction λ.")] = 0.1,
    scale: Annotated[
        float | None,
        typer.Option("--scale", help="Guidance scale s (sona/global 10, reconstruct 1)."),
    ] = None,
    w: Annotated[float, typer.Option("--w", help="SD guidance weight.")] = 2.0,
    momentum_scale: Annotated[
        float, typer.Option("--momentum-scale", help="SONA momentum (official: 0.3).")
    ] = 0.0,
    momentum_beta: Annotated[float, typer.Option("--momentum-beta")] = 0.6,
    warmup: Annotated[
        int, typer.Option("--warmup", help="Unguided steps at each sample's start.")
    ] = 0,
    ood_classes: Annotated[
        str | None, typer.Option("--ood-classes", help="File of OOD class names.")
    ] = None,
    allow_leakage: Annotated[
        bool, typer.Option("--allow-leakage", help="Allow OOD names that are ID classes.")
    ] = False,
    per_image: Annotated[int, typer.Option("--per-image")] = 1,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N ID images.")
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Output size (default: the source's).")
    ] = None,
    save_masks: Annotated[
        int, typer.Option("--save-masks", help="Save SONA masks of the first N samples.")
    ] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate outliers (sona, sd, global) or ID reconstructions from ID images."""
    from oodkit.generate.run import GenerateOptions, generate

    opts = GenerateOptions(
        method=method,
        steps=steps,
        t_start=t_start,
        lam=lam,
        scale=scale,
        w=w,
        momentum_scale=momentum_scale,
        momentum_beta=momentum_beta,
        warmup=warmup,
        per_image=per_image,
        limit=limit,
        size=size,
        seed=seed,
        batch_size=batch_size,
        allow_leakage=allow_leakage,
    )
    art = generate(
        id_ref,
        model,
        out,
        opts,
        labels=labels,
        ood_classes=ood_classes,
        save_masks=save_masks,
        data_root=data_root,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
    )
    if art is not None:
        s = art.manifest.summary
        _console(quiet).print(
            f"{s['count']} samples written to {art.path} (mean SSIM {s.get('mean_ssim')})"
        )


@app.command("pseudo-label")
@guarded
def pseudo_label_cmd(
    id_ref: Annotated[
        str, typer.Option("--id", help="Benchmark (its ID train set) or dataset reference.")
    ],
    num_clusters: Annotated[
        int, typer.Option("--num-clusters", "-c", help="Number of clusters C.")
    ],
    out: OutOpt,
    method: Annotated[str, typer.Option("--method", help="scan or kmeans.")] = "scan",
    features: Annotated[
        str, typer.Option("--features", help="simclr, or timm:NAME with --weights.")
    ] = "simclr",
    weights: Annotated[
        str | None, typer.Option("--weights", help="Pretrained backbone for timm:NAME.")
    ] = None,
    arch: Annotated[str, typer.Option("--arch", help="timm backbone for SimCLR.")] = "resnet18",
    arch_kwargs: Annotated[
        str | None, typer.Option("--arch-kwargs", help="JSON for timm.create_model.")
    ] = None,
    pretext_epochs: Annotated[int, typer.Option("--pretext-epochs")] = 200,
    pretext_batch_size: Annotated[int, typer.Option("--pretext-batch-size")] = 256,
    pretext_lr: Annotated[float, typer.Option("--pretext-lr")] = 0.2,
    temperature: Annotated[float, typer.Option("--temperature", help="NT-Xent temperature.")] = 0.1,
    num_neighbors: Annotated[
        int, typer.Option("--num-neighbors", "-k", help="Mined neighbours (SCAN).")
    ] = 20,
    num_heads: Annotated[int, typer.Option("--num-heads", help="Clustering heads.")] = 10,
    scan_epochs: Annotated[int, typer.Option("--scan-epochs")] = 50,
    scan_batch_size: Annotated[int, typer.Option("--scan-batch-size")] = 128,
    scan_lr: Annotated[float, typer.Option("--scan-lr")] = 1e-4,
    entropy_weight: Annotated[float, typer.Option("--entropy-weight")] = 5.0,
    selflabel_epochs: Annotated[
        int, typer.Option("--selflabel-epochs", help="0 skips self-labelling.")
    ] = 25,
    selflabel_lr: Annotated[float, typer.Option("--selflabel-lr")] = 1e-4,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Self-labelling confidence.")
    ] = 0.99,
    balance: Annotated[
        bool, typer.Option("--balance/--no-balance", help="Class-balanced self-labelling.")
    ] = True,
    flip: Annotated[str, typer.Option("--flip", help="auto (RGB only), yes or no.")] = "auto",
    image_size: Annotated[int | None, typer.Option("--image-size")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    data_root: DataRootOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Cluster unlabelled ID images into pseudo-classes (SCAN or k-means)."""
    from oodkit.pseudolabel.run import PseudoLabelOptions, pseudo_label

    opts = PseudoLabelOptions(
        method=method,
        num_clusters=num_clusters,
        features=features,
        arch=arch,
        arch_kwargs=_json_option(arch_kwargs, "--arch-kwargs"),
        pretext_epochs=pretext_epochs,
        pretext_batch_size=pretext_batch_size,
        pretext_lr=pretext_lr,
        temperature=temperature,
        num_neighbors=num_neighbors,
        num_heads=num_heads,
        scan_epochs=scan_epochs,
        scan_batch_size=scan_batch_size,
        scan_lr=scan_lr,
        entropy_weight=entropy_weight,
        selflabel_epochs=selflabel_epochs,
        selflabel_lr=selflabel_lr,
        threshold=threshold,
        balance=balance,
        flip=flip,
        image_size=image_size,
        seed=seed,
    )
    art = pseudo_label(
        id_ref,
        out,
        opts,
        weights=weights,
        data_root=data_root,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
    )
    if art is None:  # a non-main process under accelerate launch
        return
    s = art.manifest.summary
    line = f"pseudo-labels written to {art.path}"
    if "accuracy" in s:
        km = s["kmeans"]
        line += (
            f"; vs ground truth: accuracy {s['accuracy']:.4f}, NMI {s['nmi']:.4f}, "
            f"ARI {s['ari']:.4f} (k-means on the same features: {km['accuracy']:.4f})"
        )
    _console(quiet).print(line)


@app.command("score")
@guarded
def score_cmd(
    detector: Annotated[Path, typer.Option("--detector", help="Detector artifact.")],
    benchmark: Annotated[str, typer.Option("--benchmark", "-b", help="Benchmark name or file.")],
    method: Annotated[
        str, typer.Option("--method", help="msp, energy, maxlogit, knn, sd-vote; comma list.")
    ],
    out: OutOpt,
    outliers: Annotated[
        str | None, typer.Option("--outliers", help="Outliers for sd-vote.")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", help="Neighbours (knn 50, sd-vote 10).")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="sd-vote outlier weight.")] = 0.3,
    temperature: Annotated[float, typer.Option("--temperature", help="For msp and energy.")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 256,
    device: DeviceOpt = "auto",
    num_workers: WorkersOpt = 0,
    data_root: DataRootOpt = None,
    resize: Annotated[
        bool, typer.Option("--resize", help="Rescale benchmark images to the detector.")
    ] = False,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse cached features.")
    ] = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score a benchmark's ID test and OOD sets; one scores artifact per method."""
    from oodkit.scoring.score import score

    arts = score(
        detector,
        benchmark,
        method,
        out,
        outliers=outliers,
        k=k,
        alpha=alpha,
        temperature=temperature,
        batch_size=batch_size,
        device=device,
        data_root=data_root,
        num_workers=num_workers,
        allow_resize=resize,
        use_cache=cache,
        overwrite=overwrite,
    )
    console = _console(quiet)
    for art in arts:
        acc = art.manifest.summary.get("id_accuracy")
        console.print(
            f"{art.manifest.params['method']}: {art.path}"
            + (f" (ID accuracy {acc:.4f})" if acc is not None else "")
        )


@app.command("demo")
@guarded
def demo_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo's artifacts.")
    ] = Path("runs/demo"),
    seeds: Annotated[int, typer.Option("--seeds", help="Detector seeds per method.")] = 3,
    diffusion_steps: Annotated[
        int, typer.Option("--diffusion-steps", help="Diffusion training steps.")
    ] = 800,
    epochs: Annotated[int, typer.Option("--epochs", help="Detector training epochs.")] = 15,
    limit: Annotated[
        int | None, typer.Option("--limit", help="ID images used for generation.")
    ] = None,
    unsupervised: Annotated[
        bool,
        typer.Option("--unsupervised", help="Label-free chain: SCAN → diffusion → SD → sd-vote."),
    ] = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """digits end to end: diffusion → SD and SONA outliers → ce/oe/sona/sd detectors → eval."""
    from oodkit import report
    from oodkit.demo import DemoOptions, run_demo, run_unsupervised_demo

    if seeds < 1 or diffusion_steps < 1 or epochs < 1:
        raise OodkitError("--seeds, --diffusion-steps and --epochs must be at least 1")
    opts = DemoOptions(seeds=seeds, diffusion_steps=diffusion_steps, epochs=epochs, limit=limit)
    if unsupervised and out == Path("runs/demo"):
        out = Path("runs/demo-unsupervised")
    run = run_unsupervised_demo if unsupervised else run_demo
    art, blocks = run(out, opts, overwrite=overwrite, quiet=quiet)
    console = _console(quiet)
    for table in report.rich_tables(blocks):
        console.print(table)
    console.print(report.summary_table(blocks))
    console.print(f"artifacts in {Path(out)}; metrics in {art.path}")


def redact(argv: list[str]) -> list[str]:
    """Hide secrets (anything after a *token* option, or hf_... strings) in a command line."""
    out, hide_next = [], False
    for arg in argv:
        key = arg.split("=", 1)[0].lower()
        if hide_next or arg.startswith("hf_"):
            out.append("***")
        elif arg.startswith("--") and "token" in key and "=" in arg:
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
        hide_next = arg.startswith("--") and "token" in key and "=" not in arg
    return out


def main() -> None:
    """Console-script entry point; ``--debug`` is accepted anywhere on the line."""
    from oodkit.artifacts import set_command

    argv = sys.argv[1:]
    if "--debug" in argv:
        argv = ["--debug", *[a for a in argv if a != "--debug"]]
    set_command(" ".join(shlex.quote(a) for a in ["oodkit", *redact(argv)]))
    app(args=argv, prog_name="oodkit")


if __name__ == "__main__":
    main()
