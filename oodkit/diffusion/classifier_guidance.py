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

import numpy as np
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


def _nearest(start: int, side: int, out_size: int) -> np.ndarray:
    """Source pixels of a nearest resize of ``side`` px to ``out_size`` (torch's float32
    rule: floor(dst · side/out), identity when the sizes agree)."""
    dst = np.arange(out_size)
    if side == out_size:
        return start + dst
    scale = np.float32(side) / np.float32(out_size)
    return start + np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), side - 1)


def cutouts(x: torch.Tensor, boxes: Sequence[Sequence[Box]], out_size: int) -> torch.Tensor:
    """[B·K, C, out, out]: each image's K boxes resized with nearest interpolation, image-major.

    One gather for all crops (indices built on the host, uploaded once), differentiable
    w.r.t. ``x``.
    """
    img = np.repeat(np.arange(len(boxes)), [len(b) for b in boxes])
    flat = [box for mine in boxes for box in mine]
    rows = np.stack([_nearest(t, s, out_size) for t, _, s in flat])
    cols = np.stack([_nearest(left, s, out_size) for _, left, s in flat])
    img_t, rows_t, cols_t = (
        torch.from_numpy(a).to(x.device, non_blocking=True) for a in (img, rows, cols)
    )
    crops = x.permute(0, 2, 3, 1)[img_t[:, None, None], rows_t[:, :, None], cols_t[:, None, :]]
    return crops.permute(0, 3, 1, 2)


def guidance_gradient(
    classify: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    boxes: Sequence[Sequence[Box]],
    out_size: int,
    scale: float,
    render: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """scale · ∇ₓ Σ_cut-outs log softmax(classify(cut))[y], in float32, shaped like ``x``.

    ``render`` maps ``x`` to the images the cut-outs are taken from (a latent model's
    decoder; identity by default); the gradient flows through it.
    """
    with torch.enable_grad():
        leaf = x.detach().float().requires_grad_(True)
        pixels = leaf if render is None else render(leaf)
        logits = classify(cutouts(pixels, boxes, out_size)).float()
        per_cut = torch.repeat_interleave(labels.to(logits.device), len(boxes[0]))
        chosen = F.log_softmax(logits, dim=1).gather(1, per_cut.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(chosen, leaf)
    return grad * scale


def blend(x0_hat: torch.Tensor, x_t: torch.Tensor, sqrt_one_minus_alpha: float) -> torch.Tensor:
    """What the classifier sees: f·x̂₀ + (1 − f)·x_t, f = √(1 − ᾱ_t) (official "clean grad")."""
    f = sqrt_one_minus_alpha
    return f * x0_hat + (1 - f) * x_t
