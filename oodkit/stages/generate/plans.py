"""Per-sample choices for generation: start step, ID and OOD conditions, the leakage guard.

Every choice for a sample is drawn from a generator seeded by (seed, sample key), so it does
not depend on batching, process count or interruption.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oodkit.data.classes import prompt
from oodkit.errors import OodkitError, first_line
from oodkit.seeding import key_rng

Memo = Callable[[str, str, Callable[[], np.ndarray]], np.ndarray]


@dataclass
class Plan:
    """What one outlier will be made from."""

    key: str
    row: int  # row of the source in the ID table
    source_id: str
    source_label: int
    start: int  # DDIM steps of denoising (1..steps; 0 = none, VAE round trips)
    id_cond: int | str
    ood_cond: int | str | None  # OOD class/prompt (sona, global), c_r (sd), None (reconstruct)


def read_class_list(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():  # also refuses a FIFO, whose read would block
        raise OodkitError(f"class list {p} does not exist or is not a regular file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise OodkitError(f"class list {p} cannot be read: {first_line(exc)}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise OodkitError(f"class list {p} is empty")
    return names


def check_leakage(ood_names: Sequence[str], forbidden: Sequence[str], allow: bool) -> list[str]:
    """OOD prompt classes that coincide with ID (or OOD-test) classes; refused unless allowed."""
    bad = sorted(
        {n for n in ood_names if n.strip().lower() in {f.strip().lower() for f in forbidden}}
    )
    if bad and not allow:
        raise OodkitError(
            f"{len(bad)} OOD class name(s) coincide with ID or OOD-test classes (e.g. {bad[0]!r}); "
            "remove them or pass --allow-leakage"
        )
    return bad


def draw_plans(
    keys: Sequence[str], choices: np.ndarray, *, seed: int, steps: int, t_start: int | None
) -> np.ndarray:
    """Each sample's random choices, [N, 2] int64: its start step, and its OOD draw (an index
    below ``choices[i]``; -1 where there is nothing to draw), from ``key_rng(seed, key)``."""
    out = np.empty((len(keys), 2), dtype=np.int64)
    for i, (key, m) in enumerate(zip(keys, choices.tolist(), strict=True)):
        rng = key_rng(seed, key, "plan")
        out[i, 0] = int(t_start) if t_start is not None else int(rng.integers(1, steps + 1))
        out[i, 1] = int(rng.integers(m)) if m else -1
    return out


def plan_samples(
    keys: Sequence[tuple[str, int]],
    source_ids: Sequence[str],
    labels: Sequence[int],
    *,
    uses_ood: bool,
    seed: int,
    steps: int,
    t_start: int | None,
    num_classes: int,
    prompts: tuple[Sequence[str], Sequence[str]] | None = None,
    memo: Memo | None = None,
) -> list[Plan]:
    """One plan per (key, source row).

    With ``prompts`` = (ID class names, OOD class names) conditions are prompts (``prompt``);
    otherwise class ids, the OOD one drawn among the other ``num_classes`` classes. ``memo``
    (e.g. :meth:`~oodkit.artifacts.ShardedWriter.memo`) keeps the draws of a long run, so a
    resume or another rank loads them instead of drawing them again.
    """
    names = [k for k, _ in keys]
    label_of = np.asarray([int(labels[row]) for _, row in keys], dtype=np.int64)
    if prompts is not None:
        choices = np.full(len(keys), len(prompts[1]), dtype=np.int64)
    else:  # every class but the label
        choices = num_classes - ((label_of >= 0) & (label_of < num_classes)).astype(np.int64)

    def draw() -> np.ndarray:
        return draw_plans(names, choices, seed=seed, steps=steps, t_start=t_start)

    if memo is None:
        drawn = draw()
    else:
        digest = hashlib.sha256(  # "plans-v1": the derivation in draw_plans
            json.dumps(["plans-v1", seed, steps, t_start]).encode()
            + choices.tobytes()
            + "\n".join(names).encode()
        ).hexdigest()
        drawn = memo("plans", digest, draw)
    plans = []
    for (key, row), label, (start, j) in zip(keys, label_of.tolist(), drawn.tolist(), strict=True):
        if prompts is not None:
            id_names, ood_names = prompts
            id_cond: int | str = prompt(id_names[label])
            ood: int | str | None = prompt(ood_names[j])
        else:
            id_cond = label
            ood = None if j < 0 else j + (0 <= label <= j)  # the j-th of the other classes
        plans.append(
            Plan(key, row, source_ids[row], label, start, id_cond, ood if uses_ood else None)
        )
    return plans
