"""The sharded-run engine with real processes: claims, uneven speeds, a rank killed mid-run,
SIGTERM in the last shard, and resumes with another number of processes — each ends with
the artifact of one uninterrupted process and no temporaries."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oodkit.artifacts import load_artifact, verify_artifact
from oodkit.sharding import Claims

sys.path.insert(0, str(Path(__file__).parent))
import sharded_worker as job  # noqa: E402

WORKER = str(Path(__file__).parent / "sharded_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(
    out: Path, rank: int, delay: float, die_after: int | None = None, gate: Path | None = None
) -> subprocess.Popen:
    args = [sys.executable, WORKER, str(out), str(rank), str(delay)]
    args += [] if die_after is None else [str(die_after)]
    env = ENV if gate is None else {**ENV, "GATE": str(gate)}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, list[int], str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        lines = stdout.strip().splitlines()
        out.append((p.returncode, json.loads(lines[-1]) if lines else [], stderr))
    return out


def _open(out: Path) -> None:
    """What the main process does before the ranks start (oodkit.sharding.open_sharded)."""
    w = job.writer(str(out))
    w.drop_temporaries()
    Claims(w.partial, 0).clear()


def _final(out: Path) -> str:
    w = job.writer(str(out))
    assert w.pending() == []
    art = w.finalize()
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no partial, no temporary
    assert verify_artifact(art.path).manifest.fingerprint == art.manifest.fingerprint
    return art.manifest.fingerprint


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    """The artifact of one uninterrupted process."""
    out = tmp_path_factory.mktemp("ref") / "one"
    _open(out)
    [(rc, shards, err)] = _finish([_start(out, 0, 0.0)])
    assert rc == 0, err
    assert shards == list(range(12))
    fingerprint = _final(out)
    table = load_artifact(out).dataset()
    assert table["sample_id"] == job.KEYS  # canonical order, though shards were cut otherwise
    return fingerprint


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _claimants(out: Path) -> set[int]:
    """The ranks holding a claim now."""
    ranks = set()
    for p in out.with_name(out.name + ".partial").glob("claims/*"):
        with contextlib.suppress(OSError, ValueError):  # released or being written meanwhile
            ranks.add(json.loads(p.read_text())["rank"])
    return ranks


def _done(out: Path) -> int:
    partial = out.with_name(out.name + ".partial")
    return sum(1 for p in partial.glob("shard-*") if (p / "keys.json").is_file())


def test_claims_are_exclusive_and_a_dead_holder_is_taken_over(tmp_path) -> None:
    a, b = Claims(tmp_path, 0), Claims(tmp_path, 1)
    a.clear()
    assert a.take("shard-1") and not b.take("shard-1")
    assert not b.stale("shard-1")  # its holder (this process) is alive
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    (tmp_path / "claims" / "shard-2").write_text(
        json.dumps({"host": a.host, "pid": pid, "rank": 3})
    )
    assert b.stale("shard-2") and b.take_over("shard-2") and not a.take_over("shard-2")
    assert json.loads((tmp_path / "claims" / "shard-2").read_text())["rank"] == 1
    elsewhere = tmp_path / "claims" / "shard-3"
    elsewhere.write_text(json.dumps({"host": "another-node", "pid": 1, "rank": 2}))
    assert not b.stale("shard-3")  # another node's claim: stale only after the lease
    os.utime(elsewhere, (time.time() - 10_000, time.time() - 10_000))
    assert b.stale("shard-3")
    b.release_all()
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["shard-1", "shard-3"]


def test_two_ranks_at_uneven_speeds_balance_and_match_one(tmp_path, reference) -> None:
    out = tmp_path / "two"
    _open(out)
    (rc0, fast, e0), (rc1, slow, e1) = _finish([_start(out, 0, 0.05), _start(out, 1, 0.4)])
    assert rc0 == rc1 == 0, e0 + e1
    assert sorted(fast + slow) == list(range(12))  # every shard once
    assert len(fast) > len(slow) >= 1  # claimed by speed, not j % W
    assert _final(out) == reference


@pytest.mark.slow
def test_a_killed_rank_s_shard_is_taken_over(tmp_path, reference) -> None:
    out = tmp_path / "killed"
    _open(out)
    (rc0, live, e0), (rc1, _, _) = _finish(
        [_start(out, 0, 0.15), _start(out, 1, 0.15, die_after=3)]
    )
    assert rc1 == -signal.SIGKILL and rc0 == 0, e0
    assert len(live) >= 11  # the survivor finished the dead rank's claimed shard too
    assert _final(out) == reference


@pytest.mark.slow
def test_sigterm_in_the_last_shard_then_resume(tmp_path, reference) -> None:
    out = tmp_path / "term"
    _open(out)
    proc = _start(out, 0, 0.3)  # the signal lands in the first of the last shard's 2 batches
    _wait_for(lambda: _done(out) == 11)
    proc.send_signal(signal.SIGTERM)
    [(rc, _, err)] = _finish([proc])
    assert rc == 128 + signal.SIGTERM
    assert err.strip().splitlines() == [
        "interrupted: stopped by SIGTERM after 44 of 48 samples; rerun the same command to resume"
    ]
    partial = out.with_name("term.partial")
    assert list((partial / "claims").iterdir()) == []  # claims released
    assert not list(partial.glob(".tmp-*"))
    [(rc, shards, err)] = _finish([_start(out, 0, 0.0)])
    assert rc == 0 and shards == [11], err
    assert _final(out) == reference


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_resume_with_another_number_of_processes(tmp_path, reference, before, after) -> None:
    (tmp_path / "run").mkdir()
    out, gate = tmp_path / "run" / "resumed", tmp_path / "gate"  # the gate outside out's folder
    _open(out)
    procs = [_start(out, r, 0.05, gate=gate) for r in range(before)]
    _wait_for(lambda: _claimants(out) == set(range(before)))  # each rank's handler is set
    gate.touch()
    _wait_for(lambda: _done(out) >= 4)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    assert all(rc == 128 + signal.SIGTERM for rc, _, _ in _finish(procs))
    assert 4 <= _done(out) < 12
    _open(out)  # the next launch's main process
    results = _finish([_start(out, r, 0.0) for r in range(after)])
    assert all(rc == 0 for rc, _, _ in results), [e for _, _, e in results]
    assert _final(out) == reference


SHARED = """
import sys
from pathlib import Path
import torch.distributed as dist
from oodkit.errors import OodkitError
from oodkit.sharding import check_shared_folder, write_shared_token

