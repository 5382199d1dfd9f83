"""The ``oodkit`` application: its command groups, the global ``--debug`` / ``--version``,
bad input as one line (``refuse``, ``guarded``) and the console-script entry point.

Bad input (:class:`~oodkit.errors.OodkitError`) becomes one line on stderr and exit code 2;
``--debug`` shows the traceback instead. Nothing heavy is imported here, so ``oodkit
--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from oodkit import __version__
from oodkit.errors import Interrupted, OodkitError
from oodkit.options import data_root_option

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


train_app = typer.Typer(help="Train models: detector, diffusion.", no_args_is_help=True, cls=_Group)
app.add_typer(train_app, name="train")
import_app = typer.Typer(
    help="Import models trained elsewhere: detector, diffusion.", no_args_is_help=True, cls=_Group
)
app.add_typer(import_app, name="import")


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
