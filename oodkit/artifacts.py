"""Versioned artifacts on disk: manifest, atomic writes, fingerprints and resumable shards.

An artifact is a directory with ``oodkit.json`` (the manifest), an optional ``data/`` folder
holding a Hugging Face ``datasets`` ``save_to_disk`` payload, and any model files. Every
write goes to a temporary sibling directory that is renamed into place only when complete,
so a crash never leaves a directory that loads as a finished artifact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from oodkit import __version__
from oodkit.errors import Interrupted, OodkitError, first_line
from oodkit.locks import claim, fresh_state

if TYPE_CHECKING:
    import datasets
    import numpy as np

FORMAT_VERSION = 2  # the newest this oodkit reads; 2: ``data/`` holds shards (``shards.json``)
MANIFEST_NAME = "oodkit.json"
DATA_DIR = "data"
SHARDS_FILE = "shards.json"  # the shards of a sharded table, in order
ORDER_FILE = "order.npy"  # row permutation of a sharded table into canonical key order
KINDS = (
    "pseudo-labels",
    "diffusion-model",
    "outliers",
    "detector",
    "scores",
    "syntheses",
    "metrics",
)

_command: str | None = None


def set_command(command: str | None) -> None:
    """Record the command line that the following artifacts are written by (set by the CLI)."""
    global _command
    _command = command


@dataclass
class Manifest:
    """The ``oodkit.json`` of an artifact (docs/artifacts.md)."""

    kind: str
    params: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    files: dict[str, int] = field(default_factory=dict)  # relative path -> size in bytes
    command: str = ""
    created: str = ""
    oodkit_version: str = __version__
    format_version: int = 1  # 2 for sharded tables only: older oodkit reads the rest
    seal: str = ""  # seal_of(self) when written; "" in artifacts of older oodkit

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=str) + "\n"


FIELD_TYPES = {  # what each manifest field must be, checked on load
    "kind": str,
    "params": dict,
    "inputs": list,
    "summary": dict,
    "fingerprint": str,
    "files": dict,
    "command": str,
    "created": str,
    "oodkit_version": str,
    "seal": str,
}


def seal_of(manifest: Manifest) -> str:
    """SHA-256 of every manifest field but the seal itself: the recorded recipe, inputs and
    summary shape what downstream stages do (eval's pooling, a detector's clusters), so
    ``verify`` checks them as it checks the files."""
    fields = {k: v for k, v in asdict(manifest).items() if k != "seal"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Artifact:
    """A complete artifact on disk (``ref``: where it came from when not a local folder)."""

    path: Path
    manifest: Manifest
    ref: str | None = None

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def has_data(self) -> bool:
        return (self.path / DATA_DIR).is_dir()

    def dataset(self) -> datasets.Dataset:
        """The tabular payload (memory-mapped)."""
        if not self.has_data:
            raise OodkitError(f"{self.path} ({self.kind}) has no tabular data")
        return load_table(self.path / DATA_DIR)

    def as_input(self) -> dict[str, Any]:
        """The entry that a downstream manifest lists under ``inputs``."""
        return {
            "kind": self.kind,
            "path": self.ref or str(self.path),
            "fingerprint": self.manifest.fingerprint,
        }


def column(ds: datasets.Dataset, name: str) -> list:
    """A whole column as a list, read through Arrow: ~100× faster than ``list(ds[name])``,
    which decodes element by element (2.7 s for 259k sample ids)."""
    return ds.with_format("arrow")[name].to_pylist()


def load_table(folder: Path) -> datasets.Dataset:
    """A ``save_to_disk`` folder, or a sharded one (its shards concatenated in order, rows put
    in canonical order by an in-memory index), memory-mapped; unreadable files are one line,
    not a crash."""
    import datasets
    import numpy as np

    try:
        if not (folder / SHARDS_FILE).is_file():
            return datasets.load_from_disk(str(folder))
        names = json.loads((folder / SHARDS_FILE).read_text())["shards"]
        parts = [datasets.load_from_disk(str(folder / n)) for n in names]
        table = datasets.concatenate_datasets(parts)
        if (folder / ORDER_FILE).is_file():
            order = np.load(folder / ORDER_FILE, allow_pickle=False)
            table = table.select(order, keep_in_memory=True)  # no cache file in the artifact
        return table
    except Exception as exc:  # noqa: BLE001 - arrow, json and index errors of a damaged table
        raise OodkitError(
            f"{folder} cannot be read ({first_line(exc, with_type=True)}); "
            "run oodkit verify on the artifact"
        ) from None


def artifact_files(root: Path) -> list[Path]:
    """Every file of an artifact, sorted, without following links. An artifact holds regular
    files and folders only: a symbolic link (which would make ``verify`` hash, and ``push``
    upload, a file outside it) or a special file is refused, naming only its place inside."""
    out = []
    for dirpath, dirs, names in os.walk(root):
        here = Path(dirpath)
        for name in [*dirs, *names]:
            mode = (here / name).lstat().st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                rel = (here / name).relative_to(root).as_posix()
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise OodkitError(
                    f"{root} is damaged: {rel} is {kind} (an artifact holds regular files only)"
                )
        out += [here / n for n in names]
    return sorted(out)


def _file_sizes(root: Path) -> dict[str, int]:
    """Every file of an artifact but its manifest, by relative POSIX path."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in artifact_files(root)
        if p.relative_to(root).as_posix() != MANIFEST_NAME
    }


