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
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from oodkit.errors import OodkitError, brief, first_line

ROLES = ("recipe", "input", "run")
AUTO = "auto"  # a number option with parse="auto" also takes this word (chosen by the stage)
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
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    finite: bool = True,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its command-line description and its domain.

    ``flags`` default to ``--field-name``; ``parse="json"`` takes a JSON object string on
    the command line, ``parse="auto"`` a number or the word ``auto`` (the stage chooses);
    ``required`` makes the option mandatory on the command line (or in ``--config``) even
    where the library has a default; ``cli=False`` keeps a field out of the command line.
    The domain of a number: ``minimum`` / ``maximum`` (inclusive), ``above`` / ``below``
    (exclusive); a float is finite unless ``finite=False`` (NaN passes every comparison, so
    it is refused first); a string is one of ``choices`` when given.
    ``None`` still means "not given".
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
        "domain": (minimum, above, maximum, below),
        "finite": finite,
        "choices": tuple(choices) if choices is not None else None,
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
    are values outside a field's domain (never replaced by a default)."""
    base = options if options is not None else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {unknown[0]!r}")
    out = dataclasses.replace(base, **overrides) if overrides else base
    check_domains(out)
    return out


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def domain_text(domain: tuple[Any, Any, Any, Any]) -> str:
    """``be positive``, ``not be negative``, ``lie in [0, 1)``, ``be ≤ 5``, … for messages."""
    low, above, high, below = domain
    lo = f"[{_num(low)}" if low is not None else f"({_num(above)}" if above is not None else ""
    hi = f"{_num(high)}]" if high is not None else f"{_num(below)})" if below is not None else ""
    if lo and hi:
        return f"lie in {lo}, {hi}"
    if above == 0 or low == 1:
        return "be positive"
    if low == 0:
        return "not be negative"
    if lo:
        return f"be {'≥' if low is not None else '>'} {lo[1:]}"
    return f"be {'≤' if high is not None else '<'} {hi[:-1]}" if hi else "be a number"


def in_domain(value: float, domain: tuple[Any, Any, Any, Any]) -> bool:
    low, above, high, below = domain
    return not (
        (low is not None and value < low)
        or (above is not None and value <= above)
        or (high is not None and value > high)
        or (below is not None and value >= below)
    )


def check_domains(opts: Any) -> None:
    """Refuse, with the flag's name, a string that is not one of its field's choices, a
    number outside its field's domain or a non-finite float (a field may allow those with
    ``finite=False``)."""
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        flag = flags_of(f)[0].split("/")[0]
        if f.metadata.get("parse") == AUTO and isinstance(value, str) and value != AUTO:
            raise OodkitError(f"{flag} must be a number or {AUTO}, got {brief(value)}")
        choices = f.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise OodkitError(f"{flag} must be one of {', '.join(choices)}, got {brief(value)}")
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and f.metadata.get("finite", True) and not math.isfinite(value):
            raise OodkitError(f"{flag} must be a finite number, got {value}")
        domain = f.metadata.get("domain", (None,) * 4)
        if not in_domain(value, domain):
            raise OodkitError(f"{flag} must {domain_text(domain)}, got {_num(value)}")


def comma_choices(text: str, flag: str, choices: Sequence[str], what: str) -> list[str]:
    """``"a, b,a"`` → ``["a", "b"]``: a comma list of ``choices`` (order kept, repeats
    dropped); none given or an unknown ``what`` is refused with one line."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise OodkitError(f"{flag}: none given ({', '.join(choices)})")
    for name in names:
        if name not in choices:
            raise OodkitError(f"unknown {what} {name!r} (one of {', '.join(choices)})")
    return names


def _no_constant(name: str) -> Any:
    """JSON's NaN / Infinity extensions are refused: every number oodkit takes is finite."""
    raise ValueError(f"{name} is not a finite number")


def json_object(text: str | dict | None, name: str) -> dict[str, Any]:
    """A JSON object option (``--arch-kwargs '{"drop_rate": 0.1}'``); empty → ``{}``."""
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise OodkitError(f"{name} must be a JSON object: {first_line(exc)}") from None
    if not isinstance(value, dict):
        raise OodkitError(f"{name} must be a JSON object")
    return value


# --- options shared by several stages: each defined here once --------------------------------

# the longest side an image may have: PIL's decompression-bomb limit (89,478,485 pixels, which
# oodkit enforces on every decoded image) as a square
MAX_IMAGE_SIDE = 9459
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


SEED_MAX = 2**63 - 1  # seeds enter NumPy's SeedSequence and SHA-256 keys as unsigned ints


def seed_option() -> Any:
    return option(0, "Seed of every random choice.", minimum=0, maximum=SEED_MAX)


def arch_kwargs_option() -> Any:
    return option(
        help="JSON for timm.create_model, e.g. '{\"drop_rate\": 0.1}'.", factory=dict, parse="json"
    )


# --- config files: every stage's options from YAML / JSON (``--config FILE``) ----------------


def option_key(name: str) -> str:
    """A field name from a flag or field spelling (``--t-start``, ``t-start``, ``t_start``)."""
    return str(name).strip().lstrip("-").replace("-", "_").replace(" ", "_")


