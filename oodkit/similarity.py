"""Image similarity between two batches of images in [0, 1] (piq-based), per image.

Used for generation quality (outlier vs source) and DiffGuard's synthesis vs reference
scores. ``similarity(name, images, references)`` returns one value per image where **higher
means more alike**, so it is an ID score directly: distances enter negated (``gmsd`` → −GMSD,
``l2`` → −‖x − y‖₂). ``logits_l1`` is the paper's CIFAR-10 choice, −‖f(x) − f(y)‖₁ between a
classifier's logits. ``dists`` and ``lpips`` (1 − piq's distance, the official DiffGuard
convention) need VGG16 weights on disk (``oodkit.perceptual``); ``measure`` loads them once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from oodkit.errors import OodkitError

if TYPE_CHECKING:
    from pathlib import Path

    import torch

MS_SSIM_MIN_SIDE = 161  # 5 scales of an 11-pixel window (piq's default weights)


def _window(images: torch.Tensor) -> int:
    """SSIM window: 11 px, shrunk to an odd size that fits small images."""
    return max(1, min(11, min(images.shape[-2:]) // 2 * 2 - 1))


def _ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    return piq.ssim(x, y, data_range=1.0, reduction="none", kernel_size=_window(x))


def _ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise OodkitError(
            f"ms-ssim needs images of at least {MS_SSIM_MIN_SIDE} px a side "
            f"(these are {x.shape[-2]}×{x.shape[-1]}); use ssim"
        )
    return piq.multi_scale_ssim(x, y, data_range=1.0, reduction="none")


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    # piq adds 1e-8 to the MSE: identical images score 80 dB, never infinity
    return piq.psnr(x, y, data_range=1.0, reduction="none")


def _gmsd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    return -piq.gmsd(x, y, data_range=1.0, reduction="none")


def _l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -(x - y).flatten(1).norm(dim=1)


SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ssim": _ssim,
    "ms-ssim": _ms_ssim,
    "psnr": _psnr,
    "gmsd": _gmsd,
    "l2": _l2,
}


PERCEPTUAL = ("dists", "lpips")  # networks with local weights
DISTANCES = ("logits-l1", *SIMILARITIES, *PERCEPTUAL)  # DiffGuard: synthesis vs reference


def similarity(name: str, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image similarity [B] (higher = more alike) of two [B, C, H, W] batches in [0, 1]."""
    if name not in SIMILARITIES:
        raise OodkitError(f"unknown similarity {name!r} (one of {', '.join(SIMILARITIES)})")
    x, y = images.float().clamp(0, 1), references.float().clamp(0, 1)
    return SIMILARITIES[name](x, y)


def measure(
    name: str, weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``similarity`` for ``name`` as a function of two batches; DISTS and LPIPS load their
    network once from ``weights`` (a folder; default torch's hub cache), 1-channel images
    entering as grey RGB, clamped to [0, 1] unless called with ``clamp=False`` (DiffGuard's
    official stop rule feeds noisy latents as they are)."""
    if name not in PERCEPTUAL:
        if name not in SIMILARITIES:
            raise OodkitError(f"unknown similarity {name!r} (one of {', '.join(SIMILARITIES)})")
        return lambda x, y: similarity(name, x, y)
    from oodkit.perceptual import load_metric

    net = load_metric(name, weights).to(device)

    def perceptual(x: torch.Tensor, y: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        x, y = (v.float().to(device) for v in (x, y))
        if clamp:
            x, y = x.clamp(0, 1), y.clamp(0, 1)
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return 1 - net(x, y)

    return perceptual


def logits_l1(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """−‖f(x) − f(y)‖₁ per image between a classifier's logits [B, K]."""
    return -(logits.float() - reference_logits.float()).abs().sum(dim=1)


def ssim_psnr(images: torch.Tensor, references: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image SSIM (window shrunk for small images) and PSNR (80 dB for identical images)."""
    return (
        similarity("ssim", images, references).tolist(),
        similarity("psnr", images, references).tolist(),
    )
