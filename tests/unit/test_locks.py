"""One writer per output folder: the lock, its holder line, stale locks, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from oodkit.errors import OodkitError
from oodkit.locks import claim, lock_path, output_scope

CLAIM = """
import sys, time
from oodkit.errors import OodkitError
from oodkit.locks import claim, output_scope
with output_scope():
    try:
        claim(sys.argv[1], "oodkit second")
    except OodkitError as exc:
        print(exc)
        sys.exit(2)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _claim_elsewhere(out: Path, hold: float = 0.0, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(out), str(hold)], stdout=subprocess.PIPE, text=True, **kw
    )


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "det"
    with output_scope():
        claim(out, "oodkit train detector --out runs/det")
        holder = json.loads(lock_path(out).read_text())
        assert holder["pid"] == os.getpid() and holder["command"].startswith("oodkit train")
        second = _claim_elsewhere(out)
        text, _ = second.communicate(timeout=60)
        assert second.returncode == 2
        assert f"{out} is being written by another run (pid {os.getpid()} on " in text
        assert "oodkit train detector --out runs/det); wait for it to finish" in text
        claim(out)  # the holder itself may claim again
    assert not lock_path(out).exists()
    free = _claim_elsewhere(out)
    assert free.communicate(timeout=60)[0].strip() == "held" and free.returncode == 0


def test_a_killed_holder_leaves_a_stale_lock_that_the_next_run_takes_over(tmp_path) -> None:
    out = tmp_path / "out"
    proc = _claim_elsewhere(out, hold=120)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert lock_path(out).exists()  # the file stays; the kernel lock went with the process
    with output_scope():
        claim(out, "oodkit again")
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_claims_outside_a_stage_do_nothing_and_rank_in_the_environment_proves_nothing(
    tmp_path, monkeypatch
) -> None:
    claim(tmp_path / "a")
    assert not lock_path(tmp_path / "a").exists()
    monkeypatch.setenv("RANK", "1")  # a shell inside a torchrun / Slurm allocation
    monkeypatch.setenv("WORLD_SIZE", "4")
    with output_scope():
        claim(tmp_path / "b")
        assert lock_path(tmp_path / "b").exists()


RANKED = """
import os, sys
from pathlib import Path
import torch.distributed as dist
from oodkit.locks import claim, lock_path, output_scope

dist.init_process_group("gloo")
out = Path(sys.argv[1]) / f"out{dist.get_rank()}"
with output_scope():
    claim(out)
    print(lock_path(out).exists(), flush=True)
    dist.barrier()
dist.destroy_process_group()
"""


def test_only_rank_0_of_a_real_process_group_claims(tmp_path, gloo_ranks) -> None:
    ranks = gloo_ranks(RANKED, str(tmp_path))
    assert [code for code, _, _ in ranks] == [0, 0], ranks
    assert [out.strip() for _, out, _ in ranks] == ["True", "False"]


def test_a_refused_stage_removes_the_folders_its_claim_made(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    with pytest.raises(OodkitError, match="bad"), output_scope():
        claim(tmp_path / "x" / "y" / "out")
        claim(tmp_path / "kept" / "out")
        assert (tmp_path / "x" / "y").is_dir()
        raise OodkitError("bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_an_unwritable_place_is_one_line() -> None:
    with pytest.raises(OodkitError, match="cannot write /proc/oodkit-x/out: "), output_scope():
        claim("/proc/oodkit-x/out")


def test_a_filesystem_without_flock_runs_unprotected_with_a_warning(tmp_path, monkeypatch):
    import errno

    import filelock

    def no_flock(self, *args, **kwargs):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(filelock.FileLock, "acquire", no_flock)
    with pytest.warns(RuntimeWarning, match="does not support file locks"), output_scope():
        claim(tmp_path / "out")
    assert not lock_path(tmp_path / "out").exists()