dist.init_process_group("gloo")
rank = dist.get_rank()


class State:
    num_processes, process_index, is_main_process = 2, rank, rank == 0


base = Path(sys.argv[1])
shared = sys.argv[2] == "shared"
partial = base / ("out.partial" if shared or rank == 0 else "node-local/out.partial")
partial.mkdir(parents=True, exist_ok=True)
token = write_shared_token(partial) if rank == 0 else None
try:
    check_shared_folder(partial, State, token)
    print("ok")
except OodkitError as exc:
    print(exc)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("layout", ["shared", "node-local"])
def test_every_rank_proves_it_sees_the_output_folder(tmp_path, layout) -> None:
    """Two real ranks; in the node-local layout rank 1 has its own folder (as on a node whose
    --out is not the shared filesystem): every rank stops with the same line naming it."""
    import socket

    script = tmp_path / "shared.py"
    script.write_text(SHARED)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*launch, "--tee", "1", str(script), str(tmp_path), layout],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = sorted(line.split("]:", 1)[-1] for line in proc.stdout.splitlines() if line.strip())
    if layout == "shared":
        assert lines == ["ok", "ok"]
    else:
        want = (
            f" is not shared by every process: rank 1 on {socket.gethostname()} cannot see "
            "shared.json written by rank 0 (put --out on a filesystem every node mounts)"
        )
        views = [str(tmp_path / "node-local" / "out"), str(tmp_path / "out")]  # each rank's
        assert lines == [view + want for view in views]
