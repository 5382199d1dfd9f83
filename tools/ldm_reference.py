"""Regenerate the LDM conversion fixture from CompVis's own latent-diffusion code.

Not part of oodkit or its tests: run it by hand with a checkout of
https://github.com/CompVis/latent-diffusion (or DiffGuard's copy of its ``ldm`` package;
never copied into this repository) and ``einops`` importable:

    python tools/ldm_reference.py /path/to/latent-diffusion tests/data

It builds latent-diffusion's ``UNetModel`` with spatial transformers (a small configuration
shaped like ``cin256-v2``: no attention at the first level, one head, a class as a 1-token
context), its autoencoder ``Encoder`` / ``Decoder`` with the VQ wrapper's 1×1 convolutions,
and a class embedding table, all with random fp16-exact weights; runs them on fixed inputs
(the UNet on real and null classes; encoding; decoding with and without quantisation, the
nearest codebook row taken by hand as taming's ``VectorQuantizer2`` does), checks oodkit's
conversion against them, and writes ``ldm_tiny.safetensors`` (the weights in the original
``LatentDiffusion`` key layout, inputs, outputs; the flags in its metadata) and
``ldm_cin256_v2_shapes.json`` (every key and shape of ``cin256-v2``, built on the meta
device) for ``tests/unit/test_ldm.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn

TINY = {
    "image_size": 8,
    "model_channels": 32,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (2,),
    "context_dim": 16,
    "ch": 32,
    "ch_mult": (1, 2),
    "vq_res_blocks": 1,
    "resolution": 16,
    "n_embed": 16,
    "n_classes": 11,
}


def official_parts(cfg, device=None):
    """latent-diffusion's modules for an ``LdmConfig``, keyed by LatentDiffusion prefix."""
    from ldm.modules.diffusionmodules.model import Decoder, Encoder
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device(device or "cpu"):
        unet = UNetModel(
            image_size=cfg.image_size,
            in_channels=cfg.channels,
            out_channels=cfg.channels,
            model_channels=cfg.model_channels,
            attention_resolutions=list(cfg.attention_resolutions),
            num_res_blocks=cfg.num_res_blocks,
            channel_mult=list(cfg.channel_mult),
            num_heads=cfg.num_heads,
            num_head_channels=cfg.num_head_channels,
            use_spatial_transformer=True,
            transformer_depth=cfg.transformer_depth,
            context_dim=cfg.context_dim,
        )
        dd = {
            "double_z": False,
            "z_channels": cfg.channels,
            "resolution": cfg.resolution,
            "in_channels": 3,
            "out_ch": 3,
            "ch": cfg.ch,
            "ch_mult": list(cfg.ch_mult),
            "num_res_blocks": cfg.vq_res_blocks,
            "attn_resolutions": [],
            "dropout": 0.0,
        }
        vq = nn.Module()
        vq.encoder, vq.decoder = Encoder(**dd), Decoder(**dd)
        vq.quant_conv = nn.Conv2d(cfg.channels, cfg.embed_dim, 1)
        vq.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.channels, 1)
        vq.quantize = nn.Module()
        vq.quantize.embedding = nn.Embedding(cfg.n_embed, cfg.embed_dim)
        cond = nn.Module()
        cond.embedding = nn.Embedding(cfg.n_classes, cfg.context_dim)
    return {"model.diffusion_model.": unet, "first_stage_model.": vq, "cond_stage_model.": cond}


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(source))
    import numpy as np
    from diffusers import UNet2DConditionModel, VQModel
    from safetensors.torch import save_file

    from oodkit.diffusion.ldm import (
        PRESETS,
        SCHEDULE_BUFFERS,
        LdmConfig,
        convert_checkpoint,
        unet_config,
        vq_config,
    )

    cfg = LdmConfig(**TINY)
    parts = official_parts(cfg)
    g = torch.Generator().manual_seed(3)
    state = {}
    for prefix, module in parts.items():
        module.eval()
        own = {
            k: (torch.randn(v.shape, generator=g) * 0.2).half().float()
            for k, v in module.state_dict().items()
        }
        module.load_state_dict(own)
        state.update({prefix + k: v for k, v in own.items()})
    betas = np.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.timesteps) ** 2
    state["betas"] = torch.tensor(betas, dtype=torch.float32)
    state["alphas_cumprod"] = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
    unet_o, vq_o, cond_o = parts.values()
    z = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([1, 481, 961])
    y = torch.tensor([0, 7, 10])  # 10: the null class
    img = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        ref = {
            "unet": unet_o(z, t, context=cond_o.embedding(y)[:, None]),
            "encoded": vq_o.quant_conv(vq_o.encoder(img)),
        }
        h = ref["encoded"]
        codes = vq_o.quantize.embedding.weight
        flat = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        nearest = torch.cdist(flat, codes).argmin(1)
        zq = codes[nearest].view(h.shape[0], h.shape[2], h.shape[3], -1).permute(0, 3, 1, 2)
        ref["decoded"] = vq_o.decoder(vq_o.post_quant_conv(zq))
        ref["decoded_raw"] = vq_o.decoder(vq_o.post_quant_conv(h))
    unet_sd, vq_sd, table = convert_checkpoint(state, cfg, "tiny")
    unet = UNet2DConditionModel(**unet_config(cfg)).eval()
    unet.load_state_dict(unet_sd, strict=True)
    vq = VQModel(**vq_config(cfg)).eval()
    vq.load_state_dict(vq_sd, strict=True)
    with torch.no_grad():
        got = {
            "unet": unet(z, t, encoder_hidden_states=table[y][:, None]).sample,
            "encoded": vq.encode(img).latents,
            "decoded": vq.decode(h).sample,
            "decoded_raw": vq.decode(h, force_not_quantize=True).sample,
        }
    for k in ref:
        print(f"{k}: max |oodkit - latent-diffusion| = {(got[k] - ref[k]).abs().max().item():.2e}")
    tensors = {
        f"state/{k}": (v if k in SCHEDULE_BUFFERS else v.half()).contiguous()
        for k, v in state.items()
    }
    tensors.update({"z": z, "t": t, "y": y, "img": img})
    tensors.update({f"ref/{k}": v.contiguous() for k, v in ref.items()})
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "ldm_tiny.safetensors"), metadata={"flags": json.dumps(TINY)})
    big = official_parts(PRESETS["cin256-v2"], device="meta")
    shapes = {
        prefix + k: list(v.shape)
        for prefix, module in big.items()
        for k, v in module.state_dict().items()
    }
    shapes.update({name: [1000] for name in SCHEDULE_BUFFERS})
    (out / "ldm_cin256_v2_shapes.json").write_text(json.dumps(shapes))


if __name__ == "__main__":
    main()
