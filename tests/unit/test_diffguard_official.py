"""DiffGuard's official GDM loop, transcribed by hand from its guided-diffusion fork
(``ddim_reverse_ode_loop`` with ``clip_denoised``, AES on PSNR, ``ddim_sample_loop`` with
``condition_score`` and ``forback_skip_diff: 3``; ``cure-lab/DiffGuard`` at ``6125295``),
against oodkit's switches ``--inversion-eps source --clip-x0 --restart official``, and the
presets' resolved recipes against the official configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oodkit.diffusion.adm import PRESETS as ADM
from oodkit.diffusion.adm import scheduler_config
from oodkit.diffusion.diffguard import (
    Guidance,
    Inversion,
    StopRule,
    _classifier_eps,
    invert,
)
from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
from oodkit.errors import OodkitError
from oodkit.scoring.options import ScoreOptions
from oodkit.stages.diffguard.recipe import resolve

pytestmark = pytest.mark.threads(1)

W = torch.randn(5, 3 * 8 * 8, generator=torch.Generator().manual_seed(1)) * 0.3
SCALE = 3.0


def _eps(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """A stub ε-network whose x̂₀ often leaves [−1, 1] (so clipping matters)."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1))
    return torch.tanh(0.9 * x + 0.002 * t) * 1.3 + 0.2 * torch.sin(3 * x)


def _log_p(x01: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x01.flatten(1) @ W.T.to(x01.dtype), -1)[range(len(y)), y].sum()


def _official(x0: torch.Tensor, y: int, thresh: float) -> tuple[torch.Tensor, int]:
    """One image through the official loop (float64), respaced ``ddim100`` on 1,000 linear
    steps: returns the guided synthesis and the number of inversion steps."""
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)[::10]  # respaced index i ↔ timestep 10·i
    a_next, a_prev = np.append(abar[1:], 0.0), np.append(1.0, abar[:-1])

    def clipped_eps(x, e, a):
        xs = ((x - math.sqrt(1 - a) * e) / math.sqrt(a)).clamp(-1, 1)
        return (x - math.sqrt(a) * xs) / math.sqrt(1 - a)

    x, stop = x0.clone(), 89
    for i in range(90):  # early_stop_steps 10: at most 90 steps
        e = _eps(x, 10 * i)
        if i > 0:
            e = clipped_eps(x, e, abar[i])
        xs = (x - e * math.sqrt(1 - abar[i])) / math.sqrt(abar[i])
        x = xs * math.sqrt(a_next[i]) + math.sqrt(1 - a_next[i]) * e
        mse = (x - x0).pow(2).mean()
        if 20 * math.log10(255 / math.sqrt(mse)) < thresh:
            stop = i
            break
    for i in range(stop + 2, -1, -1):  # skip_first_steps = 100 − rev_t − 3
        raw = _eps(x, 10 * i)
        e = clipped_eps(x, raw, abar[i])  # p_mean_variance(clip_denoised) → ε from x̂₀
        with torch.enable_grad():  # cond_fn: the unclipped x̂₀ blended with x_t
            fac = math.sqrt(1 - abar[i])
            seen = ((x - fac * raw) / math.sqrt(abar[i]) * fac + x * (1 - fac)).float()
            seen.requires_grad_(True)
            (grad,) = torch.autograd.grad(_log_p((seen + 1) / 2, torch.tensor([y])), seen)
        e = e - math.sqrt(1 - abar[i]) * grad.double() * SCALE
        xs = (x - math.sqrt(1 - abar[i]) * e) / math.sqrt(abar[i])
        x = xs * math.sqrt(a_prev[i]) + math.sqrt(1 - a_prev[i]) * e
    return x, stop + 1


