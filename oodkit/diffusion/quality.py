"""Class-conditional samples from pure noise with classifier-free guidance: a per-class grid
for viewing, and how often a separately trained classifier recognises the conditioning class."""

from __future__ import annotations

from pathlib import Path

import torch

from oodkit.diffusion.denoisers import PixelClassDenoiser
from oodkit.seeding import torch_generator


@torch.no_grad()
def class_samples(
    denoiser: PixelClassDenoiser,
    per_class: int,
    steps: int = 25,
    scale: float = 2.0,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` CFG samples of every class as images in [0, 1], with their labels."""
    from oodkit.diffusion.guidance import cfg_eps
    from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler

    labels = torch.arange(denoiser.num_classes).repeat_interleave(per_class)
    c, s = denoiser.channels, denoiser.image_size
    noise = torch.randn(len(labels), c, s, s, generator=torch_generator(seed))
    sampler = DDIMSampler(ddim_scheduler(denoiser.scheduler_config), steps)
    out = []
    for lo in range(0, len(labels), batch_size):
        lab = labels[lo : lo + batch_size].tolist()
        cond = denoiser.condition([[None] * len(lab), lab])

        def eps(xa, t, rows, k, cond=cond):
            e = denoiser.eps(xa, t, cond[:, rows])
            return cfg_eps(e[1], e[0], scale)

        x = noise[lo : lo + batch_size].to(denoiser.device)
        out.append(denoiser.decode(sampler.denoise(x, [steps] * len(lab), eps)).cpu())
    return torch.cat(out), labels


@torch.no_grad()
def recognition_rate(denoiser: PixelClassDenoiser, detector, per_class: int = 50, **kw) -> float:
    """Fraction of class-conditional samples that ``detector`` classifies as their class."""
    from torchvision.transforms import v2

    images, labels = class_samples(denoiser, per_class, **kw)
    cfg = detector.config
    norm = v2.Normalize(cfg.mean, cfg.std)
    x = norm(v2.functional.resize(images, [cfg.image_size, cfg.image_size], antialias=True))
    pred = detector(x.to(next(detector.parameters()).device))["logits"].argmax(1).cpu()
    return float((pred == labels).float().mean())


@torch.no_grad()
def sample_grid(
    denoiser: PixelClassDenoiser,
    path: Path,
    per_class: int = 8,
    steps: int = 25,
    scale: float = 2.0,
    seed: int = 0,
) -> None:
    """A grid with one row per class: CFG samples from pure noise (all steps)."""
    from PIL import Image

    c, s = denoiser.channels, denoiser.image_size
    img, _ = class_samples(denoiser, per_class, steps=steps, scale=scale, seed=seed)
    grid = (
        img.view(denoiser.num_classes, per_class, c, s, s)
        .permute(0, 3, 1, 4, 2)
        .reshape(denoiser.num_classes * s, per_class * s, c)
    )
    arr = (grid * 255).round().to(torch.uint8).numpy()
    Image.fromarray(arr[..., 0] if c == 1 else arr).resize(
        (per_class * s * 4, denoiser.num_classes * s * 4), Image.NEAREST
    ).save(path)
