"""Content hashes of files and folders, cached by (path, size, mtime) under ``$OODKIT_CACHE``.

A multi-gigabyte model folder is hashed once; later runs re-hash only files whose size or
modification time changed. The cache is a JSON file written atomically, so concurrent
processes at worst hash a file twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from oodkit.artifacts import atomic_file
from oodkit.errors import OodkitError


def cache_dir() -> Path:
    """oodkit's cache folder: ``$OODKIT_CACHE`` or ``~/.cache/oodkit``."""
    return Path(os.environ.get("OODKIT_CACHE", Path.home() / ".cache" / "oodkit"))


def writable_cache(sub: str) -> Path:
    """``cache_dir()/sub``, created; one line when it cannot be (before a stage's work)."""
    folder = cache_dir() / sub
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OodkitError(
            f"cannot write the cache folder {folder} ({exc.strerror}): set OODKIT_CACHE to a "
            "writable folder or pass --no-cache"
        ) from None
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class FileHashes:
    """The (path, size, mtime) → SHA-256 cache, saved when it changed (on leaving a
    ``with`` block). Only regular files are read: a FIFO or device would block or never end,
    so it is refused with one line."""

    def __init__(self) -> None:
        self.file = cache_dir() / "file-hashes.json"
        try:
            self.cache = json.loads(self.file.read_text())
            if not isinstance(self.cache, dict):
                self.cache = {}
        except (OSError, ValueError):  # absent or damaged: hashed again
            self.cache = {}
        self.changed = False

    def __enter__(self) -> FileHashes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.save()

    def digest(self, f: Path) -> str:
        f = Path(os.path.abspath(f))
        st = f.stat()
        if not stat.S_ISREG(st.st_mode):
            raise OodkitError(f"{f} is not a regular file")
        key, stamp = str(f), [st.st_size, st.st_mtime_ns]
        entry = self.cache.get(key)
        if not isinstance(entry, list) or len(entry) != 3 or entry[:2] != stamp:
            entry = [*stamp, _sha256(f)]
            self.cache[key], self.changed = entry, True
        return entry[2]

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_file(self.file, lambda tmp: tmp.write_text(json.dumps(self.cache)))
        except OSError:
            pass  # an unwritable cache only costs re-hashing next time


def file_digest(path: str | Path) -> str:
    """SHA-256 of one file's contents."""
    with FileHashes() as hashes:
        return hashes.digest(Path(path).resolve())


def file_input(path: str | Path, kind: str, **extra: Any) -> dict[str, Any]:
    """The manifest ``inputs`` entry of a file: its path and content digest."""
    return {"kind": kind, "path": str(path), "fingerprint": file_digest(path), **extra}


def tree_digest(folder: str | Path) -> str:
    """SHA-256 over the relative paths and contents of every regular file under ``folder``
    (hidden files and folders excluded)."""
    folder = Path(folder).resolve()
    h = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    with FileHashes() as hashes:
        for f in files:
            rel = str(f.relative_to(folder)).encode()
            h.update(rel + b"\0" + hashes.digest(f).encode() + b"\0")
    return h.hexdigest()
