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
