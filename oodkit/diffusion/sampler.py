"""An explicit DDIM loop (η = 0) over a ``DDIMScheduler`` grid, with per-sample start steps.

``DDIMSampler`` takes its timestep grid and ᾱ values from a ``DDIMScheduler`` (built from any
scheduler config, so a model folder that ships PNDM still runs DDIM) and does the update in
closed form per sample, so one batch can hold samples that start at different steps
(partial noising / SDEdit). Only samples that have started are sent to the noise predictor.
Start steps are host-side integers, so the loop never copies from the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# eps_fn(x_active, t_active [A], rows [A], step_in_run [A]) -> guided ε for those rows
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ddim_scheduler(config: dict | object):
    """A ``DDIMScheduler`` from any scheduler config (e.g. a model folder's PNDM one)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config)


class DDIMSampler:
    """DDIM with ``num_steps`` steps; start step k means "noise to grid index N − k, denoise k"."""

    def __init__(self, scheduler, num_steps: int) -> None:
        if scheduler.config.prediction_type != "epsilon":
            raise ValueError(
                f"only epsilon prediction is supported, not {scheduler.config.prediction_type}"
            )
        scheduler.set_timesteps(num_steps)
        self.scheduler = scheduler
        self.num_steps = num_steps
        self.timesteps = scheduler.timesteps.clone().long()  # descending
        self.alphas = scheduler.alphas_cumprod.clone().double()
        self.final_alpha = float(scheduler.final_alpha_cumprod)

    def alpha_at(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """ᾱ at grid indices (index N = the end of the chain, ``final_alpha_cumprod``)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        t = torch.cat([self.timesteps, torch.tensor([-1])])[idx]
        out = torch.where(
            t >= 0, self.alphas[t.clamp(min=0)], torch.tensor(self.final_alpha, dtype=torch.float64)
        )
        return out

    def check_starts(self, starts: Sequence[int]) -> None:
        bad = [s for s in starts if not 1 <= int(s) <= self.num_steps]
        if bad:
            raise ValueError(f"start step {bad[0]} is outside 1..{self.num_steps}")

    def noise(self, x0: torch.Tensor, starts: Sequence[int], noise: torch.Tensor) -> torch.Tensor:
        """x at grid index N − start: √ᾱ·x0 + √(1 − ᾱ)·noise, per sample."""
        self.check_starts(starts)
        a = self.alpha_at([self.num_steps - int(s) for s in starts]).to(x0.device, x0.dtype)
        a = a.view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    @staticmethod
    def _update(
        x: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor, a_next: torch.Tensor
    ) -> torch.Tensor:
        shape = (-1, *([1] * (x.dim() - 1)))
        a_t, a_next = (
            a_t.to(x.device, x.dtype).view(shape),
            a_next.to(x.device, x.dtype).view(shape),
        )
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps

    def denoise(self, x: torch.Tensor, starts: Sequence[int], eps_fn: EpsFn) -> torch.Tensor:
        """Run each sample's last ``start`` DDIM steps; samples wait until their step comes."""
        self.check_starts(starts)
        begin = torch.tensor([self.num_steps - int(s) for s in starts])
        x = x.clone()
        for i in range(int(begin.min()), self.num_steps):
            rows_cpu = torch.nonzero(begin <= i).flatten()
            rows = rows_cpu.to(x.device)
            t = self.timesteps[i].repeat(len(rows_cpu)).to(x.device)
            eps = eps_fn(x[rows], t, rows, (i - begin[rows_cpu]).to(x.device))
            a_t = self.alpha_at([i]).expand(len(rows_cpu))
            a_next = self.alpha_at([i + 1]).expand(len(rows_cpu))
            x[rows] = self._update(x[rows], eps, a_t, a_next)
        return x

    def invert(
        self, x0: torch.Tensor, eps_fn: EpsFn, steps: int | None = None
    ) -> list[torch.Tensor]:
        """DDIM inversion from the clean end up ``steps`` grid levels (all by default).

        Returns the latent at every level visited (``[x at index N−1, N−2, ...]``). As in
        diffusers' ``DDIMInverseScheduler``, ε is evaluated at the target timestep.
        """
        steps = self.num_steps if steps is None else steps
        x = x0.clone()
        rows = torch.arange(len(x), device=x.device)
        trajectory = []
        for j, i in enumerate(range(self.num_steps - 1, self.num_steps - 1 - steps, -1)):
            t = self.timesteps[i].repeat(len(x)).to(x.device)
            eps = eps_fn(x, t, rows, torch.full((len(x),), j, device=x.device))
            a_cur = self.alpha_at([i + 1]).expand(len(x))
            a_target = self.alpha_at([i]).expand(len(x))
            x = self._update(x, eps, a_cur, a_target)
            trajectory.append(x)
        return trajectory
