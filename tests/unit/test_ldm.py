"""CompVis LDM class-conditional checkpoints converted to diffusers, against latent-diffusion's
own outputs.

``tests/data/ldm_tiny.safetensors`` holds random weights in ``LatentDiffusion``'s key layout
(a small ``cin256-v2``-shaped UNet, VQ autoencoder and class table), inputs, and what
latent-diffusion's modules returned for them; ``ldm_cin256_v2_shapes.json`` every key and
shape of the real ``cin256-v2``. Both were written by ``tools/ldm_reference.py`` from CompVis's
code, which is not in this repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel, VQModel
from safetensors import safe_open
from safetensors.torch import load_file

from oodkit.diffusion.ldm import (
    PRESETS,
    SCHEDULE_BUFFERS,
    LdmConfig,
    convert_checkpoint,
    unet_config,
    vq_config,
)
from oodkit.errors import OodkitError
from oodkit.models.imported import load_strict

DATA = Path(__file__).parent.parent / "data"


def tiny_flags() -> dict:
    """The fixture's LDM flags (written into its metadata by tools/ldm_reference.py)."""
    with safe_open(str(DATA / "ldm_tiny.safetensors"), "pt") as f:
        return json.loads(f.metadata()["flags"])


TINY = LdmConfig(**tiny_flags())


def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    tensors = load_file(str(DATA / "ldm_tiny.safetensors"))
    state = {k[len("state/") :]: v.float() for k, v in tensors.items() if k.startswith("state/")}
    return state, tensors


def test_outputs_match_latent_diffusion() -> None:
    state, t = _fixture()
    unet_sd, vq_sd, table = convert_checkpoint(state, TINY, "fixture")
    unet = UNet2DConditionModel(**unet_config(TINY)).eval()
    unet.load_state_dict(unet_sd, strict=True)
    vq = VQModel(**vq_config(TINY)).eval()
    vq.load_state_dict(vq_sd, strict=True)
    h = t["ref/encoded"]
    with torch.no_grad():
        got = {
            "unet": unet(t["z"], t["t"], encoder_hidden_states=table[t["y"]][:, None]).sample,
            "encoded": vq.encode(t["img"]).latents,
            "decoded": vq.decode(h).sample,  # quantised, as VQModelInterface.decode
            "decoded_raw": vq.decode(h, force_not_quantize=True).sample,
        }
    for name, value in got.items():
        assert (value - t[f"ref/{name}"]).abs().max() <= 1e-5, name
    assert not torch.allclose(got["decoded"], got["decoded_raw"])  # quantisation did something


def test_the_real_cin256_v2_layout_loads_strictly() -> None:
    shapes = json.loads((DATA / "ldm_cin256_v2_shapes.json").read_text())
    cfg = PRESETS["cin256-v2"]
    betas = np.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, 1000) ** 2
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    state["betas"] = torch.tensor(betas, dtype=torch.float32)
    state["alphas_cumprod"] = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
    unet_sd, vq_sd, table = convert_checkpoint(state, cfg, "cin256-v2")
    assert tuple(table.shape) == (1001, 512)
    for cls, config, converted in (
        (UNet2DConditionModel, unet_config(cfg), unet_sd),
        (VQModel, vq_config(cfg), vq_sd),
    ):
        with torch.device("meta"):
            net = cls(**config)
        own = net.state_dict()
        assert sorted(own) == sorted(converted)
        assert all(own[k].shape == converted[k].shape for k in own)
        net.load_state_dict(converted, strict=True, assign=True)
    originals = sum(np.prod(s) for k, s in shapes.items() if k not in SCHEDULE_BUFFERS)
    converted_total = sum(v.numel() for d in (unet_sd, vq_sd) for v in d.values()) + table.numel()
    assert converted_total == originals  # every original parameter has its place


def test_foreign_or_incomplete_checkpoints_are_one_line() -> None:
    state, _ = _fixture()
    with pytest.raises(OodkitError, match="1 unknown tensors, e.g. extra.weight"):
        convert_checkpoint({**state, "extra.weight": torch.zeros(1)}, TINY, "f")
    no_table = {k: v for k, v in state.items() if not k.startswith("cond_stage_model.")}
    with pytest.raises(OodkitError, match="f has no class embedder"):
        convert_checkpoint(no_table, TINY, "f")
    other = LdmConfig(**{**TINY.__dict__, "linear_end": 0.012})
    with pytest.raises(OodkitError, match="its betas differ from the 0.0015–0.012 schedule"):
        convert_checkpoint(state, other, "f")
    wider = LdmConfig(**{**TINY.__dict__, "model_channels": 64})
    unet_sd, _, _ = convert_checkpoint(state, wider, "f")
    with pytest.raises(OodkitError, match="f does not fit the UNet: it has wrong shapes of"):
        load_strict(UNet2DConditionModel(**unet_config(wider)), unet_sd, "f", "the UNet")
