"""SCAN clustering (Van Gansbeke et al. 2020, docs/methods.md §6): neighbour mining, clustering
heads trained with the SCAN loss, head selection, self-labelling; ``cluster`` runs them as
the ``scan`` method of ``oodkit pseudo-label``, each finished stage kept for resumption.

Neighbour picks and augmentations are keyed by (seed, stage, epoch, sample); the SCAN entropy
term and the class-balanced self-labelling weights see the whole global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oodkit.neighbors import knn_search
from oodkit.seeding import numpy_rng, seed_int
from oodkit.stages.pseudo_label.features import (
    SCAN_BATCHES,
    SCAN_PICKS,
    SCAN_VAL,
    SELF_LABEL,
    VIEW_1,
    VIEW_2,
    Clusters,
    FeatureNet,
    Progress,
    batch_images,
    batched_eval,
    rank_batches,
)
from oodkit.stages.pseudo_label.losses import scan_loss, self_label_loss
from oodkit.training import check_world, finite_loss, gather_batch


def mine_neighbors(features: torch.Tensor, k: int) -> torch.Tensor:
    """[N, k] indices of each sample's k nearest neighbours by cosine, itself included."""
    _, idx = knn_search(F.normalize(features, dim=1), F.normalize(features, dim=1), k)
    return idx


def _neighbor_picks(neighbors: torch.Tensor, *key: int) -> torch.Tensor:
    """One neighbour per anchor, drawn uniformly from its list by a generator keyed by ``key``."""
    rng = numpy_rng(seed_int(*key))
    cols = torch.from_numpy(rng.integers(neighbors.shape[1], size=neighbors.shape[0]))
    return neighbors.gather(1, cols[:, None]).squeeze(1)


def _adam_stage(accelerator, module: nn.Module, backbone: nn.Module, lr: float):
    """Train mode (a frozen backbone stays in eval, keeping its BatchNorm statistics), Adam on
    the trainable parameters, both prepared for the accelerator."""
    module.train()
    if not any(p.requires_grad for p in backbone.parameters()):
        backbone.eval()
    params = [p for p in module.parameters() if p.requires_grad]
    return accelerator.prepare(module, torch.optim.Adam(params, lr=lr, weight_decay=1e-4))