class _Denoiser:
    kind, image_size, channels = "uncond", 8, 3

    def condition(self, values):
        return torch.zeros(len(values), len(values[0]))

    def encode(self, images):
        return images * 2 - 1

    def eps(self, x, t, cond):
        n = cond.shape[0]
        return _eps(x.reshape(-1, *x.shape[1:]), t).view(n, -1, *x.shape[1:])

    def to_pixels(self, x):
        return (x + 1) / 2


class _Classifier:
    size = 8

    def crop_logits(self, crops):
        return crops.flatten(1) @ W.T


def _oodkit(x0, labels, thresh, eps_at="source", clip=True, restart=1):
    den = _Denoiser()
    sampler = DDIMSampler(ddim_scheduler(scheduler_config(ADM["256x256_diffusion_uncond"])), 100)
    how = Inversion(StopRule(90, psnr=thresh), eps_at=eps_at, clip=clip)
    latents, steps = invert(den, sampler, (x0 + 1) / 2, how)
    g = Guidance("classifier", classifier_scale=SCALE, cutouts=1, clip=clip)
    keys = [str(i) for i in range(len(x0))]
    fn = _classifier_eps(den, sampler, _Classifier(), den.condition([[None] * 4]), labels, keys, g)
    starts = [sampler.restart(s, eps_at, restart) for s in steps]
    return sampler.denoise_chains([latents], starts, fn)[0], steps


def test_official_gdm_switches_reproduce_the_official_loop() -> None:
    """Inversion depths equal, syntheses within float32 guidance rounding; each switch alone
    set back to oodkit's default moves the result far away."""
    x0 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)).double() * 2 - 1
    labels = torch.tensor([0, 1, 2, 3])
    thresh = 51.75  # this stub's PSNR crosses it at different depths
    ref = [_official(x0[b : b + 1], b, thresh) for b in range(4)]
    out, steps = _oodkit(x0, labels, thresh)
    assert steps == [s for _, s in ref] and len(set(steps)) > 1
    assert torch.allclose(out, torch.cat([r for r, _ in ref]), atol=1e-4)
    for change in ({"clip": False}, {"eps_at": "target"}, {"restart": 0}):
        other, _ = _oodkit(x0, labels, thresh, **change)
        assert (other - out).abs().max() > 0.05, change


# Transcribed from cure-lab/DiffGuard@6125295: exp6.1.yaml over guided-diffusion-psnr-dists.yaml
# (timestep_respacing ddim100, early_stop_steps 10, early_stop_metric [psnr, dists] with
# thresholds [48.5, 0.38], classifier_scale 3, cutouts_num 8, clip_denoised True,
# forback_skip_diff 3, process_method resize from input_size 224), runner.uncond_aux True,
# runner.distances [dists]; the metric wrapper feeds x·0.5 + 0.5 unclamped; ddim_reverse_sample
# takes ε at the source timestep; cond_fn blends x̂₀ (no_x0_hat False).
OFFICIAL_GDM = {
    "guidance": "classifier",
    "steps": 100,
    "stop": "aes",
    "max_steps": 90,
    "aes_psnr": 48.5,
    "aes_dists": 0.38,
    "aes_clamp": False,
    "classifier_scale": 3.0,
    "cutouts": 8,
    "blend": True,
    "clip_x0": True,
    "inversion_eps": "source",
    "restart": "official",
    "reference": "unguided",
    "distances": ["dists"],
    "geometry": "classifier",
}
# ldm-exp2.25.yaml over latent-diffusion-model.yaml: ddim_steps 25, unconditional_diffuse
# (null class) over the whole grid, denoise_guidance_scale 10, use_cam True, cam_cut 0.3,
# input_size 256 (the classifier sees the 256-px crop), uncond_aux False (reference = the
# input), distances [dists]; DDIMForward takes ε at the target timestep; no clipping.
OFFICIAL_LDM = {
    "guidance": "cfg",
    "steps": 25,
    "stop": "1",
    "max_steps": 25,
    "cfg_scale": 10.0,
    "cam": True,
    "cam_cut": 0.3,
    "cam_resize": "image",
    "clip_x0": False,
    "inversion_eps": "target",
    "restart": "exact",
    "reference": "input",
    "distances": ["dists"],
    "geometry": "model",
}


