"""Regenerate the ADM conversion fixture from OpenAI's own guided-diffusion code.

Not part of oodkit or its tests: run it by hand with a checkout of
https://github.com/openai/guided-diffusion (never copied into this repository):

    python tools/adm_reference.py /path/to/guided-diffusion tests/data

It builds guided-diffusion's ``UNetModel`` (a small 16-px configuration with attention,
scale-shift norm and resampling residual blocks) with random fp16-exact weights, runs it on a
fixed batch with the legacy and the new attention order, checks oodkit's conversion against
it, and writes ``adm_tiny.safetensors`` (weights in the original layout, inputs, outputs) and
``adm_256_uncond_shapes.json`` (every key and shape of ``256x256_diffusion_uncond``, built on
the meta device) for ``tests/unit/test_adm.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(source))
    from diffusers import UNet2DModel
    from guided_diffusion.script_util import create_model
    from guided_diffusion.unet import UNetModel
    from safetensors.torch import save_file

    from oodkit.diffusion.adm import AdmConfig, convert_state, unet_config

    tensors: dict[str, torch.Tensor] = {}
    for tag, new_order in (("legacy", False), ("new", True)):
        cfg = AdmConfig(16, 32, 1, (8,), 16, channel_mult=(1, 2), use_new_attention_order=new_order)
        official = UNetModel(
            image_size=16,
            in_channels=3,
            model_channels=32,
            out_channels=6,
            num_res_blocks=1,
            attention_resolutions=(2,),  # downsampling rates: 16 px / 8 px
            channel_mult=(1, 2),
            num_head_channels=16,
            use_scale_shift_norm=True,
            resblock_updown=True,
            use_new_attention_order=new_order,
        ).eval()
        g = torch.Generator().manual_seed(1)
        state = {
            k: (torch.randn(v.shape, generator=g) * 0.2).half().float()
            for k, v in official.state_dict().items()
        }
        official.load_state_dict(state)
        x = torch.randn(3, 3, 16, 16, generator=g)
        t = torch.tensor([0, 417, 999])
        ours = UNet2DModel(**unet_config(cfg)).eval()
        ours.load_state_dict(convert_state(state, cfg), strict=True)
        with torch.no_grad():
            ref, got = official(x, t), ours(x, t).sample
        print(f"{tag}: max |oodkit - guided-diffusion| = {(got - ref).abs().max().item():.2e}")
        tensors.update({f"state/{k}": v.half().contiguous() for k, v in state.items()})
        tensors.update({"x": x, "t": t, f"{tag}/out": ref})
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adm_tiny.safetensors"))
    with torch.device("meta"):
        big = create_model(
            image_size=256,
            num_channels=256,
            num_res_blocks=2,
            learn_sigma=True,
            attention_resolutions="32,16,8",
            num_head_channels=64,
            use_scale_shift_norm=True,
            resblock_updown=True,
        )
    shapes = {k: list(v.shape) for k, v in big.state_dict().items()}
    (out / "adm_256_uncond_shapes.json").write_text(json.dumps(shapes))


if __name__ == "__main__":
    main()
