"""Pure losses of the pseudo-labelling stages (docs/methods.md §6).

- ``nt_xent``: SimCLR's normalised-temperature cross-entropy over 2N augmented views.
- ``scan_loss``: −mean_i log⟨p(a_i), p(n_i)⟩ − w·H(mean_i p(a_i)) (consistency + entropy).
- ``self_label_loss``: cross-entropy on strong views for samples whose weak-view confidence
  exceeds the threshold, optionally weighted inversely to each class's share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Mean over the 2N views of −log softmax(sim / τ) at the positive pair (self excluded)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def entropy(p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return -(p * (p + eps).log()).sum(dim=-1)


def scan_loss(
    anchor_logits: torch.Tensor, neighbor_logits: torch.Tensor, entropy_weight: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, consistency, entropy) with total = consistency − w·H(mean anchor probability)."""
    pa, pn = anchor_logits.softmax(dim=1), neighbor_logits.softmax(dim=1)
    similarity = (pa * pn).sum(dim=1)
    consistency = -similarity.clamp_min(1e-8).log().mean()
    ent = entropy(pa.mean(dim=0))
    return consistency - entropy_weight * ent, consistency, ent


def self_label_loss(
    weak_logits: torch.Tensor,
    strong_logits: torch.Tensor,
    threshold: float = 0.99,
    balance: bool = True,
) -> torch.Tensor:
    """CE(strong, argmax weak) over confident samples; class-balanced weights if asked."""
    prob = weak_logits.softmax(dim=1)
    conf, target = prob.max(dim=1)
    mask = conf > threshold
    if not mask.any():
        return strong_logits.sum() * 0.0
    target = target[mask]
    weight = None
    if balance:
        counts = torch.bincount(target, minlength=weak_logits.shape[1]).float()
        freq = counts / counts.sum()
        weight = torch.where(counts > 0, 1.0 / freq.clamp_min(1e-12), torch.zeros_like(freq))
    return F.cross_entropy(strong_logits[mask], target, weight=weight)
