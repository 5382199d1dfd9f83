"""Registries of the methods each stage offers, in the spirit of timm's ``register_model``.

A registration names a method, says in one line what it is, what it needs, which options
it reads with its own defaults, and points at its implementation as ``"module:attribute"``.
An option is declared once per registry (``Registry.param``: type, help, domain); the
stage's options dataclass, its ``--help``, ``--config`` and ``oodkit info --methods`` are
built from these declarations, and an option given for a method that is not run is refused.
The implementation is imported only when the method runs, so the command line can build its
help and validate names without importing torch.

Adding a method = one implementation module + one ``register`` call below (and a ``param``
for each option no other method declared).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oodkit.errors import OodkitError
from oodkit.options import SEED_MAX, option


@dataclass(frozen=True)
class Param:
    """An option of a stage's methods, declared once: its type, help and domain (the keyword
    arguments of ``oodkit.options.option``: minimum, maximum, above, below, choices, flags,
    role). Its default is each method's own."""

    type: Any
    help: str
    domain: dict[str, Any] = field(default_factory=dict)


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
        self.params: dict[str, Param] = {}

    def param(self, name: str, type_: Any, help: str, **domain: Any) -> None:
        """Declare an option that methods of this registry read."""
        if name in self.params:
            raise ValueError(f"{self.stage}: option {name!r} is declared twice")
        self.params[name] = Param(type_, help, domain)

    def register(
        self,
        name: str,
        target: str,
        summary: str,
        *,
        options: Mapping[str, Any] | Sequence[str] = (),
        **kw: Any,
    ) -> Method:
        """Register a method; ``options`` maps each option it reads to its default (None: no
        fixed default, the method decides), or lists the names (defaults in ``defaults``)."""
        if name in self._methods:
            raise ValueError(f"{self.stage}: method {name!r} is registered twice")
        if isinstance(options, Mapping):
            kw["defaults"] = {k: v for k, v in options.items() if v is not None}
        undeclared = [o for o in options if self.params and o not in self.params]
        if undeclared:
            raise ValueError(f"{self.stage}: option {undeclared[0]!r} is not declared")
        method = Method(self.stage, name, summary, target, options=tuple(options), **kw)
        self._methods[name] = method
        return method

    def readers(self, option: str) -> list[Method]:
        """The methods that read ``option``."""
        return [m for m in self if option in m.options]

    def resolve(self, method: Method, values: Mapping[str, Any]) -> dict[str, Any]:
        """The options ``method`` reads: the given value, else the method's default."""
        return {
            name: values[name] if values.get(name) is not None else method.defaults.get(name)
            for name in method.options
        }

    def unread(self, chosen: Iterable[Method], given: Iterable[str]) -> str | None:
        """The first of the ``given`` options that none of the ``chosen`` methods reads."""
        read = {o for m in chosen for o in m.options}
        return next((name for name in given if name in self.params and name not in read), None)

    def check_read(self, chosen: Sequence[Method], values: Mapping[str, Any]) -> None:
        """Refuse an option given (not None in ``values``) that none of ``chosen`` reads."""
        given = [name for name in self.params if values.get(name) is not None]
        name = self.unread(chosen, given)
        if name is not None:
            owners = ", ".join(m.name for m in self.readers(name))
            names = ",".join(m.name for m in chosen)
            flags = self.params[name].domain.get("flags") or ("--" + name.replace("_", "-"),)
            flag = flags[0].split("/")[0]
            raise OodkitError(f"{flag} is an option of {owners}, not of {self.option} {names}")

    def option_fields(self) -> list[tuple[str, Any, Any]]:
        """Dataclass fields of the declared options: ``None`` ("not given", each method
        resolves it to its own default), help naming who reads it with their defaults."""
        fields = []
        for name, p in self.params.items():
            text = f"{p.help.rstrip('.')} ({self.readers_help(name)})."
            fields.append((name, p.type | None, option(None, text, **p.domain)))
        return fields

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

    def readers_help(self, option: str) -> str:
        """``knn 50, sd-vote 10, diffguard``: who reads ``option``, with their defaults
        (``oe, sd: uniform`` when several readers share one)."""
        readers = self.readers(option)
        shared = {repr(m.defaults.get(option)) for m in readers}
        if len(readers) > 1 and len(shared) == 1 and option in readers[0].defaults:
            names = ", ".join(m.name for m in readers)
            return f"{names}: {_shown(readers[0].defaults[option])}"
        return ", ".join(
            f"{m.name} {_shown(m.defaults[option])}" if option in m.defaults else m.name
            for m in readers
        )

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


