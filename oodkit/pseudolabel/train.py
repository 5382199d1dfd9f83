"""SimCLR pretext training, SCAN clustering and self-labelling (Van Gansbeke et al. 2020).

Each stage is an epoch loop over shuffled index batches derived from (seed, stage, epoch);
every augmentation and neighbour pick is keyed by (seed, stage, epoch, sample), so results
do not depend on how samples are spread over processes. Under ``accelerate launch`` each
process takes 1/world of every global batch; the batch-coupled losses (NT-Xent negatives,
SCAN entropy, self-label class balance) see the whole global batch through a gradient-carrying
all-gather, so a step equals the single-process step (BatchNorm is synchronised on CUDA).
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

Progress = Callable[[int, float], None]  # (epochs done, mean loss of the epoch)

# random streams: one per stage and purpose, so no two choices share a generator
PRETEXT, SCAN_BATCHES, SCAN_PICKS, SCAN_VAL, SELF_LABEL = 10, 20, 21, 22, 30
VIEW_1, VIEW_2 = 1, 2


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


class _Clusters(nn.Module):
    """Backbone + all heads → [heads, B, C] logits; trained (and DDP-wrapped) by SCAN."""

    def __init__(self, net: FeatureNet) -> None:
        super().__init__()
        self.backbone, self.heads = net.backbone, net.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return torch.stack([h(f) for h in self.heads])


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _images(images: list, transform: Callable, indices: list[int], *key: int) -> torch.Tensor:
    """Transformed images; with a ``key`` each sample's randomness comes from (key, index)."""
    out = []
    for i in indices:
        if key:  # CPU transforms draw from the default generator (torch.manual_seed is slower)
            torch.default_generator.manual_seed(_seed(*key, i))
        out.append(transform(images[i]))
    return torch.stack(out)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``x`` of every process joined along ``dim`` (rank order), gradients flowing back."""
    _, world = rank_world()
    if world == 1:
        return x
    from torch.distributed import group
    from torch.distributed._functional_collectives import all_gather_single  # autograd-aware

    return all_gather_single(x.movedim(dim, 0).contiguous(), 0, group.WORLD).movedim(0, dim)


def _rank_batches(n: int, batch_size: int, seed: int, epoch: int, stream: int) -> list[list[int]]:
    """This process's share of each global batch (the union over ranks is the global batch)."""
    rank, world = rank_world()
    steps = max(1, n // batch_size)
    return epoch_batches(n, batch_size // world, seed, epoch, stream, steps, rank, world)


def check_world(batch_size: int, what: str) -> None:
    """A global batch must split evenly over the processes."""
    from oodkit.errors import OodkitError

    _, world = rank_world()
    if batch_size % world:
        raise OodkitError(f"{what} {batch_size} does not split over {world} processes")


def train_simclr(
    net: FeatureNet,
    images: list,
    augment: Callable,
    *,
    accelerator,
    epochs: int,
    batch_size: int,
    lr: float,
    temperature: float,
    seed: int,
    progress: Progress | None = None,
) -> list[float]:
    """NT-Xent on two augmented views per image; SGD with cosine decay. Returns epoch losses."""
    check_world(batch_size, "--pretext-batch-size")
    module = nn.Sequential(net.backbone, net.projection).train()
    opt = torch.optim.SGD(
        module.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    steps = max(1, len(images) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps)
    model, opt = accelerator.prepare(module, opt)
    dev = accelerator.device
    log = []
    for epoch in range(epochs):
        total = torch.zeros((), device=dev)
        for batch in _rank_batches(len(images), batch_size, seed, epoch, PRETEXT):
            views = torch.cat(
                [
                    _images(images, augment, batch, seed, PRETEXT, epoch, VIEW_1),
                    _images(images, augment, batch, seed, PRETEXT, epoch, VIEW_2),
                ]
            ).to(dev)
            z1, z2 = model(views).float().chunk(2)
            loss = nt_xent(gather_batch(z1), gather_batch(z2), temperature)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            sched.step()
            total += loss.detach()
        log.append((total / steps).item())
        if progress is not None:
            progress(epoch + 1, log[-1])
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
    """``fn`` over all images in eval mode, joined along ``dim`` on the CPU.

    Each process computes every world-th image; the parts are gathered back in order.
    """
    rank, world = rank_world()
    device = torch.device(device)
    net.to(device).eval()
    mine = list(range(rank, len(images), world))
    with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
        parts = [
            fn(_images(images, transform, mine[i : i + batch_size]).to(device)).float()
            for i in range(0, len(mine), batch_size)
        ]
    local = torch.cat(parts, dim=dim).movedim(dim, 0)
    if world > 1:
        n, per = len(images), -(-len(images) // world)
        padded = local.new_zeros(per, *local.shape[1:])
        padded[: len(local)] = local
        shares = gather_batch(padded.unsqueeze(0))  # [world, per, ...]
        local = local.new_empty(n, *local.shape[1:])
        for r in range(world):
            local[r::world] = shares[r, : len(range(r, n, world))]
    return local.movedim(0, dim).cpu()


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


def _neighbor_picks(neighbors: torch.Tensor, *key: int) -> torch.Tensor:
    """One neighbour per anchor, drawn uniformly from its list by a generator keyed by ``key``."""
    rng = np.random.default_rng(_seed(*key))
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
    images: list,
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
    model, opt = _adam_stage(accelerator, _Clusters(net), net.backbone, lr)
    dev = accelerator.device
    steps = max(1, len(images) // batch_size)
    heads = len(net.heads)
    log = []
    for epoch in range(epochs):
        picks = _neighbor_picks(neighbors, seed, SCAN_PICKS, epoch)
        total = torch.zeros((), device=dev)
        for batch in _rank_batches(len(images), batch_size, seed, epoch, SCAN_BATCHES):
            mates = picks[batch].tolist()
            x = torch.cat(
                [
                    _images(images, augment, batch, seed, SCAN_BATCHES, epoch, VIEW_1),
                    _images(images, augment, mates, seed, SCAN_BATCHES, epoch, VIEW_2),
                ]
            ).to(dev)
            a, n = (gather_batch(t, dim=1) for t in model(x).float().chunk(2, dim=1))
            loss = sum(scan_loss(a[h], n[h], entropy_weight)[0] for h in range(heads))
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            total += loss.detach()
        log.append((total / steps).item() / heads)
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
    net: FeatureNet, images: list, transform: Callable, device, batch_size: int = 256
) -> torch.Tensor:
    """[heads, N, C] cluster logits of all images (eval transform)."""
    return _batched(_Clusters(net), net, images, transform, device, batch_size, 1)


def train_self_label(
    net: FeatureNet,
    head: int,
    images: list,
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
        for batch in _rank_batches(len(images), batch_size, seed, epoch, SELF_LABEL):
            with torch.no_grad():
                w = model(_images(images, weak, batch, seed, SELF_LABEL, epoch, VIEW_1).to(dev))
            s = model(_images(images, strong, batch, seed, SELF_LABEL, epoch, VIEW_2).to(dev))
            loss = self_label_loss(
                gather_batch(w.float()), gather_batch(s.float()), threshold, balance
            )
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            total += loss.detach()
        log.append((total / steps).item())
        if progress is not None:
            progress(epoch + 1, log[-1])
    return log
