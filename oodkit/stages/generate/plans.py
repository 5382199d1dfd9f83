"""Per-sample choices for generation: start step, ID and OOD conditions, the leakage guard.

Every choice for a sample is drawn from a generator seeded by (seed, sample key), so it does
not depend on batching, process count or interruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oodkit.data.classes import prompt
from oodkit.errors import OodkitError
from oodkit.seeding import key_rng


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
    if not p.is_file():
        raise OodkitError(f"class list {p} does not exist")
    names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
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
) -> list[Plan]:
    """One plan per (key, source row).

    With ``prompts`` = (ID class names, OOD class names) conditions are prompts (``prompt``);
    otherwise class ids, the OOD one drawn among the other ``num_classes`` classes.
    """
    plans = []
    for key, row in keys:
        label = int(labels[row])
        rng = key_rng(seed, key, "plan")
        start = int(t_start) if t_start is not None else int(rng.integers(1, steps + 1))
        if prompts is not None:
            id_names, ood_names = prompts
            id_cond: int | str = prompt(id_names[label])
            ood: int | str | None = prompt(ood_names[int(rng.integers(len(ood_names)))])
        else:
            id_cond = label
            others = num_classes - (0 <= label < num_classes)  # every class but the label
            j = int(rng.integers(others)) if others else -1
            ood = None if j < 0 else j + (0 <= label <= j)  # the j-th of the other classes
        plans.append(
            Plan(
                key,
                row,
                source_ids[row],
                label,
                start,
                id_cond,
                ood if uses_ood else None,
            )
        )
    return plans
