"""Tiny, randomly initialised DDPM and DiT folders built from configs, fully offline.

They have the layouts of ``DDPMPipeline.save_pretrained`` (``google/ddpm-cifar10-32``:
``unet/`` + ``scheduler/``) and ``DiTPipeline.save_pretrained`` (``facebook/DiT-XL-2-256``:
``transformer/`` with a learned-σ output + ``vae/`` + ``scheduler/`` and ``id2label``), for
tests and CPU benchmarks of those backends.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def build_tiny_ddpm(
    folder: str | Path, image_size: int = 16, channels: int = 3, learned_sigma: bool = False
) -> Path:
    """An unconditional ``UNet2DModel`` and a DDPM scheduler, as ``DDPMPipeline`` saves them."""
    from diffusers import DDPMScheduler, UNet2DModel

    folder = Path(folder)
    torch.manual_seed(0)
    UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels * (2 if learned_sigma else 1),
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).save_pretrained(str(folder / "unet"))
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(str(folder / "scheduler"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    return folder


def build_tiny_dit(folder: str | Path, image_size: int = 16, num_classes: int = 5) -> Path:
    """A class-conditional ``DiTTransformer2DModel`` (learned σ), a VAE and a DDIM scheduler,
    as ``DiTPipeline`` saves them, with an ``id2label`` table."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

    folder = Path(folder)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
    )
    DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=image_size // 2,
        patch_size=2,
        num_embeds_ada_norm=num_classes,
    ).save_pretrained(str(folder / "transformer"))
    vae.save_pretrained(str(folder / "vae"))
    DDIMScheduler(num_train_timesteps=1000, clip_sample=False).save_pretrained(
        str(folder / "scheduler")
    )
    id2label = {str(i): f"class{i}, synonym{i}" for i in range(num_classes)}
    index = {"_class_name": "DiTPipeline", "id2label": id2label}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def write_random_perceptual_weights(root: str | Path) -> Path:
    """Random VGG16 trunk, DISTS alpha/beta and LPIPS layer weights under the real file names
    (the files piq would download), for DISTS / LPIPS without a network."""
    import torch
    from torchvision.models import vgg16

    from oodkit.perceptual import DISTS_CHANNELS, FILES

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    trunk = vgg16(weights=None).features
    state = {
        f"features.{k}": torch.randn(v.shape, generator=g) * 0.05
        for k, v in trunk.state_dict().items()
    }
    torch.save(state, root / FILES["dists"][0][0])
    total = sum(DISTS_CHANNELS)
    alpha_beta = {k: torch.rand(1, total, 1, 1, generator=g) for k in ("alpha", "beta")}
    norm = sum(v.sum() for v in alpha_beta.values())  # DISTS's weights sum to 1
    alpha_beta = {k: v / norm for k, v in alpha_beta.items()}
    torch.save(alpha_beta, root / FILES["dists"][1][0])
    lpips = [torch.rand(1, c, 1, 1, generator=g) for c in DISTS_CHANNELS[1:]]
    torch.save(lpips, root / FILES["lpips"][1][0])
    return root


def tiny_classifier(num_classes: int = 10, width: int = 8) -> torch.nn.Module:
    """A small CNN classifier (``features`` → ``avgpool`` → ``fc``), the kind of module a user
    builds in Python; ``python:oodkit.testing.tiny_models:tiny_classifier`` imports it."""
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.ReLU(),
            )
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.avgpool(self.features(x)).flatten(1))

    return TinyNet()
