"""A class-conditional diffusion model as its own classifier (Li et al. 2023, "Your diffusion
model is secretly a zero-shot classifier"): p(c | x) ∝ exp(−E_{t,ε} ‖ε − ε_θ(x_t, t, c)‖²), so
the model's class for x is the one with the smallest denoising error.

Used as the judge of generated outliers' semantic shift when no ID classifier is given. Every
sample sees the same noise for every class (variance reduction, as in the paper); the noise
comes from per-sample generators, so the judgement does not depend on batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from oodkit.seeding import per_sample_randn


def judge_timesteps(num_train_timesteps: int, n: int) -> list[int]:
    """``n`` training timesteps at the centres of ``n`` equal parts of the schedule."""
    width = num_train_timesteps / n
    return [int(width * (i + 0.5)) for i in range(n)]


@torch.no_grad()
def denoising_errors(
    denoiser,
    images: torch.Tensor,
    classes: Sequence[int],
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """[B, len(classes)] mean squared ε error of each class over ``timesteps`` (ᾱ from the
    training schedule's ``alphas_cumprod``, read in float64), float32, for images in [0, 1];
    each sample's generator draws its noise for every timestep at once.

    One UNet forward per timestep evaluates every class (the classes are condition rows).
    """
    x0 = denoiser.encode(images)
    b = x0.shape[0]
    cond = denoiser.condition([[int(c)] * b for c in classes])
    shape = (len(timesteps), *x0.shape[1:])
    noises = per_sample_randn(shape, generators, x0.device, torch.float32)  # [B, T, ...]
    errors = torch.zeros(b, len(classes), dtype=torch.float32, device=x0.device)
    for i, t in enumerate(timesteps):
        a, noise = float(alphas_cumprod.double()[int(t)]), noises[:, i]
        xt = (a**0.5 * x0.float() + (1 - a) ** 0.5 * noise).to(x0.dtype)
        eps = denoiser.eps(xt, torch.full((b,), int(t), device=x0.device), cond)
        errors += (eps - noise).pow(2).flatten(2).mean(2).T
    return errors / len(timesteps)
