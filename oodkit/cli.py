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


@app.command("demo")
@guarded
def demo_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo's artifacts.")
    ] = Path("runs/demo"),
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run every stage that exists end to end on the bundled digits benchmark."""
    from oodkit import report
    from oodkit.demo import run_demo

    art, blocks = run_demo(out, seed=seed, overwrite=overwrite)
    console = _console()
    for table in report.rich_tables(blocks):
        console.print(table)
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