@pytest.mark.parametrize("preset, table", [("gdm", OFFICIAL_GDM), ("ldm", OFFICIAL_LDM)])
def test_presets_resolve_to_the_official_configs(preset, table) -> None:
    r = resolve(ScoreOptions(model="m", preset=preset))
    got = {k: getattr(r, k) if hasattr(r, k) else getattr(r.options, k) for k in table}
    assert got == table


def test_options_given_win_over_the_preset_and_defaults_stay_oodkits() -> None:
    r = resolve(ScoreOptions(model="m", preset="ldm", reference="unguided", cfg_scale=5.0))
    assert (r.options.reference, r.options.cfg_scale, r.guidance) == ("unguided", 5.0, "cfg")
    r = resolve(ScoreOptions(model="m", preset="gdm", aes_dists=0))
    assert r.options.aes_dists is None and r.options.aes_psnr == 48.5
    r = resolve(ScoreOptions(model="m"))
    assert (r.guidance, r.distances, r.options.geometry, r.options.clip_x0) == (
        "classifier",
        ["logits-l1"],
        "resize",
        False,
    )
    with pytest.raises(OodkitError, match="--preset must be one of gdm, ldm"):
        resolve(ScoreOptions(model="m", preset="adm"))
    with pytest.raises(OodkitError, match="at most 24 of 25 steps invert"):
        resolve(ScoreOptions(model="m", preset="ldm", inversion_eps="source"))


def test_run_labels_tell_recipes_apart() -> None:
    """Runs that differ by a preset or any recipe option never share an ``eval`` label (they
    did: the reference-input and official-switch digits runs merged with the defaults')."""
    from oodkit.stages.diffguard.recipe import recipe_tag

    def tag(**kw):
        return recipe_tag(resolve(ScoreOptions(model="m", **kw)))

    assert tag() == "" and tag(guidance="cfg") == ""
    assert tag(guidance="cfg", reference="input") == "-ref=input"
    assert tag(inversion_eps="source", clip_x0=True, restart="official") == (
        "-eps=source-clip-restart=official"
    )
    assert tag(steps=25) == "-steps=25"
    assert tag(preset="gdm") == "-gdm"
    assert tag(preset="gdm", clip_x0=False) == "-gdm-no-clip"
    assert tag(preset="gdm", aes_dists=0) == "-gdm-dists=off"
    assert tag(preset="ldm", reference="unguided") == "-ldm-ref=unguided"
    assert tag(preset="ldm", dtype="auto") == "-ldm-dtype=auto"


def test_cfg_labels_reach_the_model_by_wordnet_id_or_not_at_all() -> None:
    """A model whose classes are WordNet ids maps ImageNet-200 by id; on a benchmark without
    ids it is refused rather than fed benchmark indices as ImageNet classes."""
    from types import SimpleNamespace

    from oodkit.data.classes import imagenet1k, imagenet200_wnids
    from oodkit.stages.diffguard.recipe import model_classes

    wnids = [w for w, _ in imagenet1k()]
    spec = SimpleNamespace(kind="class", class_ids=wnids, num_classes=1000)
    inet200 = SimpleNamespace(name="imagenet200", class_ids=imagenet200_wnids())
    mapped = model_classes(spec, inet200, 200)
    assert mapped == [wnids.index(w) for w in imagenet200_wnids()]
    cifar = SimpleNamespace(name="cifar10", class_ids=None)
    with pytest.raises(OodkitError, match="cifar10's are not: no class map"):
        model_classes(spec, cifar, 10)
    own = SimpleNamespace(kind="class", class_ids=None, num_classes=5)
    assert model_classes(own, cifar, 5) is None
    with pytest.raises(OodkitError, match="gives 10 classes but the model has only 5"):
        model_classes(own, cifar, 10)
