"""The multi-process helpers of the training engine."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from oodkit.artifacts import prepare_partial
from oodkit.training import main_first


class _Process:
    """The part of an accelerate state that ``main_first`` uses; records the barrier order."""

    def __init__(self, main: bool, order: list[str]) -> None:
        self.is_main_process, self.order = main, order

    @contextlib.contextmanager
    def main_process_first(self):
        self.order.append("enter main" if self.is_main_process else "enter other")
        yield


def test_main_first_discards_old_work_on_the_main_process_only(tmp_path: Path) -> None:
    out, order = tmp_path / "x", []
    old = out.with_name("x.partial")
    old.mkdir()
    (old / "partial.json").write_text(json.dumps({"params": "old"}))

    def open_partial(overwrite: bool):
        order.append(f"open overwrite={overwrite}")
        return prepare_partial(out, {"params": "new"}, overwrite)

    partial, found = main_first(_Process(True, order), open_partial, True)
    assert not found and json.loads((partial / "partial.json").read_text()) == {"params": "new"}
    (partial / "shard-000000000").mkdir()  # the main process's first shard
    again, found = main_first(_Process(False, order), open_partial, True)
    assert again == partial and found and (partial / "shard-000000000").is_dir()
    assert order == ["enter main", "open overwrite=True", "enter other", "open overwrite=False"]
    assert not list(partial.glob("*.tmp"))  # the state file went through a temporary file


RANKS = """
import sys
from accelerate import PartialState
from oodkit.errors import OodkitError
from oodkit.training import agree_on_main, from_main

state = PartialState(cpu=True)
rank = state.process_index
print("agree", agree_on_main(state, lambda: 10 + rank), flush=True)  # each computes; 0's wins

def rank1_fails():
    raise ValueError("only here")

if rank == 1:  # a failure off the main process does not decide
    print("agree", agree_on_main(state, rank1_fails), flush=True)
else:
    print("agree", agree_on_main(state, lambda: "main"), flush=True)
try:
    from_main(state, lambda: 1 / 0)  # a crash on the main process reaches every rank
except ZeroDivisionError as exc:
    print("main raised", type(exc).__name__, flush=True)
except RuntimeError as exc:
    print("told", exc, flush=True)
try:
    from_main(state, lambda: (_ for _ in ()).throw(OodkitError("bad input")))
except OodkitError as exc:
    print("error", exc, flush=True)
import torch.distributed as dist

dist.barrier()
dist.destroy_process_group()  # a group left to the interpreter's exit can abort it
"""


def test_ranks_take_the_main_process_s_result_error_or_crash(gloo_ranks) -> None:
    """Two real gloo ranks: ``agree_on_main`` returns rank 0's result on both (even where
    rank 1's own computation failed); ``from_main`` stops both ranks on a crash of rank 0
    (rank 0 re-raises it, rank 1 names it) and on its one-line error — no rank waits."""
    ranks = gloo_ranks(RANKS)
    assert [code for code, _, _ in ranks] == [0, 0], ranks
    lines = [out.strip().splitlines() for _, out, _ in ranks]
    assert lines[0] == [
        "agree 10",
        "agree main",
        "main raised ZeroDivisionError",
        "error bad input",
    ]
    assert lines[1] == [
        "agree 10",
        "agree main",
        "told the main process failed: ZeroDivisionError: division by zero",
        "error bad input",
    ]
