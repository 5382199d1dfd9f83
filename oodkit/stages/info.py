"""``oodkit info``: what an artifact or a benchmark holds, as rich renderables."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodkit.artifacts import load_artifact
from oodkit.errors import OodkitError
from oodkit.schemas import OutliersSummary

if TYPE_CHECKING:
    from rich.console import RenderableType


def artifact_info(path: str | Path) -> list[RenderableType]:
    """Manifest (JSON), schema and row count of an artifact."""
    from rich.syntax import Syntax
    from rich.table import Table

    art = load_artifact(path)
    parts: list[RenderableType] = [
        f"[bold]{art.path}[/bold]: {art.kind} artifact",
        Syntax(json.dumps(asdict(art.manifest), indent=2), "json", word_wrap=True),
    ]
    if art.has_data:
        ds = art.dataset()
        schema = Table(title=f"schema — {len(ds)} rows")
        schema.add_column("column")
        schema.add_column("type")
        for name, feat in ds.features.items():
            schema.add_row(name, repr(feat))
        parts.append(schema)
    summary = OutliersSummary.read(art.manifest.summary)
    per = summary.by_start_step
    if isinstance(per, dict) and per:
        parts.append(_diagnostics_table(per, summary.judge))
    if isinstance(summary.auto, dict):
        parts.append(_auto_table(summary.auto))
    others = sorted(
        p.relative_to(art.path).as_posix()
        for p in art.path.rglob("*")
        if p.is_file() and p.relative_to(art.path).parts[0] not in ("data", "oodkit.json")
    )
    if others:
        parts.append("files: " + ", ".join(others))
    return parts


def _diagnostics_table(per: dict, judge: str | None) -> RenderableType:
    """An outliers artifact's diagnostics per start-step bucket."""
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    title = "diagnostics per start step" + (f" (judge: {judge})" if judge else " (no --judge)")
    table = Table(title=title)
    for col in ("start steps", "n", "SSIM", "PSNR", "left source class", "reached target"):
        table.add_column(col, justify="left" if col == "start steps" else "right")
    for name, row in per.items():
        table.add_row(
            name,
            str(row.get("n", "")),
            f"{row['ssim']:.3f}" if row.get("ssim") is not None else "-",
            f"{row['psnr']:.1f}" if row.get("psnr") is not None else "-",
            pct(row.get("left_source")),
            pct(row.get("reached_target")),
        )
    return table


def _auto_table(auto: dict[str, Any]) -> RenderableType:
    """The ``--t-start auto`` / ``--scale auto`` search: each probed value, in order."""
    from rich.table import Table

    option = auto["option"]
    table = Table(
        title=f"{option} auto: chose {auto['chosen']:g} — the smallest that reaches "
        f"{100 * auto['target_shift']:.0f} % left (judge: {auto['judge']}, probe of "
        f"{auto['probe']['size']} ID images)"
    )
    for col in (option, "left source class", "mean SSIM"):
        table.add_column(col, justify="right")
    for point in sorted(auto["curve"], key=lambda p: p["value"]):
        left, ssim = point["left_source"], point["mean_ssim"]
        table.add_row(
            f"{point['value']:g}",
            "-" if left is None else f"{100 * left:.1f} %",
            "-" if ssim is None else f"{ssim:.3f}",
        )
    return table


def benchmark_info(ref: str, data_root: str | Path | None = None) -> RenderableType:
    """A benchmark's sets with group, expected size and the size actually found on disk."""
    from rich.table import Table

    from oodkit.data.sources import get_benchmark

    bench = get_benchmark(ref, data_root=data_root)
    table = Table(
        title=f"{bench.name}: {len(bench.class_names or [])} ID classes, "
        f"image size {bench.image_size}, {bench.channels} channel(s)"
    )
    for col in ("set", "group", "role", "expected", "found"):
        table.add_column(col, justify="right" if col in ("expected", "found") else "left")
    roles = {"id_train": "train", "id_val": "val", "id_test": "test"}
    roles.update({s.name: "test" for s in bench.ood})
    roles.update({s.name: "val" for s in bench.ood_val})
    roles.update({s.name: "outlier pool" for s in bench.extra})
    notes, missing = [], []
    for key, spec in bench.all_sets().items():
        label = key if spec.name == key else f"{key} ({spec.name})"
        expected = "-" if spec.size is None else str(spec.size)
        try:
            n = len(bench.load(key))
        except OodkitError as exc:
            table.add_row(label, spec.group, roles[key], expected, "-")
            missing.append(str(exc))
            continue
        short = spec.size is not None and n < spec.size
        found = f"[bold red]{n}[/bold red]" if short else str(n)
        table.add_row(label, spec.group, roles[key], expected, found)
        if short:
            notes.append(
                f"warning: {label} has {n} of the {spec.size} samples it should have "
                f"({n / spec.size:.0%}): an incomplete download or the wrong --data-root?"
            )
    if missing:
        more = f" and {len(missing) - 1} more set(s)" if len(missing) > 1 else ""
        notes.append(f"not loaded: {missing[0]}{more}")
    if notes:
        table.caption = "\n".join(notes)
    return table


def _option_text(name: str, defaults: dict[str, Any]) -> str:
    """``--k 50``, ``--cam`` / ``--no-clip-x0`` (a switch's default), ``--model`` (none)."""
    flag = name.replace("_", "-")
    if name not in defaults:
        return f"--{flag}"
    value = defaults[name]
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def methods_info() -> RenderableType:
    """Every registered method per stage, with what it needs and the options it reads (with
    its defaults; an option without one: the method decides, see ``--help``)."""
    from rich.table import Table

    from oodkit.methods import REGISTRIES

    table = Table(title="registered methods")
    for col in ("stage", "method", "what it is", "needs", "options"):
        table.add_column(col)
    for registry in REGISTRIES:
        for m in registry:
            options = ", ".join(_option_text(o, m.defaults) for o in m.options)
            table.add_row(registry.stage, m.name, m.summary, ", ".join(m.needs), options)
    return table
