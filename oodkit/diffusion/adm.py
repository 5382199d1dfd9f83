"""OpenAI guided-diffusion (ADM, Dhariwal & Nichol 2021) unconditional UNets as diffusers
``UNet2DModel`` folders (a ``DDPMPipeline`` layout that ``--model`` takes everywhere).

ADM's UNet maps one to one onto ``UNet2DModel`` with ``resnet_time_scale_shift="scale_shift"``
(FiLM on the second GroupNorm), residual blocks that resample (``resblock_updown``: average
pool / nearest ×2 inside ``ResnetBlock2D``), attention at the downsampling rates of
``attention_resolutions`` with ``num_head_channels`` per head and a GroupNorm of 32 groups
(the mid block's too: ``attn_norm_num_groups``), sinusoidal timesteps as [cos, sin]
(``flip_sin_to_cos``), and a learned σ kept as 6 output channels (ε is the first 3).
Attention weights come from one 1×1 ``qkv`` convolution: legacy order (per head q, k, v)
or the new order (all q, all k, all v), split into ``to_q`` / ``to_k`` / ``to_v``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from oodkit.errors import OodkitError


@dataclass
class AdmConfig:
    """The guided-diffusion flags that shape an unconditional UNet (``script_util``)."""

    image_size: int
    num_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]  # image sizes at which attention runs
    num_head_channels: int
    learn_sigma: bool = True
    noise_schedule: str = "linear"  # linear | cosine
    use_new_attention_order: bool = False
    diffusion_steps: int = 1000
    channel_mult: tuple[float, ...] = field(default=())  # () = guided-diffusion's default

    def __post_init__(self) -> None:
        if not self.channel_mult:
            defaults = {
                512: (0.5, 1, 1, 2, 2, 4, 4),
                256: (1, 1, 2, 2, 4, 4),
                128: (1, 1, 2, 3, 4),
                64: (1, 2, 3, 4),
            }
            if self.image_size not in defaults:
                raise OodkitError(f"no default channel_mult for {self.image_size} px ADM models")
            self.channel_mult = defaults[self.image_size]
        try:
            self.channel_mult = tuple(float(m) for m in self.channel_mult)
            self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        except (TypeError, ValueError):
            raise OodkitError(
                "ADM flags: channel_mult and attention_resolutions are lists of numbers"
            ) from None
        if self.channel_mult[0] != 1:
            raise OodkitError(
                f"ADM flags: channel_mult starting at {self.channel_mult[0]:g} (not 1) has no "
                "UNet2DModel equivalent"
            )
        if self.noise_schedule not in ("linear", "cosine"):
            raise OodkitError(
                f"ADM flags: noise_schedule is linear or cosine, not {self.noise_schedule!r}"
            )
        widths = [w for i, w in enumerate(self.widths()) if self.attends(i)] + [self.widths()[-1]]
        if self.num_head_channels <= 0 or any(w % self.num_head_channels for w in widths):
            raise OodkitError(
                f"ADM flags: num_head_channels {self.num_head_channels} must divide every "
                "attention width (checkpoints with a fixed num_heads are not supported)"
            )

    def widths(self) -> list[int]:
        return [int(m * self.num_channels) for m in self.channel_mult]

    def attends(self, level: int) -> bool:
        """Whether level ``level`` (downsampling rate 2**level) has attention."""
        return self.image_size // 2**level in self.attention_resolutions


# the unconditional checkpoints of the guided-diffusion README (MODEL_FLAGS), by file stem
PRESETS: dict[str, AdmConfig] = {
    name: AdmConfig(256, 256, 2, (32, 16, 8), 64)
    for name in (
        "256x256_diffusion_uncond",  # DiffGuard's ImageNet model
        "lsun_bedroom",
        "lsun_cat",
        "lsun_horse",
        "lsun_horse_nodropout",
    )
}


def unet_config(cfg: AdmConfig) -> dict[str, Any]:
    """The ``UNet2DModel`` config of an ADM UNet."""
    levels = len(cfg.channel_mult)
    return {
        "sample_size": cfg.image_size,
        "in_channels": 3,
        "out_channels": 6 if cfg.learn_sigma else 3,
        "layers_per_block": cfg.num_res_blocks,
        "block_out_channels": cfg.widths(),
        "down_block_types": [
            "AttnDownBlock2D" if cfg.attends(i) else "ResnetDownsampleBlock2D"
            for i in range(levels)
        ],
        "up_block_types": [
            "AttnUpBlock2D" if cfg.attends(i) else "ResnetUpsampleBlock2D"
            for i in reversed(range(levels))
        ],
        "downsample_type": "resnet",
        "upsample_type": "resnet",
        "attention_head_dim": cfg.num_head_channels,
        "norm_num_groups": 32,
        "attn_norm_num_groups": 32,
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": "scale_shift",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "time_embedding_type": "positional",
        "add_attention": True,
    }


def scheduler_config(cfg: AdmConfig) -> dict[str, Any]:
    """guided-diffusion's training schedule as a diffusers scheduler config."""
    scale = 1000 / cfg.diffusion_steps
    linear = {"beta_schedule": "linear", "beta_start": scale * 1e-4, "beta_end": scale * 0.02}
    return {
        "num_train_timesteps": cfg.diffusion_steps,
        **(linear if cfg.noise_schedule == "linear" else {"beta_schedule": "squaredcos_cap_v2"}),
        "prediction_type": "epsilon",
        "variance_type": "learned_range" if cfg.learn_sigma else "fixed_small",
        "clip_sample": False,  # x̂₀ clipping is the sampler's choice (guided-diffusion: on)
    }


