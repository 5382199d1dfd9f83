"""DiffGuard re-synthesis of a batch (docs/methods.md §7): DDIM-invert each input, then denoise
it toward the label the classifier gave it, and (optionally) without guidance from the same
inverted latent, the official reference.

- Inversion uses the unconditional row (null class, empty prompt, or an unconditional model)
  and stops per sample: at a fixed depth, or adaptively (AES) at the first step where the
  latent has drifted far enough from the input, capped at ``max_steps``. Samples invert
  together and leave the batch when they stop; they then denoise together, each from its
  own start (``DDIMSampler.denoise_chains``), so nothing runs at batch size 1.
- ``cfg``: ε = where(CAM > cut, ε_u + s·(ε_y − ε_u), ε_u), CAM = Grad-CAM of the classifier
  for the label on the input, cut at the image size and resized (nearest) to the model's grid
  as the official code does (or cut on the grid: ``cam_resize="grid"``); without a cut (the
  official oracle run), ε_u + s·(ε_y − ε_u) everywhere.
- ``classifier``: ε' = ε − √(1 − ᾱ_t)·scale·∇ Σ_cut-outs log p(y | cut-out), the gradient
  taken w.r.t. the blend f·x̂₀ + (1 − f)·x_t (f = √(1 − ᾱ_t)), x̂₀ from the same network call
  as ε, cut-outs per (seed, sample, step). No gradient flows through the diffusion model.

Every chain of a batch (guided and unguided) shares one network call per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from oodkit.diffusion.classifier_guidance import blend, cutout_boxes, guidance_gradient
from oodkit.diffusion.sampler import DDIMSampler, Step

PSNR_PEAK = 255.0  # the official AES PSNR: 20·log10(255/√MSE) on [−1, 1] tensors


def psnr_255(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-row 20·log10(255/√MSE) (the official AES convention; 48.5 ≈ 6.39 dB on [0, 1])."""
    mse = (x.float() - ref.float()).pow(2).flatten(1).mean(1).clamp(min=1e-20)
    return 20 * torch.log10(PSNR_PEAK / mse.sqrt())


