"""DiffGuard's recipe: options resolved (preset, per-guidance defaults) and checked against the
model, the detector and the benchmark before anything loads."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from oodkit.errors import OodkitError
from oodkit.options import comma_choices
from oodkit.scoring.options import ScoreOptions
from oodkit.similarity import DISTANCES, PERCEPTUAL

GUIDANCES = ("classifier", "cfg")
REFERENCES = ("unguided", "input")
INVERSION_EPS = ("target", "source")
RESTARTS = {"exact": 0, "official": 1}  # levels above where inversion stopped
GEOMETRIES = ("resize", "classifier", "model")
STEPS = {"classifier": 100, "cfg": 25}  # official: 100-step GDM, 25-step LDM
STOPS = {"classifier": "aes", "cfg": "1"}  # official: AES for GDM, full inversion for LDM


@dataclass
class Recipe:
    """The resolved DiffGuard settings of a run (``options``: every option, preset applied)."""

    options: ScoreOptions
    guidance: str
    steps: int
    stop: str  # "aes" or a fraction
    max_steps: int  # the fixed depth, or AES's cap
    distances: list[str]


def _stop_depth(stop: str, o: ScoreOptions, steps: int) -> int:
    if stop == "aes":
        if o.aes_psnr is None and o.aes_gmsd is None and o.aes_dists is None:
            raise OodkitError("--stop aes needs --aes-psnr, --aes-gmsd and/or --aes-dists")
        return max(1, math.floor(o.max_invert * steps + 1e-9))
    try:
        fraction = float(stop)
    except ValueError:
        raise OodkitError(f"--stop must be aes or a fraction in (0, 1], got {stop!r}") from None
    if not 0 < fraction <= 1:
        raise OodkitError(f"--stop must be aes or a fraction in (0, 1], got {stop!r}")
    return max(1, round(fraction * steps))


def resolve(o: ScoreOptions) -> Recipe:
    """The run's settings: the preset and per-guidance defaults applied, every value
    checked."""
    from oodkit.stages.diffguard.presets import apply_preset

    if o.model is None:
        raise OodkitError("--method diffguard needs --model (a diffusion model)")
    o = apply_preset(o)
    for flag, value, allowed in (
        ("--guidance", o.guidance, GUIDANCES),
        ("--reference", o.reference, REFERENCES),
        ("--inversion-eps", o.inversion_eps, INVERSION_EPS),
        ("--restart", o.restart, tuple(RESTARTS)),
        ("--geometry", o.geometry, GEOMETRIES),
    ):
        if value not in allowed:
            raise OodkitError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    rules = {"aes_psnr": o.aes_psnr, "aes_gmsd": o.aes_gmsd, "aes_dists": o.aes_dists}
    # 0 switches a rule off (e.g. a preset's DISTS rule); ranges: the options' domains
    o = dataclasses.replace(o, **{k: None for k, v in rules.items() if v == 0})
    steps = STEPS[o.guidance] if o.steps is None else o.steps
    if o.trust_below > o.trust_above:
        raise OodkitError("--trust-below must not exceed --trust-above")
    stop = STOPS[o.guidance] if o.stop is None else o.stop
    distances = comma_choices(o.distance, "--distance", DISTANCES, "distance")
    depth = _stop_depth(stop, o, steps)
    if o.inversion_eps == "source" and depth > steps - 1:
        raise OodkitError(
            f"--inversion-eps source starts from the image taken as x at t = 0, so at most "
            f"{steps - 1} of {steps} steps invert: lower --stop / --max-invert or raise --steps"
        )
    return Recipe(o, o.guidance, steps, stop, depth, distances)


def check_model(r: Recipe, o: ScoreOptions, spec, config, bench) -> None:
    """The model against the guidance, the detector and the benchmark (configs only)."""
    from oodkit.diffusion.sampler import check_steps

    check_steps(r.steps, spec.scheduler_config)
    if r.guidance == "cfg" and spec.kind == "uncond":
        raise OodkitError(
            "--guidance cfg needs a class- or text-conditional model with a null condition; "
            "this model is unconditional: use --guidance classifier"
        )
    if spec.channels is not None and spec.channels != config.in_chans:
        raise OodkitError(
            f"the model makes {spec.channels}-channel images but the detector takes "
            f"{config.in_chans}"
        )
    if r.guidance == "classifier" and spec.image_size and config.image_size > spec.image_size:
        raise OodkitError(
            f"the detector takes {config.image_size}px images but the model makes "
            f"{spec.image_size}px ones: classifier-guidance cut-outs need detector ≤ model size"
        )
    if spec.kind == "text" and not bench.class_names:
        raise OodkitError(
            f"benchmark {bench.name} has no class names for a text-conditional model's prompts"
        )
    if o.clip_x0 and spec.layout in ("sd", "dit", "ldm"):
        raise OodkitError(
            "--clip-x0 clips x̂₀ to the pixel range [−1, 1]: not for a latent model (--no-clip-x0)"
        )
    pixel_rules = [f for f, v in (("--aes-gmsd", o.aes_gmsd), ("--aes-dists", o.aes_dists)) if v]
    if pixel_rules and r.stop == "aes" and spec.layout in ("sd", "dit", "ldm"):
        raise OodkitError(f"{pixel_rules[0]} compares pixels: use --aes-psnr with a latent model")


def model_classes(spec, bench, labels: int) -> list[int] | None:
    """The class-conditional model's class of each of the ``labels`` classes the classifier
    gives (the benchmark's), for CFG: by WordNet id where both know theirs (a 1000-class LDM
    with ImageNet-200), by index where neither does (``None``: the same index)."""
    if spec.kind != "class":
        return None
    own, ids = spec.class_ids, bench.class_ids
    if own and ids:
        from oodkit.data.classes import map_by_id

        mapped = map_by_id(own, ids, "the model", f"{bench.name}'s")
        return None if mapped == list(range(len(mapped))) else mapped
    if own and not ids:
        raise OodkitError(
            f"the model's classes are known by WordNet id and {bench.name}'s are not: no class "
            "map (its labels would reach the model as ImageNet class indices)"
        )
    if spec.num_classes and labels > spec.num_classes:
        raise OodkitError(
            f"the detector gives {labels} classes but the model has only {spec.num_classes}, "
            "and no WordNet ids map one to the other: labels pass to the model by index"
        )
    return None


def perceptual_needs(r: Recipe, o: ScoreOptions) -> list[str]:
    """The networks with local weights this run needs (DISTS / LPIPS distances, DISTS AES)."""
    need = [d for d in r.distances if d in PERCEPTUAL]
    if r.stop == "aes" and o.aes_dists is not None and "dists" not in need:
        need.append("dists")
    return need


# what sets recipes apart in run labels: option → label word
TAGGED = (
    ("steps", "steps"),
    ("stop", "stop"),
    ("max_invert", "max-invert"),
    ("aes_psnr", "psnr"),
    ("aes_gmsd", "gmsd"),
    ("aes_dists", "dists"),
    ("aes_clamp", "aes-clamp"),
    ("inversion_eps", "eps"),
    ("clip_x0", "clip"),
    ("restart", "restart"),
    ("geometry", "geometry"),
    ("reference", "ref"),
    ("classifier_scale", "scale"),
    ("cutouts", "cutouts"),
    ("blend", "blend"),
    ("cfg_scale", "cfg"),
    ("cam_cut", "cut"),
    ("cam_resize", "cam-resize"),
    ("dtype", "dtype"),
)


def _tagged(r: Recipe) -> dict[str, object]:
    o = r.options
    values = {name: getattr(o, name) for name, _ in TAGGED}
    return values | {"steps": r.steps, "stop": r.stop}


def recipe_tag(r: Recipe) -> str:
    """Label words for what sets a resolved recipe apart from its preset (or oodkit's
    defaults) for the same guidance: the preset's name, then every option whose value
    differs (e.g. ``-ref=input``, ``-gdm-no-clip``, ``-steps=25``), so runs of different
    recipes do not share a label in ``eval``."""
    o = r.options
    base = _tagged(resolve(ScoreOptions(model=o.model, preset=o.preset, guidance=o.guidance)))
    words = [o.preset] if o.preset else []
    for (name, word), value in zip(TAGGED, _tagged(r).values(), strict=True):
        if value == base[name]:
            continue
        if isinstance(value, bool):
            words.append(word if value else f"no-{word}")
        else:
            words.append(f"{word}={'off' if value is None else value}")
    return "".join(f"-{w}" for w in words)
