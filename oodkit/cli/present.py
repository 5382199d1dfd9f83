"""What the commands print: one line per finished artifact, read through the typed manifest
records (``oodkit.schemas``, imported when a line is made: it needs numpy, which the command
line does not load at start-up), the paused line, and the metrics tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from oodkit.outcome import Pending


def console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet)


def report(out, result: Any, line: Callable[[Any], str]) -> None:
    """A stage's end on this process: its result's line, the paused line, or nothing (a
    non-main process: the main one reports)."""
    if isinstance(result, Pending):
        if result.reason == "paused":
            out.print(f"paused; continue with --resume (state in {result.partial})")
        return
    out.print(line(result))


def trained_detector(art) -> str:
    from oodkit.schemas import TrainedDetectorSummary

    s = TrainedDetectorSummary.read(art.manifest.summary)
    acc = "" if s.id_val_accuracy is None else f", ID val accuracy {s.id_val_accuracy:.4f}"
    return f"detector written to {art.path}: final loss {s.final_loss:.4f}{acc}"


def imported_detector(art) -> str:
    from oodkit.schemas import DetectorParams, ImportedDetectorSummary

    s = ImportedDetectorSummary.read(art.manifest.summary)
    source = DetectorParams.read(art.manifest.params).source
    return (
        f"detector written to {art.path}: {source}, {s.num_classes} classes, "
        f"{s.feature_dim}-d features"
    )


def trained_diffusion(art) -> str:
    from oodkit.schemas import TrainedDiffusionSummary

    s = TrainedDiffusionSummary.read(art.manifest.summary)
    return f"diffusion model written to {art.path} (final loss {s.final_loss:.4f})"


def imported_diffusion(art) -> str:
    from oodkit.schemas import ImportedDiffusionParams, ImportedDiffusionSummary

    p = ImportedDiffusionParams.read(art.manifest.params)
    s = ImportedDiffusionSummary.read(art.manifest.summary)
    return (
        f"diffusion model written to {art.path}: {str(p.source).upper()} {p.preset}, "
        f"{s.parameters:,} parameters"
    )


def outliers(art) -> str:
    from oodkit.schemas import OutliersSummary

    s = OutliersSummary.read(art.manifest.summary)
    return f"{s.count} samples written to {art.path} (mean SSIM {s.mean_ssim})"


def pseudo_labels(art) -> str:
    from oodkit.schemas import PseudoLabelSummary

    s = PseudoLabelSummary.read(art.manifest.summary)
    line = f"pseudo-labels written to {art.path}"
    if s.accuracy is not None:
        line += (
            f"; vs ground truth: accuracy {s.accuracy:.4f}, NMI {s.nmi:.4f}, ARI {s.ari:.4f} "
            f"(k-means on the same features: {s.kmeans['accuracy']:.4f})"
        )
    return line


def scores(art) -> str:
    from oodkit.schemas import ScoresParams, ScoresSummary

    acc = ScoresSummary.read(art.manifest.summary).id_accuracy
    method = ScoresParams.read(art.manifest.params).method
    return f"{method}: {art.path}" + (f" (ID accuracy {acc:.4f})" if acc is not None else "")


def metrics(out, blocks: list[dict[str, Any]], warn: bool, summary: bool = False) -> None:
    """The per-metric tables (and the summary table); with ``warn``, OOD sets ranked below
    chance as warnings on stderr."""
    from oodkit import report as tables

    for table in tables.rich_tables(blocks):
        out.print(table)
    if summary:
        out.print(tables.summary_table(blocks))
    for low in tables.below_chance(blocks) if warn else []:
        typer.echo(
            f"warning: {low['method']} ranks OOD set {low['set']} below chance "
            f"(AUROC {100 * low['auroc']:.2f})",
            err=True,
        )
