"""CompVis latent diffusion (Rombach et al. 2022) class-conditional checkpoints (``cin256-v2``,
DiffGuard's LDM) as diffusers parts: ``UNet2DConditionModel``, ``VQModel`` and the class
embedding table.

An LDM ``LatentDiffusion`` checkpoint holds the UNet (``model.diffusion_model.*``: openaimodel
with spatial transformers, a class reaching them through cross-attention), the first stage
(``first_stage_model.*``: a VQ autoencoder; encoding stops before quantisation, decoding
quantises), the class embedder (``cond_stage_model.embedding.weight``, one row per class plus
the null class used for classifier-free guidance) and its noise schedule as buffers. The UNet
and the autoencoder convert with diffusers' own single-file converters; every key is
accounted for (``convert_checkpoint`` refuses what it does not know), and the schedule
buffers are checked against the config's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from oodkit.errors import OodkitError

UNET, FIRST_STAGE, EMBEDDING = "model.diffusion_model.", "first_stage_model.", "cond_stage_model."
# LatentDiffusion.register_schedule's persistent buffers (checked, not converted)
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


@dataclass
class LdmConfig:
    """The parts of an LDM yaml config that shape a class-conditional model (``cin256-v2``:
    ``useful_data/ldm-cin256-v2.yaml`` in DiffGuard, ``configs/latent-diffusion`` in CompVis)."""

    # unet_config.params
    image_size: int  # latent side
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]  # downsampling rates with attention
    context_dim: int
    num_heads: int = 1
    num_head_channels: int = -1
    transformer_depth: int = 1
    channels: int = 3  # latent channels (in = out)
    # first_stage_config.params (VQModelInterface)
    embed_dim: int = 3
    n_embed: int = 8192
    ch: int = 128
    ch_mult: tuple[int, ...] = field(default=(1, 2, 4))
    vq_res_blocks: int = 2
    resolution: int = 256
    # cond_stage_config.params: classes + 1 rows (the last is the null class)
    n_classes: int = 1001
    # schedule
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    timesteps: int = 1000
    scale_factor: float = 1.0

    def __post_init__(self) -> None:
        try:
            self.channel_mult = tuple(int(m) for m in self.channel_mult)
            self.ch_mult = tuple(int(m) for m in self.ch_mult)
            self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        except (TypeError, ValueError):
            raise OodkitError(
                "LDM flags: channel_mult, ch_mult and attention_resolutions are lists of integers"
            ) from None
        for w in self.widths():
            heads = self._heads(w)
            if heads < 1 or w % heads:
                raise OodkitError(f"LDM flags: {w} channels do not split into {heads} heads")

    def widths(self) -> list[int]:
        return [m * self.model_channels for m in self.channel_mult]

    def _heads(self, width: int) -> int:
        """openaimodel's heads at a width: num_heads, or width / num_head_channels."""
        return self.num_heads if self.num_head_channels == -1 else width // self.num_head_channels

    def attends(self, level: int) -> bool:
        return 2**level in self.attention_resolutions


PRESETS: dict[str, LdmConfig] = {
    "cin256-v2": LdmConfig(64, 192, (1, 2, 3, 5), 2, (8, 4, 2), 512),
}


def unet_config(cfg: LdmConfig) -> dict[str, Any]:
    """``UNet2DConditionModel`` arguments of the LDM UNet (class as a 1-token context)."""
    levels = range(len(cfg.channel_mult))
    down = ["CrossAttnDownBlock2D" if cfg.attends(i) else "DownBlock2D" for i in levels]
    up = [b.replace("Down", "Up") for b in reversed(down)]
    return {
        "sample_size": cfg.image_size,
        "in_channels": cfg.channels,
        "out_channels": cfg.channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": cfg.widths(),
        "layers_per_block": cfg.num_res_blocks,
        "cross_attention_dim": cfg.context_dim,
        # diffusers' legacy name: the number of heads per level
        "attention_head_dim": [cfg._heads(w) for w in cfg.widths()],
        "transformer_layers_per_block": cfg.transformer_depth,
        "use_linear_projection": False,  # 1×1 convolutions in and out
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "downsample_padding": 1,
    }


