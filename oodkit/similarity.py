"""Image similarity between two batches of images in [0, 1] (piq-based).

Used for generation quality (outlier vs source) and, later, DiffGuard's input vs synthesis
distances. Values are per image.
"""

from __future__ import annotations

import torch


def ssim_psnr(images: torch.Tensor, references: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image SSIM (window shrunk for small images) and PSNR (capped at 100 dB)."""
    import piq

    ssim = piq.ssim(
        images,
        references,
        data_range=1.0,
        reduction="none",
        kernel_size=max(1, min(11, min(images.shape[-2:]) // 2 * 2 - 1)),
    )
    psnr = piq.psnr(images, references, data_range=1.0, reduction="none")
    return ssim.tolist(), psnr.clamp(max=100).tolist()