@dataclass
class StopRule:
    """How deep each sample is inverted: ``max_steps`` (the fixed depth, or AES's cap); with
    thresholds (AES), earlier at the first step where PSNR to the input (model space), or a
    pixel similarity (1 − GMSD, 1 − DISTS; pixel models only) falls below its threshold."""

    max_steps: int
    psnr: float | None = None
    pixel: Sequence[tuple[float, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = ()
    clamp: bool = True  # pixel similarities see x·0.5 + 0.5 clamped to [0, 1] (official: not)

    @property
    def adaptive(self) -> bool:
        return self.psnr is not None or bool(self.pixel)

    def __call__(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        stop = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if self.psnr is not None:
            stop |= psnr_255(x, ref) < self.psnr
        if self.pixel:
            a, b = (((v.float() + 1) / 2) for v in (x, ref))
            if self.clamp:
                a, b = a.clamp(0, 1), b.clamp(0, 1)
            for threshold, similarity in self.pixel:
                stop |= similarity(a, b).to(stop.device) < threshold
        return stop


def _guide_net(detector: Any) -> torch.nn.Module:
    """A copy of the frozen detector for the guidance gradient: BatchNorm folded into the
    preceding convolutions (torch.fx) and channels-last weights, the same function in about
    a third less time per forward and backward on the CPU; unfused if fx cannot trace it."""
    import contextlib
    import copy

    from torch.fx.experimental.optimization import fuse

    net = copy.deepcopy(detector)
    with contextlib.suppress(Exception):  # e.g. data-dependent control flow: left unfused
        net = fuse(net)
    return net.to(memory_format=torch.channels_last)


class Classifier:
    """The detector as DiffGuard's classifier: images in [0, 1] → logits; resized to the
    detector's input size first unless ``resize`` is off (the official LDM run shows the
    ResNet-50 its 256-px crops as they are). ``columns``: the logit column of each class of
    the data (a class map, e.g. ImageNet-200 on a 1000-class classifier, as OpenOOD scores
    it); labels, guidance and Grad-CAM are then in the data's classes."""

    def __init__(
        self, detector: Any, resize: bool = True, columns: Sequence[int] | None = None
    ) -> None:
        self.detector = detector.eval().requires_grad_(False)
        self.resize = resize
        self.guide = _guide_net(self.detector)
        config = detector.config
        self.size = int(config.image_size)
        dev = next(detector.parameters()).device
        self.mean = torch.tensor(config.mean, device=dev).view(1, -1, 1, 1)
        self.std = torch.tensor(config.std, device=dev).view(1, -1, 1, 1)
        self.columns = None if columns is None else torch.tensor(list(columns), device=dev)

    def _mapped(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.columns is None else logits[:, self.columns]

    def column(self, labels: torch.Tensor) -> torch.Tensor:
        """The detector's own output index of data labels."""
        return labels if self.columns is None else self.columns[labels.to(self.columns.device)]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Resized to the classifier's input (bilinear, antialiased; with ``resize``) and
        normalised."""
        x = images.float().to(self.mean.device)
        if self.resize and (x.shape[-1] != self.size or x.shape[-2] != self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True)
        return (x - self.mean) / self.std

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0, 1] (any size), float32."""
        return self._mapped(self.detector(self.prepare(images))["logits"]).float()

    def crop_logits(self, crops: torch.Tensor) -> torch.Tensor:
        """Logits of cut-outs already at the classifier's size (differentiable; through the
        fused copy, see ``_guide_net``)."""
        x = ((crops.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self._mapped(self.guide(x)["logits"]).float()


@dataclass
class Guidance:
    """The guidance of one run (``cfg`` or ``classifier``) and its settings; ``cam_cut=None``
    guides every pixel of a ``cfg`` run; ``clip``: each chain's x̂₀ clipped to [−1, 1] and ε
    re-derived from it before guidance (guided-diffusion's ``clip_denoised``; the classifier
    still sees the unclipped x̂₀)."""

    kind: str
    cfg_scale: float = 10.0
    cam_cut: float | None = 0.3
    classifier_scale: float = 3.0
    cutouts: int = 8
    blend: bool = True
    seed: int = 0
    cam_resize: str = "image"  # cut the CAM at the image size (official) or on the "grid"
    clip: bool = False


@dataclass
class Inversion:
    """How inputs are inverted: the stop rule, the timestep ε is taken at (``target`` or
    ``source``, see ``DDIMSampler.inversion_path``) and x̂₀ clipping."""

    rule: StopRule
    eps_at: str = "target"
    clip: bool = False


@dataclass
class Synthesis:
    """A batch's syntheses in [0, 1] at the model's size, and each sample's inversion steps."""

    guided: torch.Tensor
    unguided: torch.Tensor | None
    stops: list[int]


def _rows(cond: torch.Tensor, parts: Sequence[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """One condition row [1, Σ, ...] stacking ``cond[k, rows]`` for each (k, rows)."""
    return torch.cat([cond[k, rows] for k, rows in parts])[None]


def _cfg_eps(denoiser, sampler: DDIMSampler, cond, mask, scale: float, unguided: bool, clip):
    """ε for the chains (guided[, unguided]) under classifier-free guidance, CAM-masked
    unless ``mask`` is None, x̂₀-clipped with ``clip``."""

    def eps_fn(xs: list[torch.Tensor], step: Step) -> list[torch.Tensor]:
        r = step.rows
        x = torch.cat([xs[0], xs[0], *xs[1:]])
        parts = [(0, r), (1, r)] + ([(0, r)] if unguided else [])
        e = denoiser.eps(x, step.t.repeat(len(parts)), _rows(cond, parts))[0]
        e = e.view(len(parts), *xs[0].shape)
        guided = e[0] + scale * (e[1] - e[0])
        if mask is not None:
            guided = torch.where(mask[r], guided, e[0])
        out = [guided, e[2]] if unguided else [guided]
        if clip:
            out = [sampler.clip_eps(x, o, step.index) for x, o in zip(xs, out, strict=True)]
        return out

    return eps_fn


def _classifier_eps(
    denoiser, sampler: DDIMSampler, classifier: Classifier, cond, labels, keys, g: Guidance
):
    """ε for the chains (guided[, unguided]) under DiffGuard's clean-grad classifier guidance."""
    size = denoiser.image_size

    def eps_fn(xs: list[torch.Tensor], step: Step) -> list[torch.Tensor]:
        r = step.rows
        x = torch.cat(xs)
        e = denoiser.eps(x, step.t.repeat(len(xs)), _rows(cond, [(0, r)] * len(xs)))[0]
        e = e.view(len(xs), *xs[0].shape)
        sigma = sampler.sigma(step.index)
        seen = sampler.clean(xs[0], e[0], step.index)  # unclipped, as officially
        if g.clip:
            e = [sampler.clip_eps(x, ei, step.index) for x, ei in zip(xs, e, strict=True)]
        if g.blend:
            seen = blend(seen, xs[0], sigma)
        if size > classifier.size:
            boxes = cutout_boxes(
                g.seed, [keys[i] for i in step.order], step.index, size, classifier.size, g.cutouts
            )
            scale = g.classifier_scale
        else:  # every cut-out is the whole image: one, counted K times
            boxes, scale = [[(0, 0, size)]] * len(step.order), g.classifier_scale * g.cutouts
        grad = guidance_gradient(
            classifier.crop_logits,
            seen,
            labels[r],
            boxes,
            classifier.size,
            scale,
            render=denoiser.to_pixels,
        )
        return [e[0] - sigma * grad, *e[1:]]

    return eps_fn


def cam_of(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps [B, h, w] of the classifier for ``labels`` on images in [0, 1]."""
    from oodkit.models.cam import grad_cam

    return grad_cam(classifier.detector, classifier.prepare(images), classifier.column(labels))


def invert(
    denoiser: Any, sampler: DDIMSampler, images: torch.Tensor, how: Inversion
) -> tuple[torch.Tensor, list[int]]:
    """DDIM inversion of ``images`` ([0, 1], the model's square) with the unconditional row,
    each to its own depth under ``how.rule``: (latents where they stopped, inversion steps)."""
    x0 = denoiser.encode(images)
    uncond = denoiser.condition([[None] * len(x0)])

    def invert_eps(x, t, rows, k):
        return denoiser.eps(x, t, uncond[:, rows])[0]

    rule = how.rule
    return sampler.invert_until(
        x0,
        invert_eps,
        rule.max_steps,
        rule if rule.adaptive else None,
        eps_at=how.eps_at,
        clip=how.clip,
    )


def resynthesise(
    denoiser: Any,
    sampler: DDIMSampler,
    classifier: Classifier,
    images: torch.Tensor,
    inverted: tuple[torch.Tensor, list[int]],
    starts: Sequence[int],
    labels: torch.Tensor,
    conditions: Sequence[Any],
    keys: Sequence[str],
    guidance: Guidance,
    unguided: bool,
) -> Synthesis:
    """Denoise each inverted latent from its grid level ``starts`` (``DDIMSampler.restart``)
    toward ``labels`` (the classifier's classes; ``conditions`` are the model's condition
    values for them: class ids or prompts) and, with ``unguided``, without guidance.
    ``images`` are the classifier's view of the inputs (for the CAM)."""
    from oodkit.models.cam import cam_mask

    xt, stops = inverted
    b = len(xt)
    labels = labels.to(xt.device)
    if guidance.kind == "cfg":
        cond = denoiser.condition([[None] * b, list(conditions)])
        mask = None
        if guidance.cam_cut is not None:
            cam = cam_of(classifier, images, labels)
            size = (denoiser.image_size, denoiser.image_size)
            at = size if guidance.cam_resize == "image" else None
            mask = cam_mask(cam, tuple(xt.shape[-2:]), guidance.cam_cut, at).to(xt.device)
        eps_fn = _cfg_eps(
            denoiser, sampler, cond, mask, guidance.cfg_scale, unguided, guidance.clip
        )
    else:
        uncond = denoiser.condition([[None] * b])
        eps_fn = _classifier_eps(denoiser, sampler, classifier, uncond, labels, keys, guidance)
    chains = sampler.denoise_chains([xt] * (2 if unguided else 1), starts, eps_fn)
    out = [denoiser.decode(c) for c in chains]
    return Synthesis(out[0], out[1] if unguided else None, stops)


def diffguard_batch(
    denoiser: Any,
    sampler: DDIMSampler,
    classifier: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    conditions: Sequence[Any],
    keys: Sequence[str],
    how: Inversion,
    guidance: Guidance,
    unguided: bool,
    restart: int = 0,
) -> Synthesis:
    """``invert`` then ``resynthesise`` one batch (denoising ``restart`` levels above where
    inversion stopped)."""
    inverted = invert(denoiser, sampler, images, how)
    starts = [sampler.restart(s, how.eps_at, restart) for s in inverted[1]]
    return resynthesise(
        denoiser,
        sampler,
        classifier,
        images,
        inverted,
        starts,
        labels,
        conditions,
        keys,
        guidance,
        unguided,
    )
