"""Registries of the methods each stage offers, in the spirit of timm's ``register_model``.

A registration names a method, says in one line what it is, what it needs and which options
it reads, and points at its implementation as ``"module:attribute"``. The implementation is
imported only when the method runs, so the command line can build its ``--method`` help and
validate names (and ``oodkit info --methods`` can list everything) without importing torch.

Adding a method = one implementation module + one ``register`` call below.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oodkit.errors import OodkitError


@dataclass(frozen=True)
class Method:
    """One registered method of a stage."""

    stage: str
    name: str
    summary: str
    target: str  # "package.module:attribute" of the implementation
    needs: tuple[str, ...] = ()  # what the stage must prepare for it
    options: tuple[str, ...] = ()  # the stage options it reads (recorded in the manifest)
    defaults: dict[str, Any] = field(default_factory=dict)  # per-method option defaults

    def load(self) -> Any:
        """The implementation (imported on first use)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


class Registry:
    """Methods of one stage by name, in registration order."""

    def __init__(self, stage: str, option: str = "--method") -> None:
        self.stage, self.option = stage, option
        self._methods: dict[str, Method] = {}

    def register(self, name: str, target: str, summary: str, **kw: Any) -> Method:
        if name in self._methods:
            raise ValueError(f"{self.stage}: method {name!r} is registered twice")
        method = Method(self.stage, name, summary, target, **kw)
        self._methods[name] = method
        return method

    def names(self) -> list[str]:
        return list(self._methods)

    def __iter__(self):
        return iter(self._methods.values())

    def help(self, names: Sequence[str] | None = None) -> str:
        """``a, b or c`` (all methods, or ``names``) for help texts and messages."""
        names = list(self.names() if names is None else names)
        return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]

    def needing(self, need: str) -> list[str]:
        """Names of the methods that need ``need``."""
        return [m.name for m in self if need in m.needs]

    def defaults_help(self, option: str) -> str:
        """``knn 50, sd-vote 10``: the per-method defaults of ``option``."""
        return ", ".join(f"{m.name} {m.defaults[option]}" for m in self if option in m.defaults)

    def get(self, name: str) -> Method:
        if name not in self._methods:
            raise OodkitError(
                f"{self.option} must be one of {', '.join(self._methods)}, got {name!r}"
            )
        return self._methods[name]

    def parse(self, text: str | Sequence[str]) -> list[Method]:
        """``"energy,knn"`` or a list → methods (order kept, repeats dropped)."""
        items = text.split(",") if isinstance(text, str) else list(text)
        names = list(dict.fromkeys(m.strip() for m in items if m.strip()))
        if not names:
            raise OodkitError(f"{self.option}: no method given ({', '.join(self._methods)})")
        return [self.get(n) for n in names]


SCORE = Registry("score")
DETECTOR_LOSS = Registry("train detector", option="--loss")
GENERATION = Registry("generate")
PSEUDO_LABEL = Registry("pseudo-label")
REGISTRIES = (PSEUDO_LABEL, GENERATION, DETECTOR_LOSS, SCORE)

# --- score: id_score per sample, higher = in-distribution (docs/methods.md §1, §5) -----------
_S = "oodkit.stages.score.methods"
SCORE.register(
    "msp", f"{_S}:msp", "maximum softmax probability", needs=("logits",), options=("temperature",)
)
SCORE.register(
    "energy",
    f"{_S}:energy",
    "T·logsumexp(z/T) of the logits (energy score)",
    needs=("logits",),
    options=("temperature",),
)
SCORE.register("maxlogit", f"{_S}:maxlogit", "largest logit", needs=("logits",))
SCORE.register(
    "knn",
    f"{_S}:knn",
    "−squared distance to the k-th nearest L2-normalised ID-train feature (OpenOOD)",
    needs=("features", "id_train"),
    options=("k",),
    defaults={"k": 50},
)
SCORE.register(
    "sd-vote",
    f"{_S}:sd_vote",
    "−(kNN distance sum to ID train + α·outliers among the k nearest of ID ∪ outliers)",
    needs=("features", "id_train", "outliers"),
    options=("k", "alpha"),
    defaults={"k": 10},
)
SCORE.register(
    "diffguard",
    "oodkit.stages.diffguard.run:score_diffguard",
    "DiffGuard: similarity of each image to its re-synthesis toward the predicted label",
    needs=("model",),
)

# --- train detector: training objectives (docs/methods.md §3–§5) ----------------------------
_L = "oodkit.stages.train_detector.objectives"
DETECTOR_LOSS.register("ce", f"{_L}:CrossEntropy", "cross-entropy on ID images only")
DETECTOR_LOSS.register(
    "oe",
    f"{_L}:OutlierExposure",
    "CE + β·cross-entropy to uniform on outliers",
    needs=("outliers",),
)
DETECTOR_LOSS.register(
    "energy",
    f"{_L}:EnergyMargin",
    "CE + squared-hinge energy margins on ID and outliers (Liu et al. 2020)",
    needs=("outliers",),
)
DETECTOR_LOSS.register(
    "sona",
    f"{_L}:Sona",
    "CE + β·OE + CLUB bound between outlier and source features (SONA)",
    needs=("outliers", "source_id"),
)
DETECTOR_LOSS.register(
    "sd",
    f"{_L}:ThreeHead",
    "binary + in-class + out-class heads on ID and SD outliers",
    needs=("outliers", "source_label"),
)

# --- generate: guided partial DDIM from ID images (docs/methods.md §3, §5) -------------------
_G = "oodkit.stages.generate.methods"
_SONA_OPTIONS = (
    "steps",
    "t_start",
    "scale",
    "lam",
    "ood_condition",
    "momentum_scale",
    "momentum_beta",
    "warmup",
)
GENERATION.register(
    "sona",
    f"{_G}:Sona",
    "SONA region-masked guidance ε(z) + s·Δ(ψ_ID, ψ_OOD)",
    options=_SONA_OPTIONS,
    defaults={"steps": 50, "scale": 10.0},
)
GENERATION.register(
    "sd",
    f"{_G}:WrongClass",
    "wrong-class CFG (1 + w)·ε(x, c_r) − w·ε(x) (class-conditional models)",
    needs=("class-conditional",),
    options=("steps", "t_start", "w"),
    defaults={"steps": 100, "t_start": 100},
)
GENERATION.register(
    "global",
    f"{_G}:Global",
    "unmasked OOD guidance ε(z) + s·ψ_OOD (ablation)",
    options=("steps", "t_start", "scale", "ood_condition"),
    defaults={"steps": 50, "scale": 10.0},
)
GENERATION.register(
    "reconstruct",
    f"{_G}:Reconstruct",
    "ID reconstructions: VAE round trips (--mode vae) or regeneration ε(z) + s·ψ_ID",
    options=("mode", "steps", "t_start", "scale"),
    defaults={"steps": 50, "scale": 1.0},
)

# --- pseudo-label: clusters without labels (docs/methods.md §6) -----------------------------
_P = "oodkit.stages.pseudo_label"
PSEUDO_LABEL.register(
    "scan",
    f"{_P}.scan:cluster",
    "SCAN: neighbour-consistent clustering heads, then self-labelling",
)
PSEUDO_LABEL.register("kmeans", f"{_P}.kmeans:cluster", "k-means on the same features")