def _check_files(path: Path, files: Mapping[str, int]) -> None:
    """The cheap check on every load: each recorded file is a regular file inside the
    artifact (no link, no ``..``) with its recorded size."""
    for rel, size in files.items():
        parts = PurePosixPath(str(rel)).parts
        if not parts or PurePosixPath(str(rel)).is_absolute() or ".." in parts:
            raise OodkitError(f"{path} is damaged: its manifest lists a file outside it")
        if not isinstance(size, int):
            raise OodkitError(
                f"{path}/{MANIFEST_NAME} is corrupt: the size of {rel} is not a number"
            )
        f = path / rel
        try:
            st = f.lstat()
        except OSError:
            raise OodkitError(
                f"{path} is damaged: {rel} is missing (run oodkit verify {path})"
            ) from None
        linked = any((path / Path(*parts[:k])).is_symlink() for k in range(1, len(parts)))
        if linked or not stat.S_ISREG(st.st_mode):
            raise OodkitError(
                f"{path} is damaged: {rel} is not a regular file inside it (run oodkit verify "
                f"{path})"
            )
        if st.st_size != size:
            raise OodkitError(
                f"{path} is damaged: {rel} has {st.st_size} bytes, the manifest records "
                f"{size} (run oodkit verify {path})"
            )


def _save_dataset(ds: datasets.Dataset, folder: Path) -> None:
    """``save_to_disk`` without datasets' progress bars; an empty table still gets one shard
    (datasets writes none for it by default and then cannot load it back)."""
    import datasets

    datasets.disable_progress_bars()
    ds.save_to_disk(str(folder), num_shards=1 if len(ds) == 0 else None)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def load_artifact(path: str | Path, kind: str | Sequence[str] | None = None) -> Artifact:
    """Load an artifact's manifest, checking that it is complete and of the expected kind."""
    want = (kind,) if isinstance(kind, str) else tuple(kind or ())
    what = " or ".join(want) if want else "oodkit"
    if str(path).startswith("hub:"):
        from oodkit.hub import fetch_artifact

        folder, ref = fetch_artifact(str(path))
        art = load_artifact(folder, kind)
        art.ref = ref
        return art
    path = Path(path)
    if not path.is_dir():
        article = "an" if what[0] in "aeiou" else "a"
        raise OodkitError(f"{path}: no such directory (expected {article} {what} artifact)")
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise OodkitError(f"{path} is not an oodkit artifact: {MANIFEST_NAME} is missing")
    try:
        raw = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OodkitError(f"{mpath} is corrupt: {exc}") from None
    if not isinstance(raw, dict):
        raise OodkitError(f"{mpath} is corrupt: not a JSON object")
    version = raw.get("format_version", FORMAT_VERSION)  # before the fields: newer ones add some
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise OodkitError(
            f"{path} has format_version {version!r}; this oodkit "
            f"({__version__}) reads up to {FORMAT_VERSION}: upgrade oodkit"
        )
    names = {f.name for f in dataclasses.fields(Manifest)}
    missing = sorted({"kind", "params"} - set(raw))
    unknown = sorted(set(raw) - names)
    if missing or unknown:
        what_is = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        raise OodkitError(f"{mpath} is corrupt: {what_is}")
    wrong = [k for k, t in FIELD_TYPES.items() if k in raw and not isinstance(raw[k], t)]
    if wrong:
        raise OodkitError(
            f"{mpath} is corrupt: {wrong[0]} is not a {FIELD_TYPES[wrong[0]].__name__}"
        )
    manifest = Manifest(**raw)
    if manifest.kind not in KINDS:
        raise OodkitError(f"{mpath} has unknown kind {manifest.kind!r}")
    if want and manifest.kind not in want:
        raise OodkitError(f"{path} is a {manifest.kind} artifact, expected {what}")
    if not isinstance(manifest.files, dict):
        raise OodkitError(f"{mpath} is corrupt: files is not a mapping")
    _check_files(path, manifest.files)
    return Artifact(path=path, manifest=manifest)


