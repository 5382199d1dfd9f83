"""Detector training losses as pure tensor functions (docs/methods.md §3–§5).

- ``oe_loss``: outlier exposure, cross-entropy to the uniform distribution.
- ``energy_margin_loss``: Liu et al. 2020 squared hinge on energies of ID and outliers.
- ``club_bound`` / ``club_estimator_loss`` and ``ClubEstimator``: CLUB (Cheng et al. 2020),
  the mutual-information upper bound SONA minimises between outlier and source features.
- ``three_head_loss``: the SD-outlier paper's binary + in-class + out-class heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def oe_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy from softmax(logits) to uniform: mean(logsumexp z − mean_k z_k)."""
    return (torch.logsumexp(logits, dim=1) - logits.mean(dim=1)).mean()


def energy_margin_loss(
    logits_in: torch.Tensor, logits_out: torch.Tensor, m_in: float = -25.0, m_out: float = -7.0
) -> torch.Tensor:
    """E = −logsumexp z; mean relu(E_in − m_in)² + mean relu(m_out − E_out)²."""
    e_in = -torch.logsumexp(logits_in, dim=1)
    e_out = -torch.logsumexp(logits_out, dim=1)
    return F.relu(e_in - m_in).pow(2).mean() + F.relu(m_out - e_out).pow(2).mean()


class ClubEstimator(nn.Module):
    """q(y | x) = N(μ(x), diag exp(logvar(x))); μ: Linear–ReLU–Linear, logvar: same + tanh."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(16, min(512, x_dim // 2))
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh()
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(x), self.logvar(x)


def club_bound(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CLUB upper bound on I(x; y) for paired rows (x_i, y_i), exact over all N² pairs.

    mean_i [ Σ_d −(μ_i − y_i)² / 2e^{lv_i} − Σ_d mean_j −(y_j − μ_i)² / 2e^{lv_i} ]. The mean over
    j is expanded as E[y²] − 2 μ_i E[y] + μ_i², so the cost is O(N·d) instead of O(N²·d).
    """
    inv = 0.5 * torch.exp(-logvar)
    positive = -((mu - y) ** 2 * inv).sum(dim=1)
    mean_sq_dist = (y**2).mean(dim=0) - 2 * mu * y.mean(dim=0) + mu**2
    negative = -(mean_sq_dist * inv).sum(dim=1)
    return (positive - negative).mean()


def club_estimator_loss(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of y under q (up to constants): −mean_i Σ_d [−(μ−y)²/e^{lv} − lv]."""
    return -(-((mu - y) ** 2) / logvar.exp() - logvar).sum(dim=1).mean()


def three_head_loss(
    bin_logits: torch.Tensor,
    in_logits: torch.Tensor,
    out_logits: torch.Tensor,
    is_outlier: torch.Tensor,
    labels: torch.Tensor,
    lam: float = 0.3,
) -> torch.Tensor:
    """mean_i [CE(bin_i, I_i) + (1 − I_i)·CE(in_i, ỹ_i) + I_i·λ·CE(out_i, ỹ_i)]; I = 1: outlier."""
    flag = is_outlier.float()
    ce_bin = F.cross_entropy(bin_logits, is_outlier.long(), reduction="none")
    ce_in = F.cross_entropy(in_logits, labels, reduction="none")
    ce_out = F.cross_entropy(out_logits, labels, reduction="none")
    return (ce_bin + (1 - flag) * ce_in + flag * lam * ce_out).mean()
