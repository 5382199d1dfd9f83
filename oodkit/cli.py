"""The ``oodkit`` command line: thin Typer wrappers over library functions.

Every stage command is generated from the stage's options dataclass (``oodkit.options``): its
options' flags, defaults and help are written once, there. Method names in the help come from
the registries (``oodkit.methods``). Nothing heavy is imported at module level so that
``oodkit --help`` stays fast; each command imports what it needs. Bad input
(:class:`~oodkit.errors.OodkitError`) becomes one line on stderr and exit code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import inspect
import shlex
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from oodkit import __version__
from oodkit.demo import DemoOptions
from oodkit.errors import Interrupted, OodkitError
from oodkit.methods import SCORE
from oodkit.options import (
    CONFIG_COMMANDS,
    cli_fields,
    config_options,
    data_root_option,
    flags_of,
    json_object,
    read_config,
)
from oodkit.outcome import Pending
from oodkit.scoring.options import ScoreOptions
from oodkit.stages.evaluate.options import EvalOptions
from oodkit.stages.generate.options import GenerateOptions
from oodkit.stages.import_detector.options import ImportOptions
from oodkit.stages.import_diffusion.options import ImportDiffusionOptions
from oodkit.stages.pseudo_label.options import PseudoLabelOptions
from oodkit.stages.train_detector.options import TrainOptions
from oodkit.stages.train_diffusion.options import DiffusionOptions
from oodkit.sweep import SweepOptions

PIPELINE = (
    "pseudo-label",
    "train",
    "detector",
    "diffusion",
    "generate",
    "score",
    "eval",
    "sweep",
    "info",
    "verify",
    "push",
    "demo",
)
# errors of the environment rather than of oodkit: one line, like bad input
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


MAX_LINE = 1000  # characters of an error line: a message may quote user data


def refuse(message: str) -> NoReturn:
    """One line on stderr (at most :data:`MAX_LINE` characters) and exit code 2."""
    line = _one_line(message)
    line = line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2)


def _bare_flags(params: list[Any]) -> list[Any]:
    """Flags take no value: show no ``<bool>`` placeholder after them in ``--help``."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _bare_flags(super().get_params(ctx))


class _Group(TyperGroup):
    """Commands in pipeline order, bare flags, and usage errors as one line (exit code 2)."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _bare_flags(super().get_params(ctx))

    def list_commands(self, ctx: typer.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(PIPELINE)}
        return sorted(super().list_commands(ctx), key=lambda n: rank.get(n, len(rank)))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except typer.exceptions.TyperException as exc:  # usage errors: click's, vendored by typer
            message = _one_line(exc.format_message())
            if message:  # empty: the help was shown (no arguments given)
                ctx = getattr(exc, "ctx", None)
                hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="oodkit",
    help="Diffusion-based OOD detection: SONA, semantic-discrepant outliers, DiffGuard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=_Group,
)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output artifact directory.")]
IdOpt = Annotated[
    str, typer.Option("--id", help="Benchmark (its ID train set) or dataset reference.")
]
DataRootOpt = Annotated[
    Path | None, typer.Option("--data-root", help=data_root_option().metadata["help"])
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
    """Bad input (OodkitError) and an unwritable or full disk become one line on stderr and
    exit code 2. Warnings raised meanwhile are held back: dropped with a refusal, shown after
    a run that succeeds. ``--debug`` shows tracebacks and warnings as they come."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _state["debug"]:
            return fn(*args, **kwargs)
        refused = False
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("default")
                try:
                    return fn(*args, **kwargs)
                except Interrupted as exc:  # a signal: finished work kept, no traceback
                    refused = True
                    typer.echo(f"interrupted: {_one_line(str(exc))}", err=True)
                    raise typer.Exit(exc.exit_code) from None
                except OodkitError as exc:
                    refused = True
                    refuse(str(exc))
                except OSError as exc:
                    if exc.errno not in ENVIRONMENT_ERRNOS:
                        raise
                    refused = True
                    refuse(f"cannot access {exc.filename or 'a file'}: {exc.strerror}")
        finally:
            if not refused:  # success or a crash: the warnings may explain it
                for w in caught:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    return wrapper  # type: ignore[return-value]


def _console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet)


# --- commands generated from options dataclasses ---------------------------------------------


