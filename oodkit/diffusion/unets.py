"""Class-conditional pixel UNets (diffusers ``UNet2DModel``) by preset, with a null class
for classifier-free guidance (class id ``num_classes``)."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # ~1 M parameters: digits / CPU
    "tiny": {
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 16,
    },
    # ≈ the DDPM CIFAR-10 UNet (Ho et al. 2020): 128-256-256-256, attention at 16×16
    "cifar": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
        "attention_head_dim": 64,
        "dropout": 0.1,
    },
}
BETAS = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # option name → diffusers schedule


def build_unet(preset: str, image_size: int, channels: int, num_classes: int):
    """A randomly initialised UNet of ``preset`` with ``num_classes`` + 1 class embeddings."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        num_class_embeds=num_classes + 1,
        **PRESETS[preset],
    )
