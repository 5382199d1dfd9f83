"""The sharded-run engine: every stage that writes per-sample rows in shards runs through it.

plan → claim a shard → run its batches on the device → hand host work (conversion, quality,
encoding) to a pool → write the shard → claim the next. Ranks *claim* shards on the shared
output folder (an exclusive create), so any number of processes, uneven speeds and any
resume (also with another number of processes) balance by themselves; a claim whose holder
died is taken over. The canonical cut into batches and shards does not depend on the number
of processes or on what is already done, and every sample draws from its own seed, so the
artifact is identical however the work was split or interrupted.

SIGTERM / SIGINT stop a run after the current batch: finished shards are kept, unfinished
work and this rank's claims are dropped, and :class:`Interrupted` says how to resume.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from oodkit.errors import Interrupted, OodkitError

if TYPE_CHECKING:
    import datasets

    from oodkit.artifacts import ShardedWriter

CLAIMS = "claims"
SHARED_TOKEN = "shared.json"
LEASE_ENV = "OODKIT_CLAIM_LEASE"  # seconds without a heartbeat after which a claim is stale
DEFAULT_LEASE = 600.0
POLL_SECONDS = 0.5


def cut_shards(batches: list[list[int]], batch_size: int, shard_size: int) -> list[list[list[int]]]:
    """Canonical batches cut into shards of about ``shard_size`` samples; the cut depends
    neither on what is done nor on the number of processes."""
    per_shard = max(1, math.ceil(shard_size / batch_size))
    return [batches[i : i + per_shard] for i in range(0, len(batches), per_shard)]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, not yet reaped, does not)."""
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """Exclusive claims on shards: ``<partial>/claims/<shard>`` created with O_EXCL by the
    rank that runs the shard, holding its host, pid and rank; touched after every batch
    (the heartbeat). A claim is stale when its holder is a dead process on this host, or
    when its heartbeat is older than the lease (``$OODKIT_CLAIM_LEASE`` seconds, default
    600) — then it is taken over through a rename only one rank can win."""

    def __init__(self, partial: Path, rank: int) -> None:
        self.folder = partial / CLAIMS
        self.host, self.pid, self.rank = socket.gethostname(), os.getpid(), rank
        self.lease = float(os.environ.get(LEASE_ENV, DEFAULT_LEASE))
        self.mine: set[str] = set()

    def clear(self) -> None:
        """Drop every claim (the main process at the start, before any other rank claims:
        the output lock guarantees no other run holds one)."""
        if self.folder.is_dir():
            for f in self.folder.iterdir():
                f.unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> bool:
        """Claim shard ``name``; False when another rank holds it."""
        try:
            fd = os.open(self.folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": self.host, "pid": self.pid, "rank": self.rank}, fh)
        self.mine.add(name)
        return True

    def heartbeat(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.folder / name)

    def release(self, name: str) -> None:
        self.mine.discard(name)
        (self.folder / name).unlink(missing_ok=True)

    def release_all(self) -> None:
        for name in list(self.mine):
            self.release(name)

    def _dead(self, path: Path) -> bool:
        """Whether the claim file at ``path`` belongs to a dead holder."""
        try:
            age = time.time() - path.stat().st_mtime
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            return False  # released meanwhile, or being written
        if not isinstance(holder, dict):  # damaged: only the lease can tell
            return age > self.lease
        if holder.get("host") == self.host and "pid" in holder:
            return holder["pid"] != self.pid and not _alive(int(holder["pid"]))
        return age > self.lease

    def stale(self, name: str) -> bool:
        """Whether the claim on ``name`` belongs to a dead holder (False: none or alive)."""
        return self._dead(self.folder / name)

    def take_over(self, name: str) -> bool:
        """Take a stale claim: rename it away (one rank wins), check that what was renamed is
        still the dead holder's (else put it back), then claim afresh."""
        if not self.stale(name):
            return False
        path, grave = self.folder / name, self.folder / f".stale-{name}-{self.host}-{self.pid}"
        try:
            os.rename(path, grave)
        except OSError:
            return False
        dead = self._dead(grave)
        if not dead:  # a live rank claimed it in between: give it back
            with contextlib.suppress(OSError):
                os.link(grave, path)
        grave.unlink(missing_ok=True)
        return dead and self.take(name)


def check_shared_folder(partial: Path, state: Any, token: str | None) -> None:
    """Every rank proves it sees the main process's token in ``partial`` (the folder must be
    on a filesystem all nodes share); otherwise every rank stops with one line naming the
    ranks and hosts that could not see it — before any work."""
    if state.num_processes == 1:
        return
    import torch.distributed as dist

    dist.barrier()  # rank 0 has written its token
    path = partial / SHARED_TOKEN
    try:
        seen = json.loads(path.read_text()).get("token")
    except (OSError, ValueError):
        seen = None
    ok = seen is not None and (token is None or seen == token)
    views: list[Any] = [None] * state.num_processes
    dist.all_gather_object(views, (ok, socket.gethostname(), state.process_index))
    blind = [(rank, host) for good, host, rank in views if not good]
    if blind:
        who = ", ".join(f"rank {r} on {h}" for r, h in blind)
        out = partial.with_name(partial.name.removesuffix(".partial"))
        raise OodkitError(
            f"{out} is not shared by every process: {who} cannot see "
            f"{path.name} written by rank 0 (put --out on a filesystem every node mounts)"
        )


def write_shared_token(partial: Path) -> str:
    """The main process's token that the other ranks must see (:func:`check_shared_folder`)."""
    token = uuid.uuid4().hex
    (partial / SHARED_TOKEN).write_text(json.dumps({"token": token, "host": socket.gethostname()}))
    return token


class _StopFlag:
    """SIGTERM / SIGINT set a flag instead of killing the run (in the main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class ShardWork:
    """What a stage plugs into the engine.

    ``load(batch)`` runs in loader workers (decode, fit) and returns the batch's inputs;
    ``compute(batch, inputs)`` runs on the device in the main thread and returns what the host
    needs (already on the CPU); ``host(batch, inputs, result)`` runs in the pool and returns
    the batch's rows as columns; ``key_of(i)`` names item ``i``.
    """

    shards: list[list[list[int]]]
    key_of: Callable[[int], str]
    load: Callable[[list[int]], Any]
    compute: Callable[[list[int], Any], Any]
    host: Callable[[list[int], Any, Any], dict[str, list]]
    features: datasets.Features
    num_workers: int = 0
    host_workers: int = 1
    pin_memory: bool = False


@dataclass
class RunStats:
    """Where one rank's time went: waiting for inputs, device work (``compute``), host work
    in the pool (its threads' CPU time) and waiting for a shard write (back-pressure)."""

    samples: int = 0
    seconds: float = 0.0
    loader_wait_s: float = 0.0
    compute_s: float = 0.0
    host_cpu_s: float = 0.0
    write_wait_s: float = 0.0

    def add_host(self, seconds: float) -> None:
        with _STATS_LOCK:
            self.host_cpu_s += seconds

    def as_dict(self) -> dict[str, Any]:
        per = 1000 / self.samples if self.samples else 0.0
        return {
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "loader_wait_s": round(self.loader_wait_s, 3),
            "compute_s": round(self.compute_s, 3),
            "host_cpu_ms_per_sample": round(self.host_cpu_s * per, 2),
            "write_wait_s": round(self.write_wait_s, 3),
        }


_STATS_LOCK = threading.Lock()


def _timed(stats: RunStats, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that adds its thread's CPU time to ``stats.host_cpu_s``."""

    def run(*args: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args)
        finally:
            stats.add_host(time.thread_time() - start)

    return run


def gather_stats(state: Any, stats: RunStats, **extra: Any) -> list[dict[str, Any]]:
    """Every rank's :class:`RunStats` (with ``extra`` figures), in rank order."""
    mine = {**stats.as_dict(), **extra}
    if state.num_processes == 1:
        return [mine]
    import torch.distributed as dist

    every: list[Any] = [None] * state.num_processes
    dist.all_gather_object(every, mine)
    return every


class _BatchInputs(torch.utils.data.Dataset):
    """(shard, batch) → the batch's inputs, loaded in workers."""

    def __init__(self, work: ShardWork) -> None:
        self.work = work

    def __len__(self) -> int:
        return sum(len(s) for s in self.work.shards)

    def __getitem__(self, index: tuple[int, int]) -> tuple[int, int, Any]:
        j, b = index
        return j, b, self.work.load(self.work.shards[j][b])


class _ClaimingSampler(torch.utils.data.Sampler):
    """Yields (shard, batch) of the shards this rank claims — unclaimed ones first, then
    those whose holder died — claiming a shard only when the loader asks for its first
    batch. It never waits: shards that live ranks hold are left to them."""

    def __init__(self, names: list[str], claims: Claims, writer: ShardedWriter, work) -> None:
        self.names, self.claims, self.writer, self.work = names, claims, writer, work
        self.stop = False

    def __len__(self) -> int:
        return sum(len(s) for s in self.work.shards)

    def _claimed(self) -> Iterator[int]:
        for j, name in enumerate(self.names):
            if self.stop:
                return
            if not self.writer.is_done(name) and self.claims.take(name):
                yield j
        for j, name in enumerate(self.names):
            if self.stop:
                return
            if (
                not self.writer.is_done(name)
                and self.claims.stale(name)
                and self.claims.take_over(name)
            ):
                yield j

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for j in self._claimed():
            for b in range(len(self.work.shards[j])):
                yield j, b


def _rows(parts: Sequence[Future]) -> dict[str, list]:
    rows: dict[str, list] = {}
    for part in parts:
        for k, v in part.result().items():
            rows.setdefault(k, []).extend(v)
    return rows


def _write(writer: ShardedWriter, keys: list[str], parts: list[Future], features) -> None:
    import datasets

    rows = _rows(parts)
    rows = {k: rows.get(k, []) for k in features}
    writer.write_shard(keys, datasets.Dataset.from_dict(rows, features=features))


def run_shards(
    work: ShardWork,
    writer: ShardedWriter,
    claims: Claims,
    advance: Callable[[int], None] = lambda n: None,
) -> RunStats:
    """Run shards until every one is done; returns where this rank's time went.

    A rank with nothing left to claim waits (polling the folder) only while other live
    ranks finish the shards they hold — about one shard's work — and takes over any claim
    whose holder dies meanwhile. Raises :class:`Interrupted` on SIGTERM / SIGINT (after the
    current batch; finished shards written, this rank's claims released).
    """
    names = [writer.shard_name([work.key_of(i) for b in s for i in b]) for s in work.shards]
    stats, started = RunStats(), time.perf_counter()
    with _StopFlag() as flag:
        while flag.signum is None:
            if _claimable(names, claims, writer):  # a loader (and its workers) only then
                _one_pass(work, writer, claims, names, flag, advance, stats)
            if flag.signum is not None or all(writer.is_done(n) for n in names):
                break
            time.sleep(POLL_SECONDS)
    stats.seconds = time.perf_counter() - started
    if flag.signum is not None and not all(writer.is_done(n) for n in names):
        done = len(writer.keys) - len(writer.pending())
        name = signal.Signals(flag.signum).name
        raise Interrupted(
            f"stopped by {name} after {done} of {len(writer.keys)} samples; rerun the same "
            "command to resume",
            flag.signum,
        )
    return stats


def _claimable(names: list[str], claims: Claims, writer: ShardedWriter) -> bool:
    """Whether a shard is open to this rank now: unfinished and unclaimed, or stale."""
    return any(
        not writer.is_done(n) and (not (claims.folder / n).exists() or claims.stale(n))
        for n in names
    )


def _ignore_interrupts(_worker: int) -> None:
    """Loader workers leave Ctrl-C (sent to the whole process group) to the main process,
    which stops after its batch and ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _one_pass(work, writer, claims: Claims, names, flag: _StopFlag, advance, stats) -> None:
    """Every shard this rank can claim now, through one loader; host work of batch j
    overlaps batch j + 1, and at most one finished shard waits to be written."""
    from torch.utils.data import DataLoader

    sampler = _ClaimingSampler(names, claims, writer, work)
    loader = DataLoader(
        _BatchInputs(work),
        sampler=sampler,
        batch_size=None,
        num_workers=work.num_workers,
        pin_memory=work.pin_memory,
        worker_init_fn=_ignore_interrupts if work.num_workers else None,
    )
    current, parts = None, []
    last_write: Future | None = None
    batches = iter(loader)
    pool = ThreadPoolExecutor(work.host_workers, thread_name_prefix="oodkit-host")
    host, write = _timed(stats, work.host), _timed(stats, _write)
    clock = time.perf_counter
    try:
        while True:
            t0 = clock()
            item = next(batches, None)
            t1 = clock()
            stats.loader_wait_s += t1 - t0
            if item is None:
                break
            j, b, inputs = item
            if j != current:
                parts, current = [], j
            batch = work.shards[j][b]
            result = work.compute(batch, inputs)
            stats.compute_s += clock() - t1
            parts.append(pool.submit(host, batch, inputs, result))
            claims.heartbeat(names[j])
            advance(len(batch))
            stats.samples += len(batch)
            if b == len(work.shards[j]) - 1:  # the shard is complete: write it
                t2 = clock()
                if last_write is not None:
                    last_write.result()  # errors surface; memory stays at one shard
                stats.write_wait_s += clock() - t2
                keys = [work.key_of(i) for bb in work.shards[j] for i in bb]
                last_write = pool.submit(write, writer, keys, parts, work.features)
                last_write.add_done_callback(lambda _f, n=names[j]: claims.release(n))
            if flag.signum is not None:
                break
        t3 = clock()
        if last_write is not None:
            last_write.result()
        stats.write_wait_s += clock() - t3
    finally:
        sampler.stop = True
        del batches  # loader workers end before the pool
        pool.shutdown(wait=True, cancel_futures=True)
        claims.release_all()


def open_sharded(state: Any, out: Any, overwrite: bool, shard_size: int, **writer_args: Any):
    """The shard writer of a run and this rank's claims.

    The main process opens ``<out>.partial`` first (creating it, or with ``overwrite``
    discarding it; dropping the claims and cut-off shards of an interrupted run; writing
    the shared-folder token); every rank then proves it sees the token, and only then do
    the others open the folder — a rank that does not share it creates nothing.
    ``writer_args`` go to :class:`~oodkit.artifacts.ShardedWriter`.
    """
    from oodkit.artifacts import ShardedWriter, partial_of

    def open_writer(overwrite: bool) -> ShardedWriter:
        layout = {"shard_size": shard_size}
        return ShardedWriter(out, overwrite=overwrite, layout=layout, **writer_args)

    token = None
    if state.is_main_process:
        writer = open_writer(overwrite)
        writer.drop_temporaries()
        Claims(writer.partial, 0).clear()
        token = write_shared_token(writer.partial)
    partial = partial_of(out)
    check_shared_folder(partial, state, token)  # a collective: the others wait for the token
    if not state.is_main_process:
        writer = open_writer(False)
    return writer, Claims(writer.partial, state.process_index)
