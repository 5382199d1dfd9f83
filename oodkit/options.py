"""Options are written once: a dataclass field carries the name, default, help and CLI flags.

Each stage's options dataclass is the single source of its options: the library function
takes it, and the command line is generated from it (``oodkit.cli``). A field's ``role`` says
what it is:

- ``recipe``: shapes the result; training and generation stages record all of them in the
  manifest's ``params`` (``recipe()``), ``score`` records the ones each method reads;
- ``input``: names an input artifact or file (recorded by the stage with its fingerprint);
- ``run``: how to run (device, workers, quiet, overwrite, resume); never recorded.

This module imports nothing heavy, so the command line can read the options at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from oodkit.errors import OodkitError, first_line

ROLES = ("recipe", "input", "run")
T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flags: tuple[str, ...] = (),
    role: str = "recipe",
    factory: Callable[[], Any] | None = None,
    parse: str | None = None,
    cli: bool = True,
    required: bool = False,
    minimum: int | None = None,
) -> Any:
    """A dataclass field with its command-line description.

    ``flags`` default to ``--field-name``; ``parse="json"`` takes a JSON object string on
    the command line; ``required`` makes the option mandatory on the command line (or in
    ``--config``) even where the library has a default; ``cli=False`` keeps a field out of
    the command line; ``minimum`` refuses smaller values (counts: 1; ``None`` still means
    "not given").
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    meta = {
        "help": help,
        "flags": flags,
        "role": role,
        "parse": parse,
        "cli": cli,
        "required": required,
        "minimum": minimum,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields_of(cls_or_obj: Any, role: str | None = None) -> list[dataclasses.Field]:
    """The option fields of a dataclass, optionally of one role."""
    return [
        f
        for f in dataclasses.fields(cls_or_obj)
        if role is None or f.metadata.get("role", "recipe") == role
    ]


def cli_fields(cls_or_obj: Any) -> list[dataclasses.Field]:
    """The option fields that appear on the command line."""
    return [f for f in dataclasses.fields(cls_or_obj) if f.metadata.get("cli", True)]


def flags_of(f: dataclasses.Field) -> tuple[str, ...]:
    """The command-line flags of an option field (``--field-name`` unless given)."""
    return f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),)


def recipe(opts: Any) -> dict[str, Any]:
    """The ``recipe`` fields as a plain dict (what the manifest records)."""
    full = dataclasses.asdict(opts)
    return {f.name: full[f.name] for f in fields_of(opts, "recipe")}


def with_overrides(cls: type[T], options: T | None, overrides: dict[str, Any]) -> T:
    """``options`` (or the defaults) with keyword overrides; unknown names are refused, and so
    are values below a field's ``minimum`` (never replaced by a default)."""
    base = options if options is not None else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {unknown[0]!r}")
    out = dataclasses.replace(base, **overrides) if overrides else base
    check_minimums(out)
    return out


def check_minimums(opts: Any) -> None:
    """Refuse a value below its field's ``minimum`` with the flag's name."""
    for f in dataclasses.fields(opts):
        low, value = f.metadata.get("minimum"), getattr(opts, f.name)
        if low is None or value is None or isinstance(value, bool) or value >= low:
            continue
        need = "be positive" if low == 1 else "not be negative" if low == 0 else f"be ≥ {low}"
        raise OodkitError(f"{flags_of(f)[0]} must {need}, got {value}")


def json_object(text: str | dict | None, name: str) -> dict[str, Any]:
    """A JSON object option (``--arch-kwargs '{"drop_rate": 0.1}'``); empty → ``{}``."""
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OodkitError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise OodkitError(f"{name} must be a JSON object")
    return value


# --- options shared by several stages: each defined here once --------------------------------

RESIZE_POLICIES = ("crop", "pad", "squash")  # how an image is fitted to a model's square

IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
DEFAULT_QUALITY = {"png": 6, "jpeg": 95, "webp": 95}  # PNG: zlib level (Pillow's default)


def check_image_format(fmt: str, quality: int | None) -> int:
    """``--image-format`` and ``--image-quality`` checked; returns the quality used (PNG:
    zlib level 0–9, lossless whatever it is; JPEG / WebP: 1–100)."""
    if fmt not in IMAGE_FORMATS:
        raise OodkitError(f"--image-format must be one of {', '.join(IMAGE_FORMATS)}, got {fmt!r}")
    q = DEFAULT_QUALITY[fmt] if quality is None else quality
    low, high = (0, 9) if fmt == "png" else (1, 100)
    if not low <= q <= high:
        raise OodkitError(f"--image-quality for {fmt} must lie in {low}..{high}, got {q}")
    return q


