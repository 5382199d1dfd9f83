"""SimCLR pretext training, SCAN clustering and self-labelling (Van Gansbeke et al. 2020).

Each stage is an epoch loop over shuffled index batches derived from (seed, stage, epoch);
stage results are saved as safetensors so an interrupted run restarts at the stage it was in.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oodkit.detector.data import epoch_batches
from oodkit.detector.model import SMALL_INPUT, _adapt_small_input_stem
from oodkit.pseudolabel.losses import nt_xent, scan_loss, self_label_loss


class FeatureNet(nn.Module):
    """timm backbone (CIFAR-style stem below 64 px) with a projection head and cluster heads."""

    def __init__(
        self,
        arch: str,
        in_chans: int,
        image_size: int,
        arch_kwargs: dict | None = None,
        proj_dim: int = 128,
        num_clusters: int = 0,
        num_heads: int = 0,
    ) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model(
            arch, num_classes=0, in_chans=in_chans, **(arch_kwargs or {})
        )
        if image_size < SMALL_INPUT:
            _adapt_small_input_stem(self.backbone, in_chans)
        dim = self.backbone.num_features
        self.dim = dim
        self.projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))
        self.heads = nn.ModuleList(nn.Linear(dim, num_clusters) for _ in range(num_heads))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[heads, B, C]"""
        f = self.backbone(x)
        return torch.stack([h(f) for h in self.heads])


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _images(images: list, transform: Callable, indices: list[int]) -> torch.Tensor:
    return torch.stack([transform(images[i]) for i in indices])


def train_simclr(
    net: FeatureNet,
    images: list,
    augment: Callable,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    temperature: float,
    seed: int,
    device,
    progress=None,
) -> list[float]:
    """NT-Xent on two augmented views per image; SGD with cosine decay. Returns epoch losses."""
    net.to(device).train()
    params = list(net.backbone.parameters()) + list(net.projection.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = max(1, len(images) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps)
    log = []
    for epoch in range(epochs):
        torch.manual_seed(_seed(seed, 1, epoch))
        total = torch.zeros((), device=device)
        for batch in epoch_batches(len(images), batch_size, seed, epoch, 10, steps):
            v1 = _images(images, augment, batch).to(device)
            v2 = _images(images, augment, batch).to(device)
            loss = nt_xent(
                net.projection(net.features(v1)), net.projection(net.features(v2)), temperature
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        log.append((total / steps).item())
        if progress is not None:
            progress(f"pretext epoch {epoch + 1}/{epochs} loss {log[-1]:.4f}")
    return log


@torch.no_grad()
def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    net: FeatureNet,
    images: list,
    transform: Callable,
    device,
    batch_size: int,
    dim: int,
) -> torch.Tensor:
    """``fn`` over all images in eval mode, batch by batch, joined along ``dim`` on the CPU."""
    net.to(device).eval()
    parts = [
        fn(_images(images, transform, list(range(i, min(i + batch_size, len(images))))).to(device))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts, dim=dim).cpu()


def embed(
    net: FeatureNet, images: list, transform: Callable, device, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised backbone features of all images (eval transform)."""
    return F.normalize(_batched(net.features, net, images, transform, device, batch_size, 0), dim=1)


def mine_neighbors(features: torch.Tensor, k: int) -> torch.Tensor:
    """[N, k] indices of each sample's k nearest neighbours by cosine, itself included."""
    from oodkit.scoring.knn import knn_search

    _, idx = knn_search(F.normalize(features, dim=1), F.normalize(features, dim=1), k)
    return idx


def train_scan(
    net: FeatureNet,
    images: list,
    neighbors: torch.Tensor,
    augment: Callable,
    eval_transform: Callable,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    entropy_weight: float,
    seed: int,
    device,
    progress=None,
) -> tuple[int, list[float]]:
    """Train all heads (and the backbone) with the SCAN loss; return the best head and its losses.

    The best head has the lowest SCAN loss with entropy weight 1 over the whole set.
    """
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, len(images) // batch_size)
    for epoch in range(epochs):
        torch.manual_seed(_seed(seed, 2, epoch))
        rng = np.random.default_rng(_seed(seed, 3, epoch))
        total = torch.zeros((), device=device)
        for batch in epoch_batches(len(images), batch_size, seed, epoch, 20, steps):
            picks = [int(neighbors[i, rng.integers(neighbors.shape[1])]) for i in batch]
            a = net.cluster_logits(_images(images, augment, batch).to(device))
            n = net.cluster_logits(_images(images, augment, picks).to(device))
            loss = sum(scan_loss(a[h], n[h], entropy_weight)[0] for h in range(len(net.heads)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        if progress is not None:
            mean = (total / steps).item() / len(net.heads)
            progress(f"SCAN epoch {epoch + 1}/{epochs} loss {mean:.4f}")
    logits = cluster_logits_all(net, images, eval_transform, device)
    rng = np.random.default_rng(_seed(seed, 4))
    picks = torch.tensor(
        [int(neighbors[i, rng.integers(neighbors.shape[1])]) for i in range(len(images))]
    )
    losses = [scan_loss(logits[h], logits[h][picks], 1.0)[0].item() for h in range(len(net.heads))]
    return int(np.argmin(losses)), losses


def cluster_logits_all(
    net: FeatureNet, images: list, transform: Callable, device, batch_size: int = 256
) -> torch.Tensor:
    """[heads, N, C] cluster logits of all images (eval transform)."""
    return _batched(net.cluster_logits, net, images, transform, device, batch_size, 1)


def train_self_label(
    net: FeatureNet,
    head: int,
    images: list,
    weak: Callable,
    strong: Callable,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    threshold: float,
    balance: bool,
    seed: int,
    device,
    progress=None,
) -> list[float]:
    """Fine-tune backbone + the chosen head on confident samples (weak → target, strong → CE)."""
    net.to(device).train()
    params = list(net.backbone.parameters()) + list(net.heads[head].parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    steps = max(1, len(images) // batch_size)
    log = []
    for epoch in range(epochs):
        torch.manual_seed(_seed(seed, 5, epoch))
        total = torch.zeros((), device=device)
        for batch in epoch_batches(len(images), batch_size, seed, epoch, 30, steps):
            with torch.no_grad():
                weak_logits = net.heads[head](net.features(_images(images, weak, batch).to(device)))
            strong_logits = net.heads[head](net.features(_images(images, strong, batch).to(device)))
            loss = self_label_loss(weak_logits, strong_logits, threshold, balance)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        log.append((total / steps).item())
        if progress is not None:
            progress(f"self-label epoch {epoch + 1}/{epochs} loss {log[-1]:.4f}")
    return log