def vq_config(cfg: LdmConfig) -> dict[str, Any]:
    """``VQModel`` arguments of the first stage."""
    n = len(cfg.ch_mult)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
        "layers_per_block": cfg.vq_res_blocks,
        "latent_channels": cfg.channels,
        "sample_size": cfg.resolution,
        "num_vq_embeddings": cfg.n_embed,
        "vq_embed_dim": cfg.embed_dim,
        "norm_num_groups": 32,
        "scaling_factor": cfg.scale_factor,
    }


def scheduler_config(cfg: LdmConfig) -> dict[str, Any]:
    """LDM's schedule as a diffusers config: ``linear`` in LDM is linear in √β (diffusers'
    ``scaled_linear``); its DDIM grid is offset by one (``make_ddim_timesteps``: 1, 41, …)
    and ends at ᾱ_0 (``alphas_prev[0] = alphas_cumprod[0]``)."""
    return {
        "num_train_timesteps": cfg.timesteps,
        "beta_schedule": "scaled_linear",
        "beta_start": cfg.linear_start,
        "beta_end": cfg.linear_end,
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def _betas(cfg: LdmConfig) -> np.ndarray:
    return np.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.timesteps) ** 2


def _check_schedule(state: dict[str, torch.Tensor], cfg: LdmConfig, origin: str) -> None:
    """The checkpoint's β and ᾱ buffers (where present) against the config's schedule."""
    betas = _betas(cfg)
    expected = {"betas": betas, "alphas_cumprod": np.cumprod(1 - betas)}
    for name, value in expected.items():
        if name in state and not np.allclose(state[name].double().numpy(), value, rtol=1e-5):
            raise OodkitError(
                f"{origin}: its {name} differ from the {cfg.linear_start}–{cfg.linear_end} "
                "schedule of these flags"
            )


def convert_checkpoint(
    state: dict[str, torch.Tensor], cfg: LdmConfig, origin: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(UNet, VQModel, class embedding [classes + 1, context]) from a ``LatentDiffusion``
    state dict; refuses keys it does not know and parts that are missing."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    known = (UNET, FIRST_STAGE, EMBEDDING, "model_ema.")
    unknown = [k for k in state if not k.startswith(known) and k not in SCHEDULE_BUFFERS]
    if unknown:
        raise OodkitError(
            f"{origin} is not a class-conditional LDM checkpoint: {len(unknown)} unknown "
            f"tensors, e.g. {unknown[0]}"
        )
    embedding = state.get(EMBEDDING + "embedding.weight")
    parts = {
        "UNet": [k for k in state if k.startswith(UNET)],
        "first stage": [k for k in state if k.startswith(FIRST_STAGE)],
        "class embedder": [EMBEDDING + "embedding.weight"] if embedding is not None else [],
    }
    missing = [name for name, keys in parts.items() if not keys]
    if missing:
        raise OodkitError(f"{origin} has no {missing[0]} ({UNET}, {FIRST_STAGE}, {EMBEDDING})")
    extra = [k for k in state if k.startswith(EMBEDDING) and k not in parts["class embedder"]]
    if extra:
        raise OodkitError(f"{origin}: its condition stage is not a class embedder ({extra[0]})")
    _check_schedule(state, cfg, origin)
    unet = convert_ldm_unet_checkpoint(state, unet_config(cfg))
    vq = convert_ldm_vae_checkpoint(state, vq_config(cfg))
    quantize = FIRST_STAGE + "quantize.embedding.weight"
    if quantize in state:
        vq["quantize.embedding.weight"] = state[quantize]
    for name, converted, source in (
        ("UNet", unet, parts["UNet"]),
        ("first stage", vq, parts["first stage"]),
    ):
        if len(converted) != len(source):  # one diffusers tensor per original tensor
            raise OodkitError(
                f"{origin}: {len(source) - len(converted)} of its {name} tensors have no place "
                "in the diffusers model of these flags"
            )
    return unet, vq, embedding
