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
from dataclasses import dataclass
from typing import Any

import torch

from oodkit.errors import OodkitError

# eps_fn(x_active, t_active [A], rows [A], step_in_run [A]) -> guided ε for those rows
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Step:
    """One DDIM step of a batch: what a noise predictor of several chains is told."""

    t: torch.Tensor  # [A] timesteps of the active rows (all at grid index ``index``)
    rows: torch.Tensor  # [A] the active rows' indices in the batch (device)
    step_in_run: torch.Tensor  # [A] each row's step within its own run (device)
    index: int  # grid index of the step (host)
    order: list[int]  # the active rows' indices in the batch (host)


# eps_fn([x_active of each chain], step) -> [guided ε of each chain]
ChainsEpsFn = Callable[[list[torch.Tensor], Step], list[torch.Tensor]]


def ddim_scheduler(config: dict | object):
    """A ``DDIMScheduler`` from any scheduler config (e.g. a model folder's PNDM one)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config)


def check_steps(steps: int, scheduler_config: Any) -> None:
    """A DDIM grid of ``steps`` fits in the model's training timesteps (``None``: a Hub model
    whose scheduler is known only once loaded)."""
    if scheduler_config is None:
        return
    get = (
        scheduler_config.get if isinstance(scheduler_config, dict) else scheduler_config.__getitem__
    )
    total = int(get("num_train_timesteps") or 1000)
    if steps > total:
        raise OodkitError(f"--steps {steps} exceeds the model's {total} training timesteps")


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
        check_steps(num_steps, scheduler.config)
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

    def sigma(self, index: int) -> float:
        """√(1 − ᾱ) at a grid index (float64 on the host)."""
        return self._sqrt_1ma[index]

    def clean(self, x: torch.Tensor, eps: torch.Tensor, index: int) -> torch.Tensor:
        """x̂₀ = (x − √(1 − ᾱ)·ε)/√ᾱ of ``x`` at grid index ``index``."""
        return (x - self._sqrt_1ma[index] * eps.to(x.dtype)) / self._sqrt_a[index]

    def move(self, x: torch.Tensor, eps: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        """One deterministic DDIM move of ``x`` from grid index ``src`` to ``dst``."""
        eps = eps.to(x.dtype)
        return self._sqrt_a[dst] * self.clean(x, eps, src) + self._sqrt_1ma[dst] * eps

    def denoise(self, x: torch.Tensor, starts: Sequence[int], eps_fn: EpsFn) -> torch.Tensor:
        """Run each sample's last ``start`` DDIM steps; samples wait until their step comes."""

        def chains_fn(xs: list[torch.Tensor], step: Step) -> list[torch.Tensor]:
            return [eps_fn(xs[0], step.t, step.rows, step.step_in_run)]

        return self.denoise_chains([x], starts, chains_fn)[0]

    def denoise_chains(
        self, chains: Sequence[torch.Tensor], starts: Sequence[int], eps_fn: ChainsEpsFn
    ) -> list[torch.Tensor]:
        """``denoise`` for several parallel chains of the same samples (e.g. a guided and an
        unguided synthesis from one inverted latent) that share their starts, so one network
        call can serve every chain at each step.

        Rows are ordered once by start, longest first, so the rows active at any step are a
        prefix: each step works on views, with no gather, scatter or index upload.
        """
        self.check_starts(starts)
        begin = [self.num_steps - int(s) for s in starts]
        order = sorted(range(len(begin)), key=lambda r: begin[r])  # stable: ties keep order
        dev = chains[0].device
        identity = order == list(range(len(order)))
        perm = torch.arange(len(order)) if identity else torch.tensor(order)
        perm, timesteps = perm.to(dev), self.timesteps.to(dev)  # uploaded once
        begin_sorted = torch.tensor([begin[r] for r in order]).to(dev)
        xs = [_working(x).clone() if identity else _working(x)[perm] for x in chains]
        active = 0
        for i in range(begin[order[0]] if order else self.num_steps, self.num_steps):
            while active < len(order) and begin[order[active]] <= i:
                active += 1
            step = Step(
                timesteps[i].repeat(active),
                perm[:active],
                i - begin_sorted[:active],
                i,
                order[:active],
            )
            eps = eps_fn([x[:active] for x in xs], step)
            for x, e in zip(xs, eps, strict=True):
                if active == len(x):
                    x.copy_(self.move(x, e, i, i + 1))
                else:
                    x[:active] = self.move(x[:active], e, i, i + 1)
        if identity:
            return xs
        outs = []
        for x in xs:
            out = torch.empty_like(x)
            out[perm] = x
            outs.append(out)
        return outs

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
        for j, (src, dst, at) in enumerate(self.inversion_path(steps, "target")):
            t = self.timesteps[at].repeat(len(x)).to(x.device)
            eps = eps_fn(x, t, rows, torch.full((len(x),), j, device=x.device))
            x = self.move(x, eps, src, dst)
            trajectory.append(x)
        return trajectory

    def clip_eps(self, x: torch.Tensor, eps: torch.Tensor, index: int) -> torch.Tensor:
        """ε re-derived from x̂₀ clipped to [−1, 1] at grid index ``index`` (guided-diffusion's
        ``clip_denoised``): x̂₀ = clip((x − √(1 − ᾱ)·ε)/√ᾱ), ε = (x − √ᾱ·x̂₀)/√(1 − ᾱ)."""
        eps = eps.to(x.dtype)
        x0 = self.clean(x, eps, index).clamp(-1, 1)
        return (x - self._sqrt_a[index] * x0) / self._sqrt_1ma[index]

    def inversion_path(self, steps: int, eps_at: str) -> list[tuple[int, int, int]]:
        """(source index, target index, ε's grid index) of each inversion step.

        ``target``: from the clean end (index N) up, ε at the target timestep (diffusers'
        ``DDIMInverseScheduler``). ``source``: the image is taken as x at the grid's lowest
        timestep (index N − 1, guided-diffusion's ``ddim_reverse_sample``), ε at the source.
        """
        first = self.num_steps if eps_at == "target" else self.num_steps - 1
        if eps_at not in ("target", "source") or not 1 <= steps <= first:
            raise ValueError(f"inversion of {steps} steps with ε at the {eps_at} timestep")
        return [
            (i, i - 1, i - 1 if eps_at == "target" else i) for i in range(first, first - steps, -1)
        ]

    def invert_until(
        self,
        x0: torch.Tensor,
        eps_fn: EpsFn,
        max_steps: int,
        stop: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eps_at: str = "target",
        clip: bool = False,
    ) -> tuple[torch.Tensor, list[int]]:
        """DDIM inversion of each sample until ``stop(x_t, x_0)`` [A] holds (checked after
        every step) or ``max_steps`` steps; returns each sample's latent where it stopped and
        its number of inversion steps. ``eps_at``: see ``inversion_path``; ``clip``: x̂₀
        clipped (``clip_eps``) wherever the source timestep is above the grid's lowest.

        Samples invert together; a stopped sample leaves the batch, so each sample costs
        exactly its own steps. The only host read is the [A] stop flags after each step.
        """
        path = self.inversion_path(max_steps, eps_at)
        x = _working(x0).clone()
        ref = x.clone()
        out = torch.empty_like(x)
        stops = [max_steps] * len(x)
        alive = list(range(len(x)))
        rows = torch.arange(len(x), device=x.device)
        for j, (src, dst, at) in enumerate(path):
            t = self.timesteps[at].repeat(len(x)).to(x.device)
            eps = eps_fn(x, t, rows, torch.full((len(x),), j, device=x.device))
            if clip and src < self.num_steps - 1:
                eps = self.clip_eps(x, eps, src)
            x = self.move(x, eps, src, dst)
            if j + 1 == max_steps:
                out[rows] = x
                break
            if stop is None:
                continue
            flags = stop(x, ref).tolist()
            if not any(flags):
                continue
            for a, f in zip(alive, flags, strict=True):
                if f:
                    stops[a] = j + 1
            sel = torch.tensor(flags, device=x.device)
            out[rows[sel]] = x[sel]
            keep = ~sel
            x, ref, rows = x[keep], ref[keep], rows[keep]
            alive = [a for a, f in zip(alive, flags, strict=True) if not f]
            if not alive:
                break
        return out, stops

    def restart(self, steps: int, eps_at: str, offset: int = 0) -> int:
        """The denoising start of a latent inverted ``steps`` steps: the grid level it sits
        at (one more with ε at the source: the image sat at index N − 1), plus ``offset``
        levels (guided-diffusion DiffGuard's ``forback_skip_diff: 3`` is 1), at most N."""
        return min(self.num_steps, steps + (eps_at == "source") + offset)