def _fixed(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A command parameter that is not an options field (inputs and the output folder)."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _is_list(hint: Any) -> bool:
    return typing.get_origin(hint) is list


def cli_default(f: dataclasses.Field) -> Any:
    """The command-line default of an options field (lists, JSON objects and required fields,
    which ``--config`` may give: none given)."""
    if f.metadata.get("required"):
        return None
    if f.default_factory is not dataclasses.MISSING:  # list / dict fields
        return None
    return f.default


def _option_param(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    meta = f.metadata
    if meta.get("parse") == "json":
        hint = str | None
    elif _is_list(hint):
        hint = list[str] | None
    elif meta.get("required"):
        hint = hint | None
    text = (meta.get("help") or "") + (
        " Required, here or in --config." if meta.get("required") else ""
    )
    option = typer.Option(*flags_of(f), help=text or None)
    return _fixed(f.name, Annotated[hint, option], cli_default(f))


def _options(options_cls: type, values: dict[str, Any]) -> Any:
    """The options object from parsed command-line values (JSON and list options converted)."""
    kwargs = {}
    for f in cli_fields(options_cls):
        value = values[f.name]
        if f.metadata.get("parse") == "json":
            value = json_object(value, flags_of(f)[0])
        elif value is None and f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        kwargs[f.name] = value
    return options_cls(**kwargs)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML / JSON file of this command's options (or a section named after it); "
        "options given on the command line win.",
    ),
]


def _with_config(
    ctx: typer.Context, options_cls: type, values: dict[str, Any], config: Path, section: str
) -> None:
    """Fill ``values`` from the config file wherever the command line gave nothing."""
    raw = read_config(config, section)
    for field, value in config_options(options_cls, raw, f"--config {config}").items():
        source = ctx.get_parameter_source(field)
        if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
            values[field] = value


def _check_required(options_cls: type, values: dict[str, Any]) -> None:
    """Refuse a required option that neither the command line nor ``--config`` gave."""
    for f in cli_fields(options_cls):
        if f.metadata.get("required") and values[f.name] is None:
            raise OodkitError(
                f"missing option {flags_of(f)[0]} (on the command line or in --config)"
            )


