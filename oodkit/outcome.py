"""What a stage call returns when it writes no artifact: it paused (resumable), or it ran on
a process that is not the main one (under ``accelerate launch`` / ``torchrun`` the main
process writes). A finished stage returns its artifact(s); the two other ends are these
markers, never ``None``, so a caller can tell them apart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pending:
    """A stage that ended without an artifact on this process."""

    reason: str  # "paused" or "not-main"
    partial: Path | None = None  # the resumable state of a paused run

    def __bool__(self) -> bool:
        return False


NOT_MAIN = Pending("not-main")


def paused(partial: Path) -> Pending:
    """A run paused by ``--stop-after-*``, its state in ``partial``."""
    return Pending("paused", partial)
