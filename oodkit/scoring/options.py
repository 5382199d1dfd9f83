"""Options of ``oodkit score``: the ones every method shares, written here, and the options
of the methods, generated from their declarations in the registry (``oodkit.methods``).

A method option defaults to ``None`` ("not given"): each method resolves it to its own
default (``SCORE.resolve``), and an option given for none of the methods run is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from oodkit import options as O
from oodkit.devices import resolve_workers
from oodkit.errors import OodkitError
from oodkit.methods import SCORE, Method


@dataclass(kw_only=True)
class _Shared:
    """The options of every score method."""

    limit: int | None = O.option(
        None, "Score only the first N samples of each test set.", minimum=1
    )
    label: str | None = O.option(
        None, "Name of these runs in eval tables (default: the detector's loss) before +METHOD."
    )
    batch_size: int = O.option(256, "Images per forward.", role="run", minimum=1)
    device: str = O.device_option()
    num_workers: str = O.num_workers_option()
    data_root: str | None = O.data_root_option()
    resize: bool = O.option(False, "Rescale benchmark images to the detector.")
    cache: bool = O.option(
        True,
        "Reuse cached features and DiffGuard inversions.",
        flags=("--cache/--no-cache",),
        role="run",
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def check(self, methods: list[Method]) -> None:
        """Refuse what no method could use: bad workers, an empty label, an option that none
        of ``methods`` reads."""
        resolve_workers(self.num_workers, cuda=False)  # a count or auto, before any work
        if self.label is not None and not self.label.strip():
            raise OodkitError("--label must not be empty")
        SCORE.check_read(methods, {n: getattr(self, n) for n in SCORE.params})

    def for_method(self, method: Method) -> dict[str, Any]:
        """The options ``method`` reads, its defaults filled in."""
        return SCORE.resolve(method, dataclasses.asdict(self))


ScoreOptions = dataclasses.make_dataclass(
    "ScoreOptions",
    SCORE.option_fields(),
    bases=(_Shared,),
    kw_only=True,
)
ScoreOptions.__module__ = __name__
ScoreOptions.__doc__ = (
    "Everything ``score`` takes besides the detector, benchmark, methods and output folder."
)
