"""Generation plans: each sample's own draws, drawn once per run and reloaded on resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from oodkit.artifacts import ShardedWriter
from oodkit.data.classes import prompt
from oodkit.seeding import key_rng
from oodkit.stages.generate import plans as P

KEYS = [(f"img{r}#{k}", r) for r in range(30) for k in range(2)]
SOURCES = [f"img{r}" for r in range(30)]
LABELS = [r % 4 for r in range(30)]


def _hand(key: str, label: int, steps: int, choices: int) -> tuple[int, int]:
    """The draws written out: start in 1..steps, then the j-th of ``choices`` options."""
    rng = key_rng(7, key, "plan")
    return int(rng.integers(1, steps + 1)), int(rng.integers(choices))


def _plans(memo=None, seed: int = 7, prompts=None, keys=KEYS):
    return P.plan_samples(
        keys,
        SOURCES,
        LABELS,
        uses_ood=True,
        seed=seed,
        steps=10,
        t_start=None,
        num_classes=4,
        prompts=prompts,
        memo=memo,
    )


def test_plans_are_each_sample_s_own_draws() -> None:
    for p in _plans():
        start, j = _hand(p.key, p.source_label, 10, 3)
        assert (p.start, p.id_cond, p.source_id) == (start, p.source_label, SOURCES[p.row])
        assert p.ood_cond == [c for c in range(4) if c != p.source_label][j]
    names = (["a", "b", "c", "d"], ["x", "y"])
    for p in _plans(prompts=names):
        start, j = _hand(p.key, p.source_label, 10, 2)
        assert (p.start, p.id_cond, p.ood_cond) == (
            start,
            prompt("abcd"[p.source_label]),
            prompt("xy"[j]),
        )
    assert _plans(keys=KEYS[5:9]) == _plans()[5:9]  # a sample's plan ignores the others


def _writer(tmp_path: Path) -> ShardedWriter:
    keys = [k for k, _ in KEYS]
    return ShardedWriter(tmp_path / "out", kind="outliers", keys=keys, params={"seed": 7})


def test_plans_are_drawn_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    draw = P.draw_plans
    monkeypatch.setattr(P, "draw_plans", lambda *a, **k: calls.append(1) or draw(*a, **k))
    first = _plans(_writer(tmp_path).memo)
    assert first == _plans() and len(calls) == 2
    assert _plans(_writer(tmp_path).memo) == first and len(calls) == 2  # a resume loads them
    assert _plans(_writer(tmp_path).memo, seed=8) == _plans(seed=8)  # other inputs: drawn again
    assert len(calls) == 4
    stored = tmp_path / "out.partial" / "plans.npz"
    stored.write_bytes(stored.read_bytes()[:100])  # cut off mid-write
    assert _plans(_writer(tmp_path).memo) == first and len(calls) == 5