def train_scan(
    net: FeatureNet,
    images: Sequence,
    neighbors: torch.Tensor,
    augment: Callable,
    *,
    accelerator,
    epochs: int,
    batch_size: int,
    lr: float,
    entropy_weight: float,
    seed: int,
    progress: Progress | None = None,
) -> list[float]:
    """Train all heads (and the backbone unless frozen) with the SCAN loss; epoch losses.

    Anchors and their drawn neighbours go through one forward.
    """
    check_world(batch_size, "--scan-batch-size")
    model, opt = _adam_stage(accelerator, Clusters(net), net.backbone, lr)
    dev = accelerator.device
    steps = max(1, len(images) // batch_size)
    heads = len(net.heads)
    log = []
    for epoch in range(epochs):
        picks = _neighbor_picks(neighbors, seed, SCAN_PICKS, epoch)
        total = torch.zeros((), device=dev)
        for batch in rank_batches(len(images), batch_size, seed, epoch, SCAN_BATCHES):
            mates = picks[batch].tolist()
            x = torch.cat(
                [
                    batch_images(images, augment, batch, seed, SCAN_BATCHES, epoch, VIEW_1),
                    batch_images(images, augment, mates, seed, SCAN_BATCHES, epoch, VIEW_2),
                ]
            ).to(dev)
            a, n = (gather_batch(t, dim=1) for t in model(x).float().chunk(2, dim=1))
            loss = sum(scan_loss(a[h], n[h], entropy_weight)[0] for h in range(heads))
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            total += loss.detach()
        log.append(
            finite_loss((total / steps).item() / heads, f"of SCAN epoch {epoch + 1}", "--scan-lr")
        )
        if progress is not None:
            progress(epoch + 1, log[-1])
    return log


def select_head(
    logits: torch.Tensor, neighbors: torch.Tensor, seed: int
) -> tuple[int, list[float]]:
    """The head with the lowest SCAN loss at entropy weight 1 over the whole set, from
    [heads, N, C] eval logits; returns it and every head's loss."""
    picks = _neighbor_picks(neighbors, seed, SCAN_VAL)
    losses = [scan_loss(h, h[picks], 1.0)[0].item() for h in logits]
    return int(np.argmin(losses)), losses


def cluster_logits_all(
    net: FeatureNet, images: Sequence, transform: Callable, device, batch_size: int = 256
) -> torch.Tensor:
    """[heads, N, C] cluster logits of all images (eval transform)."""
    return batched_eval(Clusters(net), net, images, transform, device, batch_size, 1)


def train_self_label(
    net: FeatureNet,
    head: int,
    images: Sequence,
    weak: Callable,
    strong: Callable,
    *,
    accelerator,
    epochs: int,
    batch_size: int,
    lr: float,
    threshold: float,
    balance: bool,
    seed: int,
    progress: Progress | None = None,
) -> list[float]:
    """Fine-tune backbone + the chosen head on confident samples (weak → target, strong → CE)."""
    check_world(batch_size, "--scan-batch-size")
    module = nn.Sequential(net.backbone, net.heads[head])
    model, opt = _adam_stage(accelerator, module, net.backbone, lr)
    dev = accelerator.device
    steps = max(1, len(images) // batch_size)
    log = []
    for epoch in range(epochs):
        total = torch.zeros((), device=dev)
        for batch in rank_batches(len(images), batch_size, seed, epoch, SELF_LABEL):
            with torch.no_grad():
                w = model(
                    batch_images(images, weak, batch, seed, SELF_LABEL, epoch, VIEW_1).to(dev)
                )
            s = model(batch_images(images, strong, batch, seed, SELF_LABEL, epoch, VIEW_2).to(dev))
            loss = self_label_loss(
                gather_batch(w.float()), gather_batch(s.float()), threshold, balance
            )
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            total += loss.detach()
        log.append(
            finite_loss(
                (total / steps).item(), f"of self-labelling epoch {epoch + 1}", "--selflabel-lr"
            )
        )
        if progress is not None:
            progress(epoch + 1, log[-1])
    return log


def _scan_heads(ctx, neighbors: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Train (or reuse) the SCAN heads; returns the best head and its eval logits."""
    o, n = ctx.o, len(ctx.images)
    scan_path = ctx.partial / "scan.safetensors"
    if not ctx.reuse(scan_path, "SCAN"):
        ctx.log["scan_loss"] = train_scan(
            ctx.net,
            ctx.images,
            neighbors,
            ctx.tf["weak"],
            accelerator=ctx.acc,
            epochs=o.scan_epochs,
            batch_size=min(o.scan_batch_size, n),
            lr=o.scan_lr,
            entropy_weight=o.entropy_weight,
            seed=o.seed,
            progress=ctx.progress("SCAN clustering", o.scan_epochs),
        )
    # one eval pass serves head selection, the pre-self-label metrics and, without
    # self-labelling, the final clusters
    logits = cluster_logits_all(ctx.net, ctx.images, ctx.tf["eval"], ctx.acc.device)
    head, ctx.log["scan_head_losses"] = select_head(logits, neighbors, o.seed)
    if not scan_path.exists():
        ctx.finish(scan_path)
    ctx.summary["best_head"] = head
    return head, logits[head]


def cluster(ctx, features: torch.Tensor, kmeans) -> tuple[np.ndarray, np.ndarray]:
    """The ``scan`` method: neighbours → SCAN heads → best head → self-labelling (optional)."""
    o, n = ctx.o, len(ctx.images)
    neighbors = mine_neighbors(features, o.num_neighbors)
    ctx.report(
        "neighbor_purity", lambda true: float((true[neighbors.numpy()] == true[:, None]).mean())
    )
    if o.features != "simclr":
        for p in ctx.net.backbone.parameters():
            p.requires_grad_(False)  # frozen pretrained backbone: heads only
    head, logits = _scan_heads(ctx, neighbors)
    if o.selflabel_epochs > 0:
        ctx.report_clusters("before_self_label", logits.argmax(1).numpy())
        self_path = ctx.partial / "selflabel.safetensors"
        if not ctx.reuse(self_path, "self-labelling"):
            ctx.log["selflabel_loss"] = train_self_label(
                ctx.net,
                head,
                ctx.images,
                ctx.tf["weak"],
                ctx.tf["strong"],
                accelerator=ctx.acc,
                epochs=o.selflabel_epochs,
                batch_size=min(o.scan_batch_size, n),
                lr=o.selflabel_lr,
                threshold=o.threshold,
                balance=o.balance,
                seed=o.seed,
                progress=ctx.progress("self-labelling", o.selflabel_epochs),
            )
            ctx.finish(self_path)
        logits = cluster_logits_all(ctx.net, ctx.images, ctx.tf["eval"], ctx.acc.device)[head]
    confidence, clusters = (t.numpy() for t in logits.softmax(dim=1).max(dim=1))
    return clusters, confidence
