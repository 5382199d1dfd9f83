"""Post-hoc OOD scores as pure tensor functions; every one returns ``id_score`` (higher = ID).

Sign conventions follow docs/methods.md §1 and §5: MSP = max softmax, energy = T·logsumexp(z/T),
max-logit = max z, kNN = −(squared distance to the k-th L2-normalised ID-train feature),
SD vote = −(Σ of squared distances to the k nearest ID-train features + α·#outliers among the
k nearest of ID ∪ outliers).
"""

from __future__ import annotations

import torch

from oodkit.neighbors import knn_search


def msp(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=1).amax(dim=1)


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return temperature * torch.logsumexp(logits / temperature, dim=1)


def maxlogit(logits: torch.Tensor) -> torch.Tensor:
    return logits.amax(dim=1)


def l2_normalise(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def knn_score(
    query: torch.Tensor, train: torch.Tensor, k: int = 50, backend: str = "auto"
) -> torch.Tensor:
    """−(squared L2 distance to the k-th nearest normalised ID-train feature), as OpenOOD."""
    dist, _ = knn_search(l2_normalise(query), l2_normalise(train), k, backend=backend)
    return -dist[:, -1]


def sd_vote_score(
    query: torch.Tensor,
    train: torch.Tensor,
    outliers: torch.Tensor,
    k: int = 10,
    alpha: float = 0.3,
    backend: str = "auto",
) -> torch.Tensor:
    """SD score (docs/methods.md §5), negated:
    −(Σ_{i≤k} d²(x, ID_i) + α·#outliers in kNN(ID ∪ out)); features are L2-normalised."""
    q, tr, ou = l2_normalise(query), l2_normalise(train), l2_normalise(outliers)
    d_id, _ = knn_search(q, tr, k, backend=backend)
    d_out, _ = knn_search(q, ou, min(k, len(ou)), backend=backend)
    merged = torch.cat([d_id, d_out], dim=1)
    from_outliers = torch.cat([torch.zeros_like(d_id), torch.ones_like(d_out)], dim=1)
    nearest = merged.topk(k, dim=1, largest=False).indices
    votes = from_outliers.gather(1, nearest).sum(dim=1)
    return -(d_id.sum(dim=1) + alpha * votes)
