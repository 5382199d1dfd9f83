"""Options of ``oodkit eval`` (metric conventions: docs/methods.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

from oodkit import options as O


@dataclass(kw_only=True)
class EvalOptions:
    """Everything ``evaluate`` takes besides the scores artifacts and the output folder."""

    plots: bool = O.option(True, "Write ROC and histogram PNGs.", flags=("--plots/--no-plots",))
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()