def verify_artifact(path: str | Path) -> Artifact:
    """Recompute an artifact's fingerprint and check its files; raise on any difference."""
    art = load_artifact(path)
    skip = HUB_FILES if art.ref else ()
    recorded = art.manifest.files
    if recorded:
        extra = sorted(set(_file_sizes(art.path)) - set(recorded) - set(skip))
        if extra:
            raise OodkitError(f"{art.path} fails verification: {extra[0]} is not in the manifest")
    if art.manifest.seal and art.manifest.seal != seal_of(art.manifest):
        raise OodkitError(
            f"{art.path} fails verification: its manifest was changed after it was written"
        )
    computed = _fingerprint_dir(art.path, skip)
    if computed != art.manifest.fingerprint:
        raise OodkitError(
            f"{art.path} fails verification: its content fingerprint is {computed[:16]}…, "
            f"the manifest records {art.manifest.fingerprint[:16]}…"
        )
    return art


def fingerprint_dataset(ds: datasets.Dataset, hasher: Any | None = None) -> str:
    """SHA-256 of a dataset's schema and values, independent of how its rows are chunked.

    Rows are re-batched into fixed blocks and serialised as Arrow IPC, so a dataset that was
    assembled from shards of any size fingerprints the same as one written in one go.
    """
    import pyarrow as pa

    h = hasher or hashlib.sha256()
    for block in ds.with_format("arrow").iter(batch_size=1024):
        table = block.combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue())
    return h.hexdigest()


HUB_FILES = ("README.md", ".gitattributes")  # added by the Hub to a pushed artifact


def _hash_value(h: Any, v: Any) -> None:
    """A canonical, type-tagged encoding of one Arrow value (as Python) into ``h``."""
    if v is None:
        h.update(b"N")
    elif isinstance(v, bool):
        h.update(b"B1" if v else b"B0")
    elif isinstance(v, int):
        h.update(b"I" + str(v).encode() + b";")
    elif isinstance(v, float):
        h.update(b"F" + struct.pack("<d", v))
    elif isinstance(v, str):
        h.update(b"S" + str(len(v.encode())).encode() + b":" + v.encode())
    elif isinstance(v, bytes):
        h.update(b"Y" + str(len(v)).encode() + b":" + v)
    elif isinstance(v, dict):
        h.update(b"D" + str(len(v)).encode() + b":")
        for k in sorted(v):
            _hash_value(h, k)
            _hash_value(h, v[k])
    elif isinstance(v, list | tuple):
        h.update(b"L" + str(len(v)).encode() + b":")
        for x in v:
            _hash_value(h, x)
    else:
        raise TypeError(f"cannot fingerprint a {type(v).__name__} value")


def row_digests(ds: datasets.Dataset) -> list[str]:
    """SHA-256 of each row's schema and values: a sharded table's fingerprint is made from
    these in canonical order, so it does not depend on how the rows were cut."""
    table = ds.with_format("arrow")[:]  # the rows as one Arrow table (indices applied)
    schema = str(table.schema.remove_metadata()).encode()
    out = []
    for start in range(0, table.num_rows, 64):
        for row in table.slice(start, 64).to_pylist():
            h = hashlib.sha256(schema)
            for name in table.column_names:
                _hash_value(h, name)
                _hash_value(h, row[name])
            out.append(h.hexdigest())
    return out


