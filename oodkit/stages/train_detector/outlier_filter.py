"""``--outlier-filter`` / ``--outlier-weight``: which outliers a detector trains on, and how
often each is drawn, from the outliers' own diagnostics (docs/train.md).

A filter is a comma-separated list of rules, all of which a kept row satisfies:

- ``left`` / ``!left``: the judge of ``generate --judge`` saw the outlier leave its source
  class / stay in it;
- ``reached`` / ``!reached``: the judge put it in the class it was guided toward / did not;
- ``ssim<0.8``, ``psnr>=12``, …: a comparison (``<``, ``<=``, ``>``, ``>=``) of the row's
  SSIM or PSNR to its source.

A row whose verdict is unknown (no source class, no target the judge knows) satisfies neither
``left`` nor ``!left``. ``--outlier-weight dissimilarity`` draws each outlier with probability
proportional to 1 − SSIM to its source (at least ``MIN_WEIGHT``), so outliers that kept most
of their source are drawn less often.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oodkit.errors import OodkitError, brief

if TYPE_CHECKING:  # the options module imports this one: nothing heavy at import time
    import datasets
    import numpy as np

    from oodkit.schemas import Judged

VERDICTS = {"left": "left_source", "reached": "reached_target"}
MEASURES = ("ssim", "psnr")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_COMPARISON = re.compile(r"(ssim|psnr)\s*(<=|>=|<|>)\s*(\S+)")
MIN_WEIGHT = 0.01  # of a row whose SSIM is 1 or more: drawn rarely, never never


@dataclass(frozen=True)
class Rule:
    """One rule: a judge verdict (``negate``: its opposite) or a comparison of a measure."""

    name: str
    negate: bool = False
    op: str | None = None
    value: float | None = None

    @property
    def needs_judge(self) -> bool:
        return self.name in VERDICTS


def parse_filter(text: str | None) -> list[Rule]:
    """The rules of ``--outlier-filter`` (empty: keep every row); a bad rule is refused."""
    if text is None:
        return []
    rules = []
    for term in (t.strip() for t in text.split(",")):
        negate = term.startswith("!")
        name = term[1:].strip() if negate else term
        if name in VERDICTS:
            rules.append(Rule(name, negate))
            continue
        match = _COMPARISON.fullmatch(term)
        value = _number(match.group(3)) if match else None
        if match is None or value is None:
            raise OodkitError(
                f"--outlier-filter: {brief(term)} is not a rule (left, !left, reached, "
                "!reached, or ssim / psnr compared with <, <=, >, >= to a number)"
            )
        rules.append(Rule(match.group(1), op=match.group(2), value=value))
    return rules


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def keep_mask(rules: list[Rule], ds: datasets.Dataset, judged: Judged | None, ref: str):
    """The rows of one outliers table that satisfy every rule (bool array)."""
    import numpy as np

    keep = np.ones(len(ds), dtype=bool)
    for rule in rules:
        if rule.needs_judge:
            if judged is None:
                raise OodkitError(
                    f"--outlier-filter {'!' if rule.negate else ''}{rule.name}: --outliers "
                    f"{ref} holds no judge verdicts: generate it with --judge (judged before "
                    "verdicts were kept: regenerate with --overwrite)"
                )
            verdict = getattr(judged, VERDICTS[rule.name])
            keep &= verdict == (0 if rule.negate else 1)
        else:
            keep &= _OPS[rule.op](_measure(ds, rule.name, ref), rule.value)
    return keep


def diagnostics_of(ds: datasets.Dataset, judged: Judged | None, rows) -> dict[str, float | None]:
    """The generation's diagnostics over ``rows`` of an outliers table: mean SSIM to the
    source, and the shares the judge saw leave their source class / reach their target
    (over the rows whose verdict it could tell; None without a judge)."""
    import numpy as np

    from oodkit.artifacts import column

    def share(verdicts: np.ndarray) -> float | None:
        known = verdicts[rows] >= 0
        return float((verdicts[rows][known] == 1).mean()) if known.any() else None

    ssim = np.zeros(0)
    if "ssim" in ds.column_names:
        ssim = np.asarray(column(ds, "ssim"), dtype=np.float64)[rows]
        ssim = ssim[~np.isnan(ssim)]
    return {
        "mean_ssim": float(ssim.mean()) if len(ssim) else None,
        "left_source": share(judged.left_source) if judged is not None else None,
        "reached_target": share(judged.reached_target) if judged is not None else None,
    }


def _measure(ds: datasets.Dataset, name: str, ref: str) -> np.ndarray:
    import numpy as np

    from oodkit.artifacts import column

    if name not in ds.column_names:
        raise OodkitError(f"--outliers {ref} has no {name} column to filter or weight on")
    values = np.asarray(column(ds, name), dtype=np.float64)  # a missing value reads as NaN
    unknown = int(np.isnan(values).sum())
    if unknown:
        raise OodkitError(
            f"--outliers {ref}: {unknown} row(s) have no {name} value to filter or weight on"
        )
    return values


def weights_of(kind: str, ds: datasets.Dataset, ref: str) -> np.ndarray | None:
    """Each row's drawing weight under ``--outlier-weight`` (None: uniform)."""
    import numpy as np

    if kind == "uniform":
        return None
    if kind != "dissimilarity":  # options not resolved (None) or a new kind not handled
        raise ValueError(f"unknown outlier weighting {kind!r}")
    return np.maximum(1.0 - _measure(ds, "ssim", ref), MIN_WEIGHT)
