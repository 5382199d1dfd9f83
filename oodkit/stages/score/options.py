"""Options of ``oodkit score`` (score conventions: docs/methods.md §1, §5)."""

from __future__ import annotations

from dataclasses import dataclass

from oodkit import options as O
from oodkit.errors import OodkitError
from oodkit.methods import SCORE


@dataclass(kw_only=True)
class ScoreOptions:
    """Everything ``score`` takes besides the detector, benchmark, methods and output folder."""

    outliers: str | None = O.option(None, "Outliers for sd-vote.", role="input")
    k: int | None = O.option(None, f"Neighbours ({SCORE.defaults_help('k')}).")
    alpha: float = O.option(0.3, "sd-vote outlier weight.")
    temperature: float = O.option(1.0, "For msp and energy.")
    batch_size: int = O.option(256, "Images per forward.", role="run")
    device: str = O.device_option()
    num_workers: int = O.num_workers_option()
    data_root: str | None = O.data_root_option()
    resize: bool = O.option(False, "Rescale benchmark images to the detector.")
    cache: bool = O.option(
        True, "Reuse cached features.", flags=("--cache/--no-cache",), role="run"
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def check(self) -> None:
        if self.temperature <= 0:
            raise OodkitError("--temperature must be positive")
        if self.k is not None and self.k < 1:
            raise OodkitError(f"--k must be at least 1, got {self.k}")