def device_option() -> Any:
    return option("auto", "auto, cpu, cuda or cuda:N.", role="run")


def data_root_option() -> Any:
    return option(
        None,
        "OpenOOD v1.5 data folder for cifar10 / imagenet200 (or $OODKIT_OPENOOD_ROOT).",
        role="run",
    )


def overwrite_option() -> Any:
    return option(False, "Replace an existing artifact made differently.", role="run")


def quiet_option() -> Any:
    return option(False, "Print only errors.", flags=("--quiet", "-q"), role="run")


def resume_option() -> Any:
    return option(False, "Continue an interrupted run.", role="run")


def num_workers_option() -> Any:
    return option(
        "auto",
        "Data-loading worker processes: a count, or auto (the rank's CPUs less one on CUDA, "
        "none on the CPU).",
        role="run",
    )


def seed_option() -> Any:
    return option(0, "Seed of every random choice.")


def arch_kwargs_option() -> Any:
    return option(
        help="JSON for timm.create_model, e.g. '{\"drop_rate\": 0.1}'.", factory=dict, parse="json"
    )


# --- config files: every stage's options from YAML / JSON (``--config FILE``) ----------------


def option_key(name: str) -> str:
    """A field name from a flag or field spelling (``--t-start``, ``t-start``, ``t_start``)."""
    return str(name).strip().lstrip("-").replace("-", "_").replace(" ", "_")


def read_config(path: str | Path, command: str, flag: str = "--config") -> dict[str, Any]:
    """The mapping a config file holds for ``command`` (``train detector``, ``generate``, …).

    A file is either one stage's options (``{batch_size: 64, ...}``) or sections named after
    commands (``{generate: {...}, train detector: {...}}``), of which ``command``'s is taken.
    YAML is read with ``safe_load`` (no Python tags).
    """
    path = Path(path)
    if not path.is_file():
        raise OodkitError(f"{flag} {path} does not exist")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text())
        else:
            data = json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001 - yaml and json raise different types
        raise OodkitError(f"{flag} {path}: cannot parse: {first_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OodkitError(f"{flag} {path}: a config file holds one mapping")
    sections = {option_key(k): v for k, v in data.items() if isinstance(v, dict)}
    if sections and len(sections) == len(data):
        section = sections.get(option_key(command), {})
        return dict(section)
    return dict(data)


def _plain(hint: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _coerce(f: dataclasses.Field, hint: Any, value: Any, where: str) -> Any:
    """``value`` as the field's type; ``where`` names the file (``--config FILE``)."""
    base, optional = _plain(hint)
    flag = flags_of(f)[0]

    def bad(what: str) -> OodkitError:
        return OodkitError(f"{where}: {flag} must be {what}, got {value!r}")

    if value is None:
        if optional or f.default is None:
            return None
        raise bad("given")
    if base is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if base is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad("a string")
        return str(value)
    if typing.get_origin(base) is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise bad("a list of strings")
        return list(items)
    if typing.get_origin(base) is dict or base is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return dict(value)
    return value


def config_options(options_cls: type, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validated ``{field: value}`` from a config mapping (keys: field names or flags);
    ``where`` names the file in messages (``--config FILE``)."""
    fields = {f.name: f for f in cli_fields(options_cls)}
    by_flag = {option_key(flag): f.name for f in fields.values() for flag in flags_of(f)}
    hints = typing.get_type_hints(options_cls)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = by_flag.get(option_key(str(key)), option_key(str(key)))
        if name not in fields:
            raise OodkitError(f"{where}: unknown option {key!r}")
        out[name] = _coerce(fields[name], hints[name], value, where)
    return out


def config_of(opts: Any, roles: tuple[str, ...] = ROLES) -> dict[str, Any]:
    """An options object as a config mapping (the command-line fields of ``roles``)."""
    full = dataclasses.asdict(opts)
    return {
        f.name: full[f.name] for f in cli_fields(opts) if f.metadata.get("role", "recipe") in roles
    }
