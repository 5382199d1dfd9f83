"""Re-synthesis of images with a diffusion model: encode → noise each sample to its own start
step → guided DDIM → decode.

The guidance is a callable built per batch from the clean latents (``make_guide(x0)``), so it
may keep per-batch state (SONA's momentum). It receives the active rows' current latents and
timesteps, every condition's noise prediction from one batched forward, each row's step
within its own run and the rows' indices in the batch, and returns the guided ε. ``generate``
runs its methods through this engine; DiffGuard's re-synthesis will too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from oodkit.diffusion.sampler import DDIMSampler
from oodkit.seeding import per_sample_randn

# guide(x [A, ...], t [A], eps [n_conditions, A, ...], step_in_run [A], rows [A]) -> ε̃ [A, ...]
Guide = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor
]


@torch.no_grad()
def resynthesize(
    denoiser: Any,
    sampler: DDIMSampler,
    images: torch.Tensor,
    starts: Sequence[int],
    generators: Sequence[torch.Generator],
    conditions: list[list[Any]],
    make_guide: Callable[[torch.Tensor], Guide],
) -> torch.Tensor:
    """Images in [0, 1] → re-synthesised images in [0, 1].

    ``starts`` are DDIM steps per sample, ``generators`` one per sample (the noise),
    ``conditions`` the rows the denoiser evaluates (unconditional first, as ``None``s).
    """
    x0 = denoiser.encode(images)
    noise = per_sample_randn(x0.shape[1:], generators, x0.device, x0.dtype)
    xt = sampler.noise(x0, starts, noise)
    cond = denoiser.condition(conditions)
    guide = make_guide(x0)

    def eps_fn(x, t, rows, step_in_run):
        active = cond if len(rows) == cond.shape[1] else cond[:, rows]
        return guide(x, t, denoiser.eps(x, t, active), step_in_run, rows)

    return denoiser.decode(sampler.denoise(xt, starts, eps_fn))
