"""Per-image similarities against piq's functional API and hand computations."""

from __future__ import annotations

import math

import numpy as np
import piq
import pytest
import torch

from oodkit.errors import OodkitError
from oodkit.similarity import logits_l1, similarity, ssim_psnr


def _pair(size: int, n: int = 3, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(size)
    x = torch.rand(n, channels, size, size, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


def test_each_similarity_equals_its_reference() -> None:
    x, y = _pair(32)
    ssim = piq.ssim(x, y, data_range=1.0, reduction="none")
    assert torch.allclose(similarity("ssim", x, y), ssim)
    assert torch.allclose(similarity("gmsd", x, y), -piq.gmsd(x, y, reduction="none"))
    mse = ((x - y) ** 2).flatten(1).mean(1).numpy()
    psnr = 10 * np.log10(1 / mse)  # data range 1
    assert np.allclose(similarity("psnr", x, y).numpy(), psnr, atol=1e-3)
    l2 = [-math.sqrt(float(((a - b) ** 2).sum())) for a, b in zip(x, y, strict=True)]
    assert np.allclose(similarity("l2", x, y).numpy(), l2, atol=1e-4)
    big_x, big_y = _pair(161, n=2)
    ms = piq.multi_scale_ssim(big_x, big_y, data_range=1.0, reduction="none")
    assert torch.allclose(similarity("ms-ssim", big_x, big_y), ms)


def test_higher_means_more_alike_for_every_similarity() -> None:
    x, y = _pair(161, n=2)
    far = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    for name in ("ssim", "ms-ssim", "psnr", "gmsd", "l2"):
        assert (similarity(name, x, y) > similarity(name, x, far)).all(), name


def test_identical_images_are_finite_and_small_images_shrink_the_window() -> None:
    x, _ = _pair(8)
    ssim, psnr = ssim_psnr(x, x)  # an 11-px window would not fit 8-px images
    assert ssim == pytest.approx([1.0] * 3) and psnr == pytest.approx([80.0] * 3)
    with pytest.raises(OodkitError, match="ms-ssim needs images of at least 161 px"):
        similarity("ms-ssim", x, x)
    with pytest.raises(OodkitError, match="unknown similarity 'dist'"):
        similarity("dist", x, x)


def test_logits_l1_is_the_negated_l1_distance() -> None:
    a = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, -1.0, 0.5], [1.0, 1.0, -1.0]])
    assert logits_l1(a, b).tolist() == [-2.0, -3.0]
