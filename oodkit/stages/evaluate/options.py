"""Options of ``oodkit eval`` (metric conventions: docs/methods.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

from oodkit import options as O

FORMATS = ("markdown", "openood-csv")  # tables written next to metrics.json


@dataclass(kw_only=True)
class EvalOptions:
    """Everything ``evaluate`` takes besides the scores artifacts and the output folder."""

    plots: bool = O.option(True, "Write ROC and histogram PNGs.", flags=("--plots/--no-plots",))
    format: str = O.option(
        "markdown",
        "Tables next to metrics.json, comma list: markdown (metrics.md), openood-csv "
        "(openood.csv: OpenOOD v1.5's columns, percent, rows per OOD set and nearood / farood).",
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def formats(self) -> list[str]:
        """The ``--format`` list, each one checked."""
        return O.comma_choices(self.format, "--format", FORMATS, "format")