def _shown(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else f"{value}"


SCORE = Registry("score")
DETECTOR_LOSS = Registry("train detector", option="--loss")
GENERATION = Registry("generate")
PSEUDO_LABEL = Registry("pseudo-label")
REGISTRIES = (PSEUDO_LABEL, GENERATION, DETECTOR_LOSS, SCORE)

# --- score: id_score per sample, higher = in-distribution (docs/methods.md §1, §5; docs/score.md)
# needs: "logits" / "features" (of each scored set), "head" (the classifier layer, features →
# logits), "network" (images → logits, differentiable), "id_train" / "id_val" (the set a method
# is fitted on), "labels" (its class labels), "outliers", "model" (a diffusion model).
# Defaults of the pytorch-ood methods: OpenOOD v1.5's configs/postprocessors/*.yml.
_S = "oodkit.stages.score.methods"
_A = "oodkit.stages.score.adapted"
SCORE.param("temperature", float, "Temperature T of softmax / energy.", above=0)
SCORE.param("k", int, "Neighbours.", minimum=1)
SCORE.param("alpha", float, "sd-vote: weight of the outliers among the k nearest.")
SCORE.param("outliers", str, "The detector's training outliers.", role="input")
SCORE.param(
    "percentile",
    float,
    "ReAct: clip at this percentile of ID-val activations; ASH: prune each sample's "
    "activations below it.",
    above=0,
    below=100,
)
SCORE.param("ash_variant", str, "ASH variant.", choices=("ash-b", "ash-p", "ash-s"))
SCORE.param("dice_p", float, "DICE: percent of weight contributions masked.", minimum=0, below=100)
SCORE.param(
    "vim_dim",
    int,
    "ViM: principal subspace dimension, below the feature dimension (default: 256, OpenOOD; "
    "half the feature dimension where that is smaller, as pytorch-ood)",
    minimum=1,
)
SCORE.param("gen_gamma", float, "GEN: exponent γ.", above=0)
SCORE.param("gen_m", int, "GEN: top-M probabilities used.", minimum=1)
SCORE.param("odin_eps", float, "ODIN: input perturbation ε (pixel units).", minimum=0)
SCORE.param("openmax_tailsize", int, "OpenMax: Weibull tail size per class.", minimum=2)
SCORE.param("openmax_alpha", int, "OpenMax: top classes revised.", minimum=1)
SCORE.param(
    "nnguide_alpha",
    float,
    "NNGuide: share of ID train in the guide bank (evenly spaced rows, at least k)",
    above=0,
    maximum=1,
)

SCORE.register(
    "msp",
    f"{_S}:msp",
    "maximum softmax probability",
    needs=("logits",),
    options={"temperature": 1.0},
)
SCORE.register(
    "energy",
    f"{_S}:energy",
    "T·logsumexp(z/T) of the logits (energy score)",
    needs=("logits",),
    options={"temperature": 1.0},
)
SCORE.register("maxlogit", f"{_S}:maxlogit", "largest logit", needs=("logits",))
SCORE.register(
    "knn",
    f"{_S}:knn",
    "−squared distance to the k-th nearest L2-normalised ID-train feature (OpenOOD)",
    needs=("features", "id_train"),
    options={"k": 50},
)
SCORE.register(
    "sd-vote",
    f"{_S}:sd_vote",
    "−(kNN distance sum to ID train + α·outliers among the k nearest of ID ∪ outliers)",
    needs=("features", "id_train", "outliers"),
    options={"k": 10, "alpha": 0.3, "outliers": None},
)
# --- through pytorch-ood's detectors (oodkit.stages.score.adapted) ---------------------------
SCORE.register(
    "entropy", f"{_A}:entropy", "−entropy of the softmax (pytorch-ood Entropy)", needs=("logits",)
)
SCORE.register(
    "gen",
    f"{_A}:gen",
    "generalized entropy of the top-M probabilities (GEN, CVPR 2023)",
    needs=("logits",),
    options={"gen_gamma": 0.1, "gen_m": 100},
)
SCORE.register(
    "mahalanobis",
    f"{_A}:mahalanobis",
    "−min class Mahalanobis distance, shared covariance of ID-train features (MDS)",
    needs=("features", "id_train", "labels"),
)
SCORE.register(
    "rmd",
    f"{_A}:rmd",
    "relative Mahalanobis: class distance − distance to one ID-train Gaussian (RMDS)",
    needs=("features", "id_train", "labels"),
)
SCORE.register(
    "vim",
    f"{_A}:vim",
    "ViM: energy − α·norm of the feature residual off the ID-train principal subspace",
    needs=("features", "head", "id_train"),
    options={"vim_dim": None},
)
SCORE.register(
    "react",
    f"{_A}:react",
    "ReAct: energy of the head on features clipped at an ID-val percentile",
    needs=("features", "head", "id_val"),
    options={"percentile": 90.0},
)
SCORE.register(
    "ash",
    f"{_A}:ash",
    "ASH: energy of the head on pruned (and binarised / rescaled) features",
    needs=("features", "head"),
    options={"percentile": 90.0, "ash_variant": "ash-b"},
)
SCORE.register(
    "dice",
    f"{_A}:dice",
    "DICE: energy of the head with its smallest ID-train weight contributions masked",
    needs=("features", "head", "id_train"),
    options={"dice_p": 90.0},
)
SCORE.register(
    "she",
    f"{_A}:she",
    "SHE: inner product with the predicted class's mean correct ID-train feature",
    needs=("features", "head", "id_train", "labels"),
)
SCORE.register(
    "nnguide",
    f"{_A}:nnguide",
    "NNGuide: energy × mean cosine to the k nearest energy-scaled ID-train features",
    needs=("features", "head", "id_train"),
    options={"k": 100, "nnguide_alpha": 0.01},
)
SCORE.register(
    "klm",
    f"{_A}:klm",
    "KL matching: −min KL divergence to the mean ID-val softmax of each predicted class",
    needs=("logits", "id_val"),
)
SCORE.register(
    "openmax",
    f"{_A}:openmax",
    "OpenMax: −probability of the unknown class (Weibull fit on ID-train logits)",
    needs=("logits", "id_train", "labels"),
    options={"openmax_tailsize": 20, "openmax_alpha": 3},
)
SCORE.register(
    "gradnorm",
    f"{_A}:gradnorm",
    "GradNorm: L1 norm of ∂KL(uniform ‖ softmax)/∂W of the classifier layer",
    needs=("features", "head"),
    options={"temperature": 1.0},
)
SCORE.register(
    "odin",
    f"{_A}:odin",
    "ODIN: max softmax at temperature T of the input perturbed by ε",
    needs=("network",),
    options={"temperature": 1000.0, "odin_eps": 0.0014},
)
# --- DiffGuard (docs/diffguard.md), its own stage ----------------------------------------------
_DG = {
    "model": ("Diffusion model (folder, artifact or Hub id)", str, None, {"role": "input"}),
    "preset": (
        "The official recipe, gdm (ImageNet exp6.1: ADM, classifier guidance) or ldm (exp2.25: "
        "cin256-v2, CFG); options given on the command line win",
        str,
        None,
        {},
    ),
    "guidance": ("Classifier (any model) or cfg", str, "classifier", {}),
    "steps": ("DDIM steps (default: classifier 100, cfg 25)", int, None, {"minimum": 1}),
    "stop": ("Inversion depth, aes or a fraction (default: classifier aes, cfg 1)", str, None, {}),
    "aes_psnr": (
        "AES: stop below this PSNR, 20·log10(255/√MSE) on [−1, 1] (0: off)",
        float,
        48.5,
        {"minimum": 0},
    ),
    "aes_gmsd": ("AES: stop below this 1 − GMSD (0: off)", float, None, {"minimum": 0}),
    "aes_dists": (
        "AES: stop below this 1 − DISTS (official 0.38; local weights; 0: off)",
        float,
        None,
        {"minimum": 0},
    ),
    "aes_clamp": (
        "AES: clamp x_t to [0, 1] before pixel similarities (official: not)",
        bool,
        True,
        {"flags": ("--aes-clamp/--no-aes-clamp",)},
    ),
    "inversion_eps": (
        "Inversion ε at the target timestep from the clean image (target, diffusers) or at the "
        "source timestep from the image taken as x at t = 0 (source, official GDM)",
        str,
        "target",
        {},
    ),
    "clip_x0": (
        "Clip x̂₀ to [−1, 1] in inversion and both chains, ε re-derived (official GDM; pixel "
        "models)",
        bool,
        False,
        {"flags": ("--clip-x0/--no-clip-x0",)},
    ),
    "restart": (
        "Denoise from where inversion stopped (exact) or one level above (official, GDM's "
        "forback_skip_diff 3)",
        str,
        "exact",
        {},
    ),
    "geometry": (
        "Resize (the model's square, resized for the classifier), classifier (its own resize "
        "and crop, upsampled for the model; official GDM) or model (the model's square as the "
        "classifier's input; official LDM)",
        str,
        "resize",
        {},
    ),
    "perceptual_weights": (
        "Folder of VGG16 / DISTS / LPIPS weight files (default: torch hub cache)",
        str,
        None,
        {"role": "input"},
    ),
    "max_invert": (
        "AES: deepest inversion, fraction of steps",
        float,
        0.9,
        {"above": 0, "maximum": 1},
    ),
    "distance": ("Comma list of distances; one artifact each", str, "logits-l1", {}),
    "reference": (
        "Compare with the unguided synthesis (unguided) or the input",
        str,
        "unguided",
        {},
    ),
    "classifier_scale": ("Classifier guidance scale", float, 3.0, {"minimum": 0}),
    "cutouts": ("Cut-outs per step (classifier guidance)", int, 8, {"minimum": 1}),
    "blend": (
        "The classifier sees f·x̂₀ + (1 − f)·x_t, not x̂₀",
        bool,
        True,
        {"flags": ("--blend/--no-blend",)},
    ),
    "cfg_scale": ("CFG scale", float, 10.0, {"minimum": 0}),
    "cam": (
        "cfg: guide only where Grad-CAM > --cam-cut (off: everywhere)",
        bool,
        True,
        {"flags": ("--cam/--no-cam",)},
    ),
    "cam_cut": ("Grad-CAM mask threshold", float, 0.3, {"minimum": 0, "below": 1}),
    "cam_resize": (
        "Cut the CAM at the image size, then nearest to the model's grid (image, official) or "
        "nearest to the grid, then cut (grid)",
        str,
        "image",
        {"choices": ("image", "grid")},
    ),
    "oracle": ("analysis: true ID labels, random OOD labels", bool, False, {}),
    "combine_with": ("Post-hoc scores artifact to combine with", str, None, {"role": "input"}),
    "trust_below": (
        "combination: trust the baseline below this ID-val quantile (under 0.05, so the "
        "95 %-TPR threshold lies where DiffGuard decides)",
        float,
        0.025,
        {"minimum": 0, "maximum": 1},
    ),
    "trust_above": (
        "combination: trust the baseline above this ID-val quantile",
        float,
        0.975,
        {"minimum": 0, "maximum": 1},
    ),
    "diffusion_batch": ("Samples per diffusion batch", int, 16, {"minimum": 1}),
    "dtype": (
        "Model precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16",
        str,
        "auto",
        {},
    ),
    "seed": ("Seed of cut-outs and oracle labels", int, 0, {"minimum": 0, "maximum": SEED_MAX}),
    "save_syntheses": (
        "Preview of N ID and N OOD syntheses",
        int,
        0,
        {"role": "run", "minimum": 0},
    ),
    "shard_size": ("Samples per resumable shard", int, 256, {"role": "run", "minimum": 1}),
}
for _name, (_help, _type, _default, _domain) in _DG.items():
    SCORE.param(_name, _type, _help, **_domain)
SCORE.register(
    "diffguard",
    "oodkit.stages.diffguard.run:score_diffguard",
    "DiffGuard: similarity of each image to its re-synthesis toward the predicted label",
    needs=("model",),
    options={name: spec[2] for name, spec in _DG.items()},
)

# --- train detector: training objectives (docs/methods.md §3–§5) ----------------------------
_L = "oodkit.stages.train_detector.objectives"
OUTLIER_WEIGHTS = ("uniform", "dissimilarity")
DETECTOR_LOSS.param(
    "outlier_batch_size", int, "Outliers per step (default: batch size).", minimum=1
)
DETECTOR_LOSS.param(
    "outlier_filter",
    str,
    "Keep only outliers that satisfy every rule: left, !left, reached, !reached (the "
    "generation judge's verdicts), ssim<X, psnr>=X, … (comma-separated).",
)
DETECTOR_LOSS.param(
    "outlier_weight",
    str,
    "Draw outliers uniformly, or by dissimilarity (∝ 1 − SSIM to their source).",
    choices=OUTLIER_WEIGHTS,
)
DETECTOR_LOSS.param("beta", float, "OE weight β.", minimum=0)
DETECTOR_LOSS.param("club_weight", float, "CLUB weight.", minimum=0)
DETECTOR_LOSS.param("club_steps", int, "CLUB estimator steps per batch.", minimum=0)
DETECTOR_LOSS.param("club_lr", float, "CLUB estimator learning rate.", above=0)
DETECTOR_LOSS.param("sd_lambda", float, "Out-class head weight λ.", minimum=0)
DETECTOR_LOSS.param("energy_weight", float, "Energy-margin weight.", minimum=0)
DETECTOR_LOSS.param("m_in", float, "ID energy margin.")
DETECTOR_LOSS.param("m_out", float, "Outlier energy margin.")
_OUTLIERS = {"outlier_batch_size": None, "outlier_filter": None, "outlier_weight": "uniform"}
DETECTOR_LOSS.register("ce", f"{_L}:CrossEntropy", "cross-entropy on ID images only")
DETECTOR_LOSS.register(
    "oe",
    f"{_L}:OutlierExposure",
    "CE + β·cross-entropy to uniform on outliers",
    needs=("outliers",),
    options={**_OUTLIERS, "beta": 0.5},
)
DETECTOR_LOSS.register(
    "energy",
    f"{_L}:EnergyMargin",
    "CE + squared-hinge energy margins on ID and outliers (Liu et al. 2020)",
    needs=("outliers",),
    options={**_OUTLIERS, "energy_weight": 0.1, "m_in": -25.0, "m_out": -7.0},
)
DETECTOR_LOSS.register(
    "sona",
    f"{_L}:Sona",
    "CE + β·OE + CLUB bound between outlier and source features (SONA)",
    needs=("outliers", "source_id"),
    options={**_OUTLIERS, "beta": 0.5, "club_weight": 1.0, "club_steps": 5, "club_lr": 1e-4},
)
DETECTOR_LOSS.register(
    "sd",
    f"{_L}:ThreeHead",
    "binary + in-class + out-class heads on ID and SD outliers",
    needs=("outliers", "source_label"),
    options={**_OUTLIERS, "sd_lambda": 0.3},
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
