"""A tiny, randomly initialised Stable Diffusion folder built from configs, fully offline.

For tests, CPU benchmarks and smoke runs of the latent backend. The tokenizer is a
byte-level character vocabulary with an empty merges list (every character is a token),
which transformers' ``CLIPTokenizer`` loads like a real one. The scheduler saved in the
folder is PNDM, as in the real Stable Diffusion folders, so that callers prove they replace
it with DDIM.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode table, in order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_char_tokenizer(folder: Path, max_length: int = 77) -> None:
    """vocab.json (chars, chars + '</w>', specials), a header-only merges.txt, and config."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": max_length,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "tokenizer_class": "CLIPTokenizer",
            }
        )
    )


def write_char_text_encoder(
    folder: Path, hidden_size: int, heads: int, projection_dim: int = 512
) -> None:
    """``tokenizer/`` (character vocabulary) and a random 2-layer ``text_encoder/`` for it."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    write_char_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    CLIPTextModel(config).save_pretrained(str(folder / "text_encoder"))


def build_tiny_stable_diffusion(folder: str | Path, image_size: int = 16, seed: int = 0) -> Path:
    """Write unet/, vae/, text_encoder/, tokenizer/ and a PNDM scheduler/ into ``folder``."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    folder = Path(folder)
    torch.manual_seed(seed)
    write_char_text_encoder(folder, hidden_size=32, heads=2, projection_dim=32)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
    )
    unet = UNet2DConditionModel(
        sample_size=image_size // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        skip_prk_steps=True,
        set_alpha_to_one=False,
    )
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    scheduler.save_pretrained(str(folder / "scheduler"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder
