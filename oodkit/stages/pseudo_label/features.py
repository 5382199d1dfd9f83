"""Features for clustering: a timm backbone with projection and cluster heads, its SimCLR
pretext training, the augmentations of every stage, and batched evaluation passes.

Each stage is an epoch loop over shuffled index batches derived from (seed, stage, epoch);
every augmentation is keyed by (seed, stage, epoch, sample), so results do not depend on how
samples are spread over processes. Under ``accelerate launch`` each process takes 1/world of
every global batch; NT-Xent sees the whole global batch through a gradient-carrying
all-gather, so a step equals the single-process step (BatchNorm is synchronised on CUDA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from oodkit.data.images import SMALL_INPUT, normalisation
from oodkit.models.backbone import create_backbone
from oodkit.seeding import seed_default_generator
from oodkit.stages.pseudo_label.losses import nt_xent
from oodkit.training import check_world, epoch_batches, finite_loss, gather_batch, rank_world

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
        self.backbone = create_backbone(
            arch, in_chans, arch_kwargs, small_input_stem=image_size < SMALL_INPUT
        )
        dim = self.backbone.num_features
        self.dim = dim
        self.projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))
        self.heads = nn.ModuleList(nn.Linear(dim, num_clusters) for _ in range(num_heads))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


class Clusters(nn.Module):
    """Backbone + all heads → [heads, B, C] logits; trained (and DDP-wrapped) by SCAN."""

    def __init__(self, net: FeatureNet) -> None:
        super().__init__()
        self.backbone, self.heads = net.backbone, net.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return torch.stack([h(f) for h in self.heads])


def transforms(channels: int, size: int, flip: bool) -> dict[str, Callable]:
    """eval, SimCLR, weak and strong augmentations (docs/methods.md §6)."""
    from torchvision.transforms import v2

    mean, std = normalisation(channels)
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    flips = [v2.RandomHorizontalFlip()] if flip else []
    base = [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    colour = [
        v2.RandomApply(
            [v2.ColorJitter(0.4, 0.4, 0.4 if channels == 3 else 0, 0.1 if channels == 3 else 0)],
            p=0.8,
        )
    ]
    if channels == 3:
        colour.append(v2.RandomGrayscale(p=0.2))
    simclr = v2.Compose(
        [
            *base,
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
            v2.RandomAffine(degrees=10),
            *flips,
            *colour,
            *tail,
        ]
    )
    weak = v2.Compose([*base, v2.RandomCrop(size, padding=max(1, size // 8)), *flips, *tail])
    strong = v2.Compose(
        [
            *base,
            v2.RandomCrop(size, padding=max(1, size // 8)),
            *flips,
            v2.RandAugment(num_ops=2, magnitude=9),
            *tail,
            v2.RandomErasing(p=0.5),
        ]
    )
    return {"eval": v2.Compose([*base, *tail]), "simclr": simclr, "weak": weak, "strong": strong}


def batch_images(
    images: Sequence, transform: Callable, indices: list[int], *key: int
) -> torch.Tensor:
    """Transformed images; with a ``key`` each sample's randomness comes from (key, index)."""
    out = []
    for i in indices:
        if key:  # CPU transforms draw from the default generator (torch.manual_seed is slower)
            seed_default_generator(*key, i)
        out.append(transform(images[i]))
    return torch.stack(out)


def rank_batches(n: int, batch_size: int, seed: int, epoch: int, stream: int) -> list[list[int]]:
    """This process's share of each global batch (the union over ranks is the global batch)."""
    rank, world = rank_world()
    steps = max(1, n // batch_size)
    return epoch_batches(n, batch_size, seed, epoch, stream, steps, rank, world)


def train_simclr(
    net: FeatureNet,
    images: Sequence,
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
        for batch in rank_batches(len(images), batch_size, seed, epoch, PRETEXT):
            views = torch.cat(
                [
                    batch_images(images, augment, batch, seed, PRETEXT, epoch, VIEW_1),
                    batch_images(images, augment, batch, seed, PRETEXT, epoch, VIEW_2),
                ]
            ).to(dev)
            z1, z2 = model(views).float().chunk(2)
            loss = nt_xent(gather_batch(z1), gather_batch(z2), temperature)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            sched.step()
            total += loss.detach()
        log.append(
            finite_loss((total / steps).item(), f"of SimCLR epoch {epoch + 1}", "--pretext-lr")
        )
        if progress is not None:
            progress(epoch + 1, log[-1])
    return log


@torch.no_grad()
def batched_eval(
    fn: Callable[[torch.Tensor], torch.Tensor],
    net: FeatureNet,
    images: Sequence,
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
            fn(batch_images(images, transform, mine[i : i + batch_size]).to(device)).float()
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
    net: FeatureNet, images: Sequence, transform: Callable, device, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised backbone features of all images (eval transform)."""
    return F.normalize(
        batched_eval(net.features, net, images, transform, device, batch_size, 0), dim=1
    )