MAX_CONFIG_BYTES = 1 << 20  # a config, grid, recipe or benchmark file
MAX_CONFIG_VALUES = 100_000  # values after YAML aliases are expanded
# the sections a config file may hold: the commands that take --config (checked by the CLI)
CONFIG_COMMANDS = (
    "pseudo-label",
    "train diffusion",
    "train detector",
    "import detector",
    "import diffusion",
    "generate",
    "score",
    "eval",
    "sweep",
    "demo",
)


def load_structured(path: str | Path, where: str) -> Any:
    """A YAML (``safe_load``: no Python tags) or JSON file, bounded: at most
    :data:`MAX_CONFIG_BYTES`, and at most :data:`MAX_CONFIG_VALUES` values once YAML aliases
    are expanded (a few hundred bytes of nested aliases would expand to gigabytes);
    self-referential aliases are refused. ``where`` starts every message."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise OodkitError(f"{where}: larger than {MAX_CONFIG_BYTES >> 20} MiB")
        text = path.read_text()
        if path.suffix.lower() not in (".yaml", ".yml"):
            return json.loads(text, parse_constant=_no_constant)
        import yaml

        _check_expansion(yaml.compose(text, Loader=yaml.SafeLoader), where)
        return yaml.safe_load(text)
    except OodkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - yaml, json, decoding and OS errors
        raise OodkitError(f"{where}: cannot parse: {first_line(exc)}") from None


def _check_expansion(root: Any, where: str) -> None:
    """Count a YAML node graph's values as the constructed data would hold them."""
    if root is None:
        return
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:  # iterative post-order: deep nesting cannot exhaust the Python stack
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            open_nodes.discard(key)
            if sizes[key] > MAX_CONFIG_VALUES:
                raise OodkitError(
                    f"{where}: expands to more than {MAX_CONFIG_VALUES} values (YAML aliases)"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise OodkitError(f"{where}: a YAML alias refers to itself")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _children(node: Any) -> list[Any]:
    value = getattr(node, "value", None)
    if not isinstance(value, list):
        return []
    return [x for pair in value for x in pair] if value and isinstance(value[0], tuple) else value


def read_config(path: str | Path, command: str, flag: str = "--config") -> dict[str, Any]:
    """The mapping a config file holds for ``command`` (``train detector``, ``generate``, …).

    A file is either one stage's options (``{batch_size: 64, ...}``) or sections named after
    commands (``{generate: {...}, train detector: {...}}``), of which ``command``'s is taken;
    a section that names no command (``evl:``) is refused like an unknown option.
    """
    path = Path(path)
    if not path.is_file():
        raise OodkitError(f"{flag} {path} does not exist")
    where = f"{flag} {path}"
    data = load_structured(path, where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OodkitError(f"{where}: a config file holds one mapping")
    known = {option_key(c) for c in CONFIG_COMMANDS}
    keys = {option_key(k) for k in data}
    if keys & known:
        unknown = sorted(str(k) for k in data if option_key(k) not in known)
        if unknown:
            raise OodkitError(
                f"{where}: unknown section {brief(unknown[0])} (sections are command names: "
                f"{', '.join(CONFIG_COMMANDS)})"
            )
        bad = [str(k) for k, v in data.items() if not isinstance(v, dict)]
        if bad:
            raise OodkitError(f"{where}: section {brief(bad[0])} must be a mapping of options")
        sections = {option_key(k): v for k, v in data.items()}
        return dict(sections.get(option_key(command), {}))
    return dict(data)


def _plain(hint: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def auto_number(value: Any, hint: Any, flag: str, where: str = "") -> Any:
    """``value`` of a ``parse="auto"`` option (``int | str | None`` or ``float | str | None``):
    ``auto``, None, or a number of the hint's numeric type (text is parsed)."""
    if value is None or value == AUTO:
        return value
    kind = next(a for a in typing.get_args(hint) if a in (int, float))
    text = value.strip() if isinstance(value, str) else value
    try:
        if isinstance(text, bool) or (kind is int and isinstance(text, float)):
            raise ValueError
        number = kind(text)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise OodkitError(
            f"{where + ': ' if where else ''}{flag} must be {what} or {AUTO}, got {brief(value)}"
        ) from None
    return number


def _coerce(f: dataclasses.Field, hint: Any, value: Any, where: str) -> Any:
    """``value`` as the field's type; ``where`` names the file (``--config FILE``)."""
    if f.metadata.get("parse") == AUTO:
        return auto_number(value, hint, flags_of(f)[0], where)
    base, optional = _plain(hint)
    flag = flags_of(f)[0]

    def bad(what: str) -> OodkitError:
        return OodkitError(f"{where}: {flag} must be {what}, got {brief(value)}")

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
            raise OodkitError(f"{where}: unknown option {brief(key)}")
        out[name] = _coerce(fields[name], hints[name], value, where)
    return out


def config_of(opts: Any, roles: tuple[str, ...] = ROLES) -> dict[str, Any]:
    """An options object as a config mapping (the command-line fields of ``roles``)."""
    full = dataclasses.asdict(opts)
    return {
        f.name: full[f.name] for f in cli_fields(opts) if f.metadata.get("role", "recipe") in roles
    }