def _resnet(src: dict, dst: dict, old: str, new: str) -> None:
    pairs = {
        "norm1": "in_layers.0",
        "conv1": "in_layers.2",
        "time_emb_proj": "emb_layers.1",
        "norm2": "out_layers.0",
        "conv2": "out_layers.3",
        "conv_shortcut": "skip_connection",
    }
    for n, o in pairs.items():
        for p in ("weight", "bias"):
            key = f"{old}.{o}.{p}"
            if key in src:
                dst[f"{new}.{n}.{p}"] = src.pop(key)


def _linear(t: torch.Tensor) -> torch.Tensor:
    """A 1×1 ``Conv1d`` parameter as the ``nn.Linear`` one (weights [out, in, 1] → [out, in])."""
    return t[..., 0] if t.dim() == 3 else t


def _attention(src: dict, dst: dict, old: str, new: str, cfg: AdmConfig) -> None:
    for p in ("weight", "bias"):
        dst[f"{new}.group_norm.{p}"] = src.pop(f"{old}.norm.{p}")
        qkv = src.pop(f"{old}.qkv.{p}")
        heads = qkv.shape[0] // 3 // cfg.num_head_channels
        rest = qkv.shape[1:]
        if cfg.use_new_attention_order:  # [q of every head; k ...; v ...]
            q, k, v = qkv.chunk(3, dim=0)
        else:  # legacy: per head [q; k; v]
            q, k, v = qkv.reshape(heads, 3, cfg.num_head_channels, *rest).unbind(1)
        for name, t in (("to_q", q), ("to_k", k), ("to_v", v)):
            dst[f"{new}.{name}.{p}"] = _linear(t.reshape(-1, *rest))
        dst[f"{new}.to_out.0.{p}"] = _linear(src.pop(f"{old}.proj_out.{p}"))


def convert_state(state: dict[str, torch.Tensor], cfg: AdmConfig) -> dict[str, torch.Tensor]:
    """An ADM state dict (original keys) as ``UNet2DModel`` keys; every tensor is used."""
    if "label_emb.weight" in state:
        raise OodkitError(
            "this ADM checkpoint is class-conditional; oodkit converts the unconditional ones"
        )
    src = dict(state)
    dst: dict[str, torch.Tensor] = {}
    try:
        _convert(src, dst, cfg)
    except KeyError as exc:
        raise OodkitError(
            f"the checkpoint lacks {exc.args[0]}: not an ADM UNet of this shape (another preset?)"
        ) from None
    except RuntimeError as exc:  # a qkv that does not split into these heads
        raise OodkitError(f"the checkpoint does not fit these ADM flags: {exc}") from None
    if src:
        raise OodkitError(
            f"the checkpoint has {len(src)} tensors an ADM UNet of this shape lacks, "
            f"e.g. {next(iter(src))} (another preset?)"
        )
    return dst


def _convert(src: dict, dst: dict, cfg: AdmConfig) -> None:
    for i, old in ((1, "time_embed.0"), (2, "time_embed.2")):
        for p in ("weight", "bias"):
            dst[f"time_embedding.linear_{i}.{p}"] = src.pop(f"{old}.{p}")
    for p in ("weight", "bias"):
        dst[f"conv_in.{p}"] = src.pop(f"input_blocks.0.0.{p}")
        dst[f"conv_norm_out.{p}"] = src.pop(f"out.0.{p}")
        dst[f"conv_out.{p}"] = src.pop(f"out.2.{p}")
    levels = len(cfg.channel_mult)
    block = 1
    for i in range(levels):
        for j in range(cfg.num_res_blocks):
            _resnet(src, dst, f"input_blocks.{block}.0", f"down_blocks.{i}.resnets.{j}")
            if cfg.attends(i):
                new = f"down_blocks.{i}.attentions.{j}"
                _attention(src, dst, f"input_blocks.{block}.1", new, cfg)
            block += 1
        if i != levels - 1:
            _resnet(src, dst, f"input_blocks.{block}.0", f"down_blocks.{i}.downsamplers.0")
            block += 1
    _resnet(src, dst, "middle_block.0", "mid_block.resnets.0")
    _attention(src, dst, "middle_block.1", "mid_block.attentions.0", cfg)
    _resnet(src, dst, "middle_block.2", "mid_block.resnets.1")
    block = 0
    for u, level in enumerate(reversed(range(levels))):
        for j in range(cfg.num_res_blocks + 1):
            _resnet(src, dst, f"output_blocks.{block}.0", f"up_blocks.{u}.resnets.{j}")
            if cfg.attends(level):
                new = f"up_blocks.{u}.attentions.{j}"
                _attention(src, dst, f"output_blocks.{block}.1", new, cfg)
            block += 1
        if level:
            last = f"output_blocks.{block - 1}.{2 if cfg.attends(level) else 1}"
            _resnet(src, dst, last, f"up_blocks.{u}.upsamplers.0")
