"""An explicit DDIM loop (η = 0) over a ``DDIMScheduler`` grid, with per-sample start steps.

``DDIMSampler`` takes its timestep grid and ᾱ values from a ``DDIMScheduler`` (built from any
scheduler config, so a model folder that ships PNDM still runs DDIM) and does the update in
closed form per sample, so one batch can hold samples that start at different steps
(partial noising / SDEdit). Only samples that have started are sent to the noise predictor.

Precision: √ᾱ and √(1 − ᾱ) are computed once in float64 on the host and enter the update as
Python scalars (or one float32 vector for per-sample noising), and the latents stay in
float32 whatever the UNet's dtype. Cast to bf16 first, ᾱ near 1 (t = 1, the final ᾱ) would
round to 1.0 and a one-step sample would come back unchanged. Start steps are host-side
integers, so the loop never copies from the device.
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


def _working(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32 (the dtype of the DDIM state and of guidance math)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


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
        alphas = scheduler.alphas_cumprod.clone().double()
        final = torch.tensor([float(scheduler.final_alpha_cumprod)], dtype=torch.float64)
        # ᾱ at grid index 0..N (index N = the end of the chain)
        self.alphas = torch.cat([alphas[self.timesteps], final])
        self._sqrt_a = self.alphas.sqrt().tolist()
        self._sqrt_1ma = (1 - self.alphas).sqrt().tolist()

    def alpha_at(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """ᾱ (float64) at grid indices (index N = the end of the chain)."""
        return self.alphas[torch.as_tensor(index, dtype=torch.long)]

    def steps_from_timestep(self, timestep: int) -> int:
        """The start step (DDIM steps to run) of a sample noised to training ``timestep``.

        ``timestep`` must lie on the grid; the run then visits it and every later grid step.
        """
        hits = (self.timesteps == int(timestep)).nonzero().flatten()
        if len(hits) == 0:
            grid = self.timesteps.flip(0).tolist()
            raise ValueError(
                f"timestep {timestep} is not on the {self.num_steps}-step DDIM grid "
                f"({grid[0]}, {grid[1]}, …, {grid[-1]})"
            )
        return self.num_steps - int(hits[0])

    def timestep_of(self, start: int) -> int:
        """The training timestep a sample with ``start`` steps is noised to."""
        return int(self.timesteps[self.num_steps - int(start)])

    def check_starts(self, starts: Sequence[int]) -> None:
        bad = [s for s in starts if not 1 <= int(s) <= self.num_steps]
        if bad:
            raise ValueError(f"start step {bad[0]} is outside 1..{self.num_steps}")

    def noise(self, x0: torch.Tensor, starts: Sequence[int], noise: torch.Tensor) -> torch.Tensor:
        """x at grid index N − start: √ᾱ·x0 + √(1 − ᾱ)·noise, per sample, in float32."""
        self.check_starts(starts)
        x0, noise = _working(x0), _working(noise)
        index = [self.num_steps - int(s) for s in starts]
        shape = (-1, *([1] * (x0.dim() - 1)))
        a = torch.tensor([self._sqrt_a[i] for i in index], dtype=torch.float64)
        b = torch.tensor([self._sqrt_1ma[i] for i in index], dtype=torch.float64)
        a, b = (c.to(x0.device, x0.dtype).view(shape) for c in (a, b))
        return a * x0 + b * noise

    def move(self, x: torch.Tensor, eps: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        """One deterministic DDIM move of ``x`` from grid index ``src`` to ``dst``."""
        eps = eps.to(x.dtype)
        x0 = (x - self._sqrt_1ma[src] * eps) / self._sqrt_a[src]
        return self._sqrt_a[dst] * x0 + self._sqrt_1ma[dst] * eps

    def denoise(self, x: torch.Tensor, starts: Sequence[int], eps_fn: EpsFn) -> torch.Tensor:
        """Run each sample's last ``start`` DDIM steps; samples wait until their step comes.

        Rows are ordered once by start, longest first, so the rows active at any step are a
        prefix: each step works on a view, with no gather, scatter or index upload.
        """
        self.check_starts(starts)
        begin = [self.num_steps - int(s) for s in starts]
        order = sorted(range(len(begin)), key=lambda r: begin[r])  # stable: ties keep order
        dev = x.device
        identity = order == list(range(len(order)))
        perm = torch.arange(len(order)) if identity else torch.tensor(order)
        perm, timesteps = perm.to(dev), self.timesteps.to(dev)  # uploaded once
        begin_sorted = torch.tensor([begin[r] for r in order]).to(dev)
        x = _working(x).clone() if identity else _working(x)[perm]
        active = 0
        for i in range(begin[order[0]] if order else self.num_steps, self.num_steps):
            while active < len(order) and begin[order[active]] <= i:
                active += 1
            xa = x[:active]
            t = timesteps[i].repeat(active)
            eps = eps_fn(xa, t, perm[:active], i - begin_sorted[:active])
            if active == len(x):
                x = self.move(x, eps, i, i + 1)
            else:
                x[:active] = self.move(xa, eps, i, i + 1)
        if identity:
            return x
        out = torch.empty_like(x)
        out[perm] = x
        return out

    def invert(
        self, x0: torch.Tensor, eps_fn: EpsFn, steps: int | None = None
    ) -> list[torch.Tensor]:
        """DDIM inversion from the clean end up ``steps`` grid levels (all by default).

        Returns the latent at every level visited (``[x at index N−1, N−2, ...]``). As in
        diffusers' ``DDIMInverseScheduler``, ε is evaluated at the target timestep.
        """
        steps = self.num_steps if steps is None else steps
        x = _working(x0).clone()
        rows = torch.arange(len(x), device=x.device)
        trajectory = []
        for j, i in enumerate(range(self.num_steps - 1, self.num_steps - 1 - steps, -1)):
            t = self.timesteps[i].repeat(len(x)).to(x.device)
            eps = eps_fn(x, t, rows, torch.full((len(x),), j, device=x.device))
            x = self.move(x, eps, i + 1, i)
            trajectory.append(x)
        return trajectory