def _sharded_digests(folder: Path) -> list[str]:
    """Row digests of a sharded table folder in its shards' order (recomputed from values)."""
    names = json.loads((folder / SHARDS_FILE).read_text())["shards"]
    return [d for n in names for d in row_digests(load_table(folder / n))]


def _hash_table(h: Any, folder: Path, digests: Sequence[str] | None = None) -> None:
    """Values of a table folder into ``h``; a sharded one by its rows' digests in canonical
    order (``digests``: in shard order, recorded by the writers; else recomputed)."""
    import numpy as np

    if not (folder / SHARDS_FILE).is_file():
        fingerprint_dataset(load_table(folder), h)
        return
    rows = list(digests) if digests is not None else _sharded_digests(folder)
    if (folder / ORDER_FILE).is_file():
        order = np.load(folder / ORDER_FILE, allow_pickle=False)
        rows = [rows[i] for i in order]
    h.update(b"rows\0" + "".join(rows).encode())


def _fingerprint_dir(
    root: Path, skip: tuple[str, ...] = (), digests: Sequence[str] | None = None
) -> str:
    """Fingerprint an artifact directory's content: the dataset's values plus other files
    (``skip``: top-level files that are not part of it)."""
    h = hashlib.sha256()
    if (root / DATA_DIR).is_dir():
        h.update(b"data\0")
        _hash_table(h, root / DATA_DIR, digests)
    for f in artifact_files(root):
        rel = f.relative_to(root)
        if rel.parts[0] in (DATA_DIR, MANIFEST_NAME, *skip):
            continue
        h.update(str(rel).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    diffs = [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return ", ".join(diffs[:3]) + (" ..." if len(diffs) > 3 else "")


def _input_prints(inputs: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [i.get("fingerprint") for i in inputs]


STALE = re.compile(r"\.(tmp|old)-[a-z0-9_]{8}")  # write_artifact's temporaries (mkdtemp)


def _claim(out: Path, command: str | None) -> None:
    """Take ``out``'s lock (:func:`~oodkit.locks.claim`) and, holding it, clear what dead
    writers left next to it."""
    if claim(out, command):
        drop_stale(out)


def drop_stale(out: Path) -> None:
    """Remove ``<out>.tmp-*`` / ``<out>.old-*`` folders that a dead run left (a SIGTERM or
    a crash in the middle of an artifact write). Only while this process holds ``out``'s
    lock: no live writer of ``out`` owns them."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        rest = p.name[len(out.name) :]
        if p.name.startswith(out.name) and STALE.fullmatch(rest) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


SIBLING_SUFFIX = len(".tmp-12345678")  # the longest name oodkit derives from an output's


def check_out_path(out: Path) -> Path:
    """Refuse an output path whose writes would fail only after the work: ``.``, ``..`` or
    an empty name (no sibling ``<out>.partial`` / ``<out>.lock`` can be made), or a name too
    long for the file system once a suffix is added."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise OodkitError(
            f"--out {str(out) or repr('')} must name a folder to create (e.g. {out / 'run'})"
        )
    parent = out.absolute().parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
        path_max = os.pathconf(probe, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if len(out.name.encode()) + SIBLING_SUFFIX > name_max:
        size, most = len(out.name.encode()), name_max - SIBLING_SUFFIX
        raise OodkitError(
            f"--out name is {size} bytes long; at most {most} (oodkit adds suffixes such as "
            ".partial)"
        )
    if len(str(out.absolute()).encode()) + 256 > path_max:
        raise OodkitError(
            f"--out path is too long for the file system (over {path_max - 256} bytes)"
        )
    return out


def check_apart(out: Path, inputs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse an output folder that is, lies inside or holds an input (``eval sc --out
    sc/metrics`` would change ``sc`` and leave it failing ``verify``)."""
    where = out.resolve()
    for ref in [str(i.get(k) or "") for i in inputs for k in ("path", "local")]:
        if not ref or ref.startswith("hub:") or not Path(ref).exists():
            continue
        src = Path(ref).resolve()
        if where == src or src in where.parents or where in src.parents:
            relation = "is" if where == src else "lies inside" if src in where.parents else "holds"
            raise OodkitError(f"--out {out} {relation} the input {ref}: write elsewhere")


def check_output(
    out: str | Path,
    kind: str,
    params: Mapping[str, Any],
    inputs: Sequence[Mapping[str, Any]] = (),
    overwrite: bool = False,
) -> Artifact | None:
    """Decide what to do with ``out`` before a stage starts working.

    Returns the existing artifact when it was made by the same kind, parameters and inputs
    (nothing to do), ``None`` when the stage should run, and raises when ``out`` holds
    something else and ``overwrite`` is not set.
    """
    out = check_out_path(Path(out))
    if out.exists() and not out.is_dir():
        raise OodkitError(f"{out} exists and is not a directory")
    check_apart(out, inputs)
    _claim(out, _command)  # before looking: a writer finishing meanwhile is seen below
    if not out.exists():
        return None
    if not out.is_dir():
        raise OodkitError(f"{out} exists and is not a directory")
    if not (out / MANIFEST_NAME).exists():
        if any(out.iterdir()):
            raise OodkitError(f"{out} exists, is not empty and is not an oodkit artifact")
        return None
    existing = load_artifact(out)
    params_j, inputs_j = _jsonable(dict(params)), _jsonable(list(inputs))
    same = (
        existing.kind == kind
        and existing.manifest.params == params_j
        and _input_prints(existing.manifest.inputs) == _input_prints(inputs_j)
    )
    if same and not overwrite:
        return existing
    if overwrite:
        return None
    if existing.kind != kind:
        why = f"it is a {existing.kind} artifact"
    elif existing.manifest.params != params_j:
        why = "different parameters (" + _describe_change(existing.manifest.params, params_j) + ")"
    else:
        changed = [
            str(new.get("path") or new.get("kind"))
            for old, new in zip(existing.manifest.inputs, inputs_j, strict=False)
            if old.get("fingerprint") != new.get("fingerprint")
        ]
        why = "different inputs" + (f" ({', '.join(changed)} changed)" if changed else "")
    raise OodkitError(
        f"{out} already holds an artifact made with {why}; pass --overwrite to replace it"
    )


# what third-party writers (torch.save, safetensors, Arrow) say when the disk fills up
_FULL_DISK = ("No space left", "StorageFull", "Disk quota", "file write failed", "basic_ios")
_NEARLY_FULL = 1 << 20  # bytes free below which a failed write is taken for a full disk


def as_disk_error(exc: BaseException, where: Path) -> BaseException:
    """A third-party writer's failure on a full disk as the ``OSError`` (ENOSPC) it is, so
    it reaches the user as the same one line as any full-disk error; other errors unchanged.
    Called before the failed write's temporaries are removed (which frees the space)."""
    if isinstance(exc, OSError | OodkitError | Interrupted) or not isinstance(exc, Exception):
        return exc  # already one line (or a signal, or not an error of the writer)
    place = Path(where).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        nearly_full = shutil.disk_usage(place).free < _NEARLY_FULL
    except OSError:
        nearly_full = False
    if nearly_full or any(m in str(exc) for m in _FULL_DISK):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
    return exc


@contextlib.contextmanager
def undone_on_failure(where: Path, undo: Callable[[], None]):
    """Run the body; if it fails, report a full disk as ENOSPC on ``where`` (judged before
    ``undo`` frees the space), undo the partial write, and re-raise."""
    try:
        yield
    except BaseException as exc:
        mapped = as_disk_error(exc, where)
        undo()
        if mapped is not exc:
            raise mapped from exc
        raise


def atomic_file(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file through a process-unique temporary sibling (host and pid: ranks of
    several nodes may write the same file in a shared folder), then rename it into place."""
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    with undone_on_failure(path, lambda: tmp.unlink(missing_ok=True)):
        write(tmp)
        os.replace(tmp, path)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished ``tmp`` directory to ``out``, replacing any previous one."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_artifact(
    out: str | Path,
    kind: str,
    params: Mapping[str, Any],
    inputs: Sequence[Mapping[str, Any]] = (),
    *,
    dataset: datasets.Dataset | None = None,
    write_files: Callable[[Path], None] | None = None,
    summary: Mapping[str, Any] | None = None,
    command: str | None = None,
    shards: Sequence[tuple[Path, str]] | None = None,
    place_shards: Callable[[Path], Sequence[str]] | None = None,
) -> Artifact:
    """Write an artifact atomically: build it in ``<out>.tmp-*``, then rename it into place.

    ``write_files(tmp_dir)`` may add model files, reports or plots next to the manifest.
    ``shards`` (folder, name) are table folders moved (not copied) into ``data/`` after
    ``place_shards(tmp_dir)`` made it and returned their row digests (in shard order); they
    are moved back if the artifact cannot be completed.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    out = check_out_path(Path(out))
    _claim(out, command or _command)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    moved: list[tuple[Path, Path]] = []

    def undo() -> None:
        for src, now in moved:  # the shards stay where a rerun finds them
            with contextlib.suppress(OSError):
                now.rename(src)
        shutil.rmtree(tmp, ignore_errors=True)

    with undone_on_failure(out, undo):
        if dataset is not None:
            _save_dataset(dataset, tmp / DATA_DIR)
        prints = None
        if shards is not None and place_shards is not None:
            prints = place_shards(tmp)
            for src, name in shards:
                src.rename(tmp / DATA_DIR / name)
                moved.append((src, tmp / DATA_DIR / name))
        if write_files is not None:
            write_files(tmp)
        manifest = Manifest(
            kind=kind,
            params=_jsonable(dict(params)),
            inputs=_jsonable(list(inputs)),
            summary=_jsonable(dict(summary or {})),
            fingerprint=_fingerprint_dir(tmp, digests=prints),
            files=_file_sizes(tmp),
            command=command or _command or "(python API)",
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            format_version=2 if shards else 1,
        )
        manifest.seal = seal_of(manifest)
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        _replace_dir(tmp, out)
    return Artifact(path=out, manifest=manifest)


PARTIAL_STATE = "partial.json"


def read_memo(partial: Path, name: str, digest: str) -> Any:
    """The array ``ShardedWriter.memo`` kept under ``name`` in a partial folder, when it was
    derived from ``digest``; None when absent, cut off or derived from something else."""
    import numpy as np

    bad = (OSError, ValueError, zipfile.BadZipFile, KeyError)
    with contextlib.suppress(*bad), np.load(partial / f"{name}.npz", allow_pickle=False) as z:
        if str(z["digest"]) == digest:
            return z["value"]
    return None


def partial_of(out: str | Path) -> Path:
    """``<out>.partial``: where a long run keeps its resumable state."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def prepare_partial(
    out: str | Path, state: Mapping[str, Any], overwrite: bool = False
) -> tuple[Path, bool]:
    """Create ``<out>.partial`` for a long run, or reuse one left by an interrupted run.

    ``state`` (kind, parameters, input fingerprints, ...) must equal the interrupted run's;
    otherwise the old work is discarded with ``overwrite`` and refused without it.
    Returns the folder and whether earlier work was found in it.
    """
    out = check_out_path(Path(out))
    partial = partial_of(out)
    _claim(out, _command)
    state = _jsonable(dict(state))
    state_file = partial / PARTIAL_STATE
    if state_file.exists():
        try:
            previous = json.loads(state_file.read_text())
        except (ValueError, OSError):
            previous = None
        if previous == state:
            return partial, True
        if not overwrite:
            why = "different parameters" if previous is not None else "a damaged state file"
            raise OodkitError(
                f"{partial} holds an interrupted run with {why}; pass --overwrite to discard it"
            )
        shutil.rmtree(partial)
    elif partial.exists() and overwrite:
        shutil.rmtree(partial)
    if not partial.exists():
        fresh_state(partial, holds_work)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_file(state_file, lambda tmp: tmp.write_text(json.dumps(state, indent=2)))
    return partial, False


BOOKKEEPING = (PARTIAL_STATE, "claims", "shared.json")  # in a partial folder: not work


def holds_work(partial: Path) -> bool:
    """Whether a partial folder holds finished work (a checkpoint, a stage's output, a
    shard) rather than only bookkeeping, recomputable memos and cut-off temporaries."""
    return any(
        p.name not in BOOKKEEPING
        and not p.name.startswith(".")
        and p.suffix not in (".npz", ".tmp")
        for p in partial.iterdir()
    )


def training_checkpoint(
    out: str | Path,
    kind: str,
    params: Mapping[str, Any],
    inputs: Sequence[Mapping[str, Any]],
    *,
    overwrite: bool,
    resume: bool,
) -> Path:
    """The checkpoint file of a training run in ``<out>.partial`` (it may not exist yet).

    An interrupted run with the same parameters is continued only with ``resume``; without
    it the run is refused rather than silently restarted.
    """
    state = {"kind": kind, "params": dict(params), "inputs": _input_prints(list(inputs))}
    partial, found = prepare_partial(out, state, overwrite)
    checkpoint = partial / "checkpoint.pt"
    if found and checkpoint.exists() and not resume:
        raise OodkitError(
            f"{partial} holds an interrupted run: pass --resume to continue or --overwrite"
        )
    return checkpoint


def _view(shards: Sequence[Path], order: Any) -> datasets.Dataset | None:
    """Finished shards' tables concatenated (memory-mapped), rows put in ``order``."""
    import datasets

    if not shards:
        return None
    table = datasets.concatenate_datasets([load_table(s / DATA_DIR) for s in shards])
    return table if order is None else table.select(order, keep_in_memory=True)


class ShardedWriter:
    """Rows of a long stage written in shards under ``<out>.partial``; the finished artifact
    *is* those shards (no merge).

    Work is keyed by sample id. A rerun with the same parameters skips keys already in a
    finished shard. :meth:`finalize` moves the shards into the artifact's ``data/`` folder
    (renames: O(number of shards), no second copy of the payload on disk) and records the
    permutation that puts their rows in canonical key order, so the loaded table is the same
    whether or not the run was interrupted, and however the shards were cut. Shard folders
    are named by the canonical position of their first key, so processes that work on
    disjoint keys (e.g. under ``accelerate launch``) never collide; two processes that wrote
    the same shard (a claim taken over from a rank thought dead) keep the first.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        kind: str,
        keys: Sequence[str],
        params: Mapping[str, Any],
        inputs: Sequence[Mapping[str, Any]] = (),
        key_column: str = "sample_id",
        overwrite: bool = False,
        layout: Mapping[str, Any] | None = None,
    ) -> None:
        self.out = Path(out)
        self.kind = kind
        self.keys = list(keys)
        self.position = {k: i for i, k in enumerate(self.keys)}
        if len(self.position) != len(self.keys):
            raise OodkitError("sample ids are not unique")
        self.params = _jsonable(dict(params))
        self.inputs = _jsonable(list(inputs))
        self.key_column = key_column
        state = {
            "kind": kind,
            "params": self.params,
            "inputs": _input_prints(self.inputs),
            "keys": hashlib.sha256("\n".join(self.keys).encode()).hexdigest(),
            **({"layout": dict(layout)} if layout else {}),
        }
        self.partial, _ = prepare_partial(self.out, state, overwrite)

    def shard_name(self, keys: Sequence[str]) -> str:
        """The folder name of the shard that holds ``keys``."""
        return f"shard-{min(self.position[k] for k in keys):09d}"

    def is_done(self, name: str) -> bool:
        """Whether shard ``name`` is finished (by any process)."""
        return (self.partial / name / "keys.json").is_file()

    def _shards(self) -> list[Path]:
        return sorted(p for p in self.partial.glob("shard-*") if (p / "keys.json").is_file())

    def done(self) -> set[str]:
        """Keys in a finished shard, read from disk: shards written by any process count."""
        keys: set[str] = set()
        for shard in self._shards():
            try:
                keys.update(json.loads((shard / "keys.json").read_text()))
            except (ValueError, TypeError) as exc:
                raise OodkitError(
                    f"{shard} is damaged ({first_line(exc)}); pass --overwrite to start again"
                ) from None
        return keys

    def pending(self) -> list[str]:
        """Keys not yet in a finished shard, in canonical order."""
        done = self.done()
        return [k for k in self.keys if k not in done]

    def memo(self, name: str, digest: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """An array derived from the run's inputs (e.g. per-sample plans), computed once and
        kept in the partial folder, so a resume — or a rank that comes later — loads it.

        ``digest`` names everything the array depends on; a stored array with another digest
        (or one cut off mid-write) is computed again.
        """
        import numpy as np

        path = self.partial / f"{name}.npz"
        stored = read_memo(self.partial, name, digest)
        if stored is not None:
            return stored
        value = compute()

        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.savez(fh, digest=np.array(digest), value=value)

        atomic_file(path, write)
        return value

    def drop_temporaries(self) -> None:
        """Remove shards cut off mid-write (by a killed process); only while no process
        writes (the main process before the others open the folder, or at the end)."""
        for tmp in self.partial.glob(".tmp-shard-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def write_shard(self, keys: Sequence[str], rows: datasets.Dataset) -> None:
        """Atomically add one shard: ``rows`` produced for ``keys`` (rows carry the key column),
        with the fingerprint of its values (the artifact's is made from these)."""
        if not keys:
            return
        unknown = [k for k in keys if k not in self.position]
        if unknown:
            raise ValueError(f"unknown keys, e.g. {unknown[0]!r}")
        missing = set(column(rows, self.key_column)) - set(keys)
        if missing:
            raise ValueError(f"rows reference keys outside this shard, e.g. {missing.pop()!r}")
        target = self.partial / self.shard_name(keys)
        if target.exists():
            return  # written meanwhile by a process that held the shard before us
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-shard-", dir=self.partial))
        with undone_on_failure(target, lambda: shutil.rmtree(tmp, ignore_errors=True)):
            _save_dataset(rows, tmp / DATA_DIR)
            (tmp / "shard.json").write_text(json.dumps({"rows": row_digests(rows)}))
            (tmp / "keys.json").write_text(json.dumps(list(keys)))
            try:
                tmp.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # the other copy won: same content

    def _layout(self) -> tuple[list[Path], Any]:
        """Finished shards in order and the canonical order permutation of their rows
        (``None`` when the shards already are in it)."""
        import numpy as np

        left = self.pending()
        if left:
            raise OodkitError(f"{len(left)} samples are not done yet (e.g. {left[0]!r})")
        shards = self._shards()
        pos = []
        for s in shards:
            pos.extend(self.position[k] for k in column(load_table(s / DATA_DIR), self.key_column))
        arr = np.asarray(pos, dtype=np.int64)
        order = np.argsort(arr, kind="stable")
        identity = bool((order == np.arange(len(order))).all())
        return shards, None if identity else order

    def table(self) -> datasets.Dataset | None:
        """All finished shards' rows in canonical key order (every key must be done), as a
        memory-mapped view."""
        return _view(*self._layout())

    def finalize(
        self,
        *,
        summary: Mapping[str, Any] | None = None,
        write_files: Callable[[Path], None] | None = None,
        command: str | None = None,
        summarize: Callable[[datasets.Dataset], Mapping[str, Any]] | None = None,
    ) -> Artifact:
        """Move the shards into the artifact (renames) and remove the partial folder.

        ``summarize(table)`` adds summary figures computed from the complete table.
        """
        import numpy as np

        self.drop_temporaries()  # cut off by a killed process
        shards, order = self._layout()
        summary = dict(summary or {})
        if summarize is not None and shards:
            summary.update(summarize(_view(shards, order)))
        prints = []
        for s in shards:
            meta = s / "shard.json"  # absent in shards of a run started by an older oodkit
            prints += (
                json.loads(meta.read_text())["rows"]
                if meta.is_file()
                else row_digests(load_table(s / DATA_DIR))
            )

        def place(folder: Path) -> list[str]:
            data = folder / DATA_DIR
            data.mkdir()
            names = [s.name for s in shards]
            (data / SHARDS_FILE).write_text(json.dumps({"shards": names}))
            if order is not None:
                np.save(data / ORDER_FILE, order, allow_pickle=False)
            return prints

        art = write_artifact(
            self.out,
            self.kind,
            self.params,
            self.inputs,
            shards=[(s / DATA_DIR, s.name) for s in shards] if shards else None,
            place_shards=place if shards else None,
            write_files=write_files,
            summary=summary,
            command=command,
        )
        self.discard()
        return art

    def discard(self) -> None:
        """Remove the partial folder (after the results are written elsewhere)."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.partial)
