"""Guidance as pure tensor functions (docs/methods.md §3, §5). Tensors are [B, C, H, W].

Notation: ε(x, c) noise prediction for condition c, ε(x) unconditional, ψ(x, c) = ε(x, c) − ε(x).
Each function returns the guided noise ε̃, except ``sona_delta`` which returns Δ (the caller
forms ε̃ = ε(x) + s·Δ). ``SonaGuidance`` adds the official code's optional SEGA-style
momentum and warm-up (both off by default, i.e. the paper's equations).
"""

from __future__ import annotations

import math

import torch


def cfg_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ε(x) + s·ψ(x, c)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def sd_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """The SD-outlier paper's convention: (1 + w)·ε(x, c) − w·ε(x)."""
    return (1 + w) * eps_cond - w * eps_uncond


def global_eps(eps_ood: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """SONA's 'global guidance' ablation: ψ_OOD applied everywhere, ε(x) + s·ψ_OOD."""
    return cfg_eps(eps_ood, eps_uncond, scale)


def mask_count(lam: float, h: int, w: int) -> int:
    """⌈λ·H·W⌉ positions per (sample, channel)."""
    if not 0 < lam <= 1:
        raise ValueError(f"lam must lie in (0, 1], got {lam}")
    return max(1, math.ceil(lam * h * w - 1e-9))


def extreme_mask(psi: torch.Tensor, lam: float, largest: bool) -> torch.Tensor:
    """1 at the ⌈λ·H·W⌉ largest (or smallest) |ψ| of each (sample, channel), else 0."""
    b, c, h, w = psi.shape
    flat = psi.abs().reshape(b, c, h * w)
    idx = flat.topk(mask_count(lam, h, w), dim=2, largest=largest).indices
    mask = torch.zeros_like(flat).scatter_(2, idx, 1.0)
    return mask.reshape(b, c, h, w)


def sona_masks(psi: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(M_S, M_N): semantic (largest |ψ|) and nuisance (smallest |ψ|) region masks."""
    return extreme_mask(psi, lam, largest=True), extreme_mask(psi, lam, largest=False)


def sona_delta(psi_id: torch.Tensor, psi_ood: torch.Tensor, lam: float) -> torch.Tensor:
    """Δ = −M_S(ψ_ID)⊙ψ_ID + M_N(ψ_ID)⊙ψ_ID + M_S(ψ_OOD)⊙(1 − M_N(ψ_ID))⊙ψ_OOD."""
    ms_id, mn_id = sona_masks(psi_id, lam)
    ms_ood = extreme_mask(psi_ood, lam, largest=True)
    return -ms_id * psi_id + mn_id * psi_id + ms_ood * (1 - mn_id) * psi_ood


class SonaGuidance:
    """ε̃ = ε(z) + s·Δ per sample, with optional momentum and warm-up (official-code options).

    Momentum (SEGA): g ← Δ + m_s·v, then v ← β·v + (1 − β)·g, and ε̃ = ε(z) + s·g. Warm-up:
    a sample's first ``warmup`` steps of its own (truncated) run use ε(z) only; momentum
    still accumulates during them.
    """

    def __init__(
        self,
        scale: float = 10.0,
        lam: float = 0.1,
        momentum_scale: float = 0.0,
        momentum_beta: float = 0.6,
        warmup: int = 0,
    ) -> None:
        self.scale, self.lam = scale, lam
        self.momentum_scale, self.momentum_beta, self.warmup = momentum_scale, momentum_beta, warmup
        self.velocity: torch.Tensor | None = None

    def reset(self, like: torch.Tensor) -> None:
        self.velocity = torch.zeros_like(like)

    def __call__(
        self,
        eps_uncond: torch.Tensor,
        eps_id: torch.Tensor,
        eps_ood: torch.Tensor,
        step_in_run: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Guided ε for the active ``rows`` of the batch (indices into the momentum state)."""
        delta = sona_delta(eps_id - eps_uncond, eps_ood - eps_uncond, self.lam)
        if self.momentum_scale:
            v = self.velocity if rows is None else self.velocity[rows]
            delta = delta + self.momentum_scale * v
            v = self.momentum_beta * v + (1 - self.momentum_beta) * delta
            if rows is None:
                self.velocity = v
            else:
                self.velocity[rows] = v
        on = (step_in_run >= self.warmup).to(delta.dtype).view(-1, 1, 1, 1)
        return eps_uncond + self.scale * on * delta
