"""Classifier guidance as DiffGuard's official code does it ("clean grad", cut-outs).

At a DDIM step with noisy x_t and the model's x̂₀, the classifier sees the blend
f·x̂₀ + (1 − f)·x_t with f = √(1 − ᾱ_t) (the paper's Eq. 7 uses x̂₀ alone, f = 1), through K
random square cut-outs per image (side U·(S − D) + D for an S-px image and a D-px classifier,
resized to D with nearest interpolation). The gradient of Σ_cut-outs log softmax(f(cut))[y]
w.r.t. the blend, times a scale (3 officially), shifts the noise: ε' = ε − √(1 − ᾱ_t)·grad.
No gradient flows through the diffusion model.

Cut-out boxes come from (seed, sample key, step) on the host, so they do not depend on the
batch a sample is in, and the denoising loop never waits for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from oodkit.seeding import key_rng

# a cut-out: (top, left, side) in pixels of the model's image
Box = tuple[int, int, int]


def cutout_boxes(
    seed: int, keys: Sequence[str], step: int, size: int, out_size: int, count: int
) -> list[list[Box]]:
    """``count`` boxes per sample key at ``step``: side U·(size − out_size) + out_size (the
    whole image when ``size ≤ out_size``), position uniform inside the image."""
    boxes = []
    for key in keys:
        rng = key_rng(seed, key, f"cutouts/{step}")
        mine = []
        for _ in range(count):
            side = size if size <= out_size else int(rng.uniform() * (size - out_size) + out_size)
            top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            mine.append((top, left, side))
        boxes.append(mine)
    return boxes


def cutouts(x: torch.Tensor, boxes: Sequence[Sequence[Box]], out_size: int) -> torch.Tensor:
    """[B·K, C, out, out]: each image's K boxes, resized with nearest interpolation, image-major."""
    crops = [
        F.interpolate(x[i : i + 1, :, t : t + s, left : left + s], size=out_size, mode="nearest")
        for i, mine in enumerate(boxes)
        for t, left, s in mine
    ]
    return torch.cat(crops)


def guidance_gradient(
    classify: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    boxes: Sequence[Sequence[Box]],
    out_size: int,
    scale: float,
) -> torch.Tensor:
    """scale · ∇ₓ Σ_cut-outs log softmax(classify(cut))[y], in float32, shaped like ``x``."""
    with torch.enable_grad():
        leaf = x.detach().float().requires_grad_(True)
        logits = classify(cutouts(leaf, boxes, out_size)).float()
        per_cut = torch.repeat_interleave(labels.to(logits.device), len(boxes[0]))
        chosen = F.log_softmax(logits, dim=1).gather(1, per_cut.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(chosen, leaf)
    return grad * scale


def blend(x0_hat: torch.Tensor, x_t: torch.Tensor, sqrt_one_minus_alpha: float) -> torch.Tensor:
    """What the classifier sees: f·x̂₀ + (1 − f)·x_t, f = √(1 − ᾱ_t) (official "clean grad")."""
    f = sqrt_one_minus_alpha
    return f * x0_hat + (1 - f) * x_t
