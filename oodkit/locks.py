"""One writer per output folder: an exclusive lock file next to it, held for a whole stage.

A stage function runs inside :func:`output_scope`; the first write to an output folder
(:func:`claim`, called by the artifact writers before they create anything) takes
``<out>.lock`` without waiting. A second writer gets one line naming the holder (process,
host, start time, command) instead of racing on ``<out>.partial``. The lock is a kernel
``flock`` (the ``filelock`` library), so a killed holder leaves no lock behind: the next run
takes it over and resumes. The lock file is removed when the stage ends.

Only the main process of a distributed run (rank 0 of its initialised process group) claims:
the other ranks of the same run write their shards under the main process's lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from oodkit.errors import OodkitError

LOCK_SUFFIX = ".lock"
_held: ContextVar[dict[Path, Any] | None] = ContextVar("oodkit_output_locks", default=None)
_made: ContextVar[list[Path] | None] = ContextVar("oodkit_made_folders", default=None)
_fresh: ContextVar[list[tuple[Path, Callable[[Path], bool]]] | None] = ContextVar(
    "oodkit_fresh_partials", default=None
)
F = TypeVar("F", bound=Callable[..., Any])


def lock_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + LOCK_SUFFIX)


def _is_main_rank() -> bool:
    """Rank 0 of the run's real process group, or a process in none. ``RANK`` alone proves
    nothing (a shell inside a torchrun or Slurm allocation has it set): multi-process stages
    join their group before they claim an output."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return True
    return dist.get_rank() == 0


def _holder(command: str | None) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command or "(python API)",
    }


def _describe_holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']}, since {h['started']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


@contextlib.contextmanager
def output_scope() -> Iterator[None]:
    """Hold every output lock claimed inside the block until it ends (one stage run).

    Nested scopes (a demo running stages) share the outermost one's locks. When the block
    fails, state folders it created that hold no work yet (:func:`fresh_state`) and parent
    folders that a claim created and that are still empty are removed again, so a run that
    fails before its first checkpoint leaves nothing behind.
    """
    if _held.get() is not None:
        yield
        return
    held: dict[Path, Any] = {}
    made: list[Path] = []
    fresh: list[tuple[Path, Callable[[Path], bool]]] = []
    tokens = _held.set(held), _made.set(made), _fresh.set(fresh)
    try:
        yield
    except BaseException:
        for folder, holds_work in reversed(fresh):
            with contextlib.suppress(OSError):
                if folder.is_dir() and not holds_work(folder):
                    shutil.rmtree(folder)
        _release(held)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise
    else:
        _release(held)
    finally:
        _held.reset(tokens[0])
        _made.reset(tokens[1])
        _fresh.reset(tokens[2])


def fresh_state(folder: Path, holds_work: Callable[[Path], bool]) -> None:
    """``folder`` (a ``<out>.partial``) was created by this run: should the run fail while
    ``holds_work(folder)`` is false, the scope removes it (main process only)."""
    fresh = _fresh.get()
    if fresh is not None and _is_main_rank():
        fresh.append((Path(folder), holds_work))


def _release(held: dict[Path, Any]) -> None:
    for path, lock in reversed(list(held.items())):
        # unlink while holding, so that a process that opened the old file sees it gone
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()
    held.clear()


def writes_output(fn: F) -> F:
    """Run a stage function inside its own :func:`output_scope`."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with output_scope():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def claim(out: str | Path, command: str | None = None) -> bool:
    """Take ``out``'s lock for the rest of the current stage (creating its parent folder);
    returns whether this process holds it (no other process writes ``out`` now).

    Does nothing outside a stage (library calls of the low-level writers) and on non-main
    ranks. Raises :class:`OodkitError` naming the holder when another process writes ``out``.
    """
    held = _held.get()
    if held is None or not _is_main_rank():
        return False
    path = lock_path(Path(out).absolute())
    if path in held:
        return True
    from filelock import FileLock, Timeout

    info = json.dumps(_holder(command)).encode()

    def record(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.write(fd, info)

    missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    made = _made.get()
    if made is not None:  # before mkdir: a partial failure is cleaned up too
        made.extend(reversed(missing))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OodkitError(f"cannot write {out}: {exc.strerror}") from None
    lock = FileLock(str(path), timeout=0, is_singleton=False, on_acquired=record)
    try:
        lock.acquire()
    except Timeout:  # a TimeoutError, hence an OSError: first
        raise OodkitError(
            f"{out} is being written by another run ({_describe_holder(path)}); "
            "wait for it to finish or stop it"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOSYS:  # a filesystem without flock (Lustre noflock, some FUSE)
            warnings.warn(
                f"{path.parent} does not support file locks: {out} is not protected from a "
                "second writer",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        raise OodkitError(f"cannot write {out}: {exc.strerror}") from None
    held[path] = lock
    return True