def stage_command(
    typer_app: typer.Typer,
    name: str,
    options_cls: type,
    fixed: list[inspect.Parameter],
    section: str | None = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``run(options, **fixed)`` as command ``name`` with one CLI option per field
    and ``--config FILE`` (its ``section``, default ``name``, holds this command's options)."""
    hints = typing.get_type_hints(options_cls)
    if (section or name) not in CONFIG_COMMANDS:
        raise ValueError(f"add {section or name!r} to oodkit.options.CONFIG_COMMANDS")

    def deco(run: Callable[..., None]) -> Callable[..., None]:
        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        params = [context, *fixed, _fixed("config", ConfigOpt, None)]
        params += [_option_param(f, hints[f.name]) for f in cli_fields(options_cls)]

        def command(**values: Any) -> None:
            ctx, config = values.pop("ctx"), values.pop("config")
            given = {p.name: values.pop(p.name) for p in fixed}
            if config is not None:
                _with_config(ctx, options_cls, values, config, section or name)
            _check_required(options_cls, values)
            run(_options(options_cls, values), **given)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__doc__ = run.__doc__
        command.__name__ = run.__name__
        typer_app.command(name, cls=_Command)(guarded(command))
        return run

    return deco


def _report(console, result: Any, message: Callable[[Any], str]) -> None:
    """A stage's end on this process: its result's line, the paused line, or nothing (a
    non-main process: the main one reports)."""
    if isinstance(result, Pending):
        if result.reason == "paused":
            console.print(f"paused; continue with --resume (state in {result.partial})")
        return
    console.print(message(result))


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
    """Compute AUROC, AUPR-IN/OUT and FPR@95 per OOD set; write metrics.json, metrics.md, plots."""
    from oodkit import report
    from oodkit.stages.evaluate.run import evaluate

    art, blocks = evaluate(list(scores), out, o)
    console = _console(o.quiet)
    for table in report.rich_tables(blocks):
        console.print(table)
    for low in [] if o.quiet else report.below_chance(blocks):
        typer.echo(
            f"warning: {low['method']} ranks OOD set {low['set']} below chance "
            f"(AUROC {100 * low['auroc']:.2f})",
            err=True,
        )
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
    console = _console()
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
train_app = typer.Typer(help="Train models: detector, diffusion.", no_args_is_help=True, cls=_Group)
app.add_typer(train_app, name="train")


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

    art = train_detector(id_ref, out, o)

    def done(art) -> str:
        s = art.manifest.summary
        acc = s.get("id_val_accuracy")
        return f"detector written to {art.path}: final loss {s['final_loss']:.4f}" + (
            f", ID val accuracy {acc:.4f}" if acc is not None else ""
        )

    _report(_console(o.quiet), art, done)


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

    art = train_diffusion(id_ref, out, o)
    _report(
        _console(o.quiet),
        art,
        lambda a: (
            f"diffusion model written to {a.path} "
            f"(final loss {a.manifest.summary['final_loss']:.4f})"
        ),
    )


import_app = typer.Typer(
    help="Import models trained elsewhere: detector, diffusion.", no_args_is_help=True, cls=_Group
)
app.add_typer(import_app, name="import")


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

    art = import_detector(source, out, o)
    s = art.manifest.summary
    _console(o.quiet).print(
        f"detector written to {art.path}: {art.manifest.params['source']}, "
        f"{s['num_classes']} classes, {s['feature_dim']}-d features"
    )


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

    art = import_diffusion(source, out, o)
    p = art.manifest.params
    _console(o.quiet).print(
        f"diffusion model written to {art.path}: {p['source'].upper()} {p['preset']}, "
        f"{art.manifest.summary['parameters']:,} parameters"
    )


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

    _report(
        _console(o.quiet),
        generate(id_ref, model, out, o),
        lambda a: (
            f"{a.manifest.summary['count']} samples written to {a.path} "
            f"(mean SSIM {a.manifest.summary.get('mean_ssim')})"
        ),
    )


@stage_command(
    app, "pseudo-label", PseudoLabelOptions, [_fixed("id_ref", IdOpt), _fixed("out", OutOpt)]
)
def pseudo_label_cmd(o: PseudoLabelOptions, id_ref: str, out: Path) -> None:
    """Cluster unlabelled ID images into pseudo-classes (SCAN or k-means)."""
    from oodkit.stages.pseudo_label.run import pseudo_label

    art = pseudo_label(id_ref, out, o)
    if isinstance(art, Pending):  # a non-main process under accelerate launch
        return
    s = art.manifest.summary
    line = f"pseudo-labels written to {art.path}"
    if "accuracy" in s:
        km = s["kmeans"]
        line += (
            f"; vs ground truth: accuracy {s['accuracy']:.4f}, NMI {s['nmi']:.4f}, "
            f"ARI {s['ari']:.4f} (k-means on the same features: {km['accuracy']:.4f})"
        )
    _console(o.quiet).print(line)


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

    console = _console(o.quiet)
    result = score(detector, benchmark, method, out, o)
    if isinstance(result, Pending):  # a non-main process of a DiffGuard run
        return
    for art in result:
        acc = art.manifest.summary.get("id_accuracy")
        console.print(
            f"{art.manifest.params['method']}: {art.path}"
            + (f" (ID accuracy {acc:.4f})" if acc is not None else "")
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
    from oodkit import report
    from oodkit.demo import run_demo, run_unsupervised_demo

    if unsupervised and out == DEMO_OUT:
        out = Path("runs/demo-unsupervised")
    run = run_unsupervised_demo if unsupervised else run_demo
    art, blocks = run(out, o)
    console = _console(o.quiet)
    for table in report.rich_tables(blocks):
        console.print(table)
    console.print(report.summary_table(blocks))
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
    best = doc["cells"][doc["chosen"]]
    _console(o.quiet).print(
        f"{len(doc['cells'])} cells on validation sets; chosen: cell {best['cell']} "
        f"(val AUROC {o.select} {100 * best['score']:.2f}); recipe in {Path(out) / 'recipe.yaml'}, "
        f"table in {Path(out) / 'results.md'}"
    )


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
    try:
        app(args=argv, prog_name="oodkit")
    finally:
        _end_process_group()


def _end_process_group() -> None:
    """Shut a distributed run's process group down before exiting, all ranks together: a rank
    that tore its group down while another still used the connection was seen to abort at
    exit ("terminate called without an active exception", SIGABRT) after finishing its work.
    The barrier waits for the main process's last step; if that rank is gone, the barrier
    fails and this rank leaves anyway (torchrun stops the others when one fails)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
