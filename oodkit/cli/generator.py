"""Stage commands generated from options dataclasses (``oodkit.options``): one command
option per field (flags, defaults and help written once, on the field), ``--config FILE``
(a YAML / JSON section per command), required options, JSON and list options."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from oodkit.cli.base import _Command, guarded
from oodkit.errors import OodkitError
from oodkit.options import (
    AUTO,
    CONFIG_COMMANDS,
    auto_number,
    cli_fields,
    config_options,
    flags_of,
    json_object,
    read_config,
)


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
    declared = hint
    if meta.get("parse") in ("json", AUTO):
        hint = str | None
    elif _is_list(hint):
        hint = list[str] | None
    elif meta.get("required"):
        hint = hint | None
    text = (meta.get("help") or "") + (
        " Required, here or in --config." if meta.get("required") else ""
    )
    metavar = None
    if meta.get("parse") == AUTO:  # a number or the word auto: say which number
        kind = next(a for a in typing.get_args(declared) if a in (int, float))
        metavar = f"<{kind.__name__}|{AUTO}>"
    option = typer.Option(*flags_of(f), help=text or None, metavar=metavar)
    return _fixed(f.name, Annotated[hint, option], cli_default(f))


def _options(options_cls: type, values: dict[str, Any]) -> Any:
    """The options object from parsed command-line values (JSON, number-or-auto and list
    options converted)."""
    kwargs = {}
    hints = typing.get_type_hints(options_cls)
    for f in cli_fields(options_cls):
        value = values[f.name]
        if f.metadata.get("parse") == "json":
            value = json_object(value, flags_of(f)[0])
        elif f.metadata.get("parse") == AUTO:
            value = auto_number(value, hints[f.name], flags_of(f)[0])
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
