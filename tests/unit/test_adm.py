"""ADM (guided-diffusion) UNets converted to diffusers, against guided-diffusion's own outputs.

``tests/data/adm_tiny.safetensors`` holds random weights in guided-diffusion's key layout, a
batch, and what guided-diffusion's ``UNetModel`` returned for it with the legacy and the new
attention order; ``adm_256_uncond_shapes.json`` every key and shape of the real
``256x256_diffusion_uncond``. Both were written by ``tools/adm_reference.py`` from
OpenAI's code, which is not in this repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file

from oodkit.diffusion.adm import PRESETS, AdmConfig, convert_state, unet_config
from oodkit.errors import OodkitError

DATA = Path(__file__).parent.parent / "data"


def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    tensors = load_file(str(DATA / "adm_tiny.safetensors"))
    state = {k[len("state/") :]: v.float() for k, v in tensors.items() if k.startswith("state/")}
    return state, tensors


def tiny_config(new_order: bool = False) -> AdmConfig:
    """The fixture's flags (tools/adm_reference.py)."""
    return AdmConfig(16, 32, 1, (8,), 16, channel_mult=(1, 2), use_new_attention_order=new_order)


@pytest.mark.parametrize("order", ["legacy", "new"])
def test_outputs_match_guided_diffusion(order: str) -> None:
    state, t = _fixture()
    cfg = tiny_config(order == "new")
    unet = UNet2DModel(**unet_config(cfg)).eval()
    unet.load_state_dict(convert_state(state, cfg), strict=True)
    with torch.no_grad():
        out = unet(t["x"], t["t"]).sample
    assert out.shape == (3, 6, 16, 16)  # learned σ kept
    assert (out - t[f"{order}/out"]).abs().max() <= 1e-5


def test_the_real_256_uncond_layout_loads_strictly() -> None:
    shapes = json.loads((DATA / "adm_256_uncond_shapes.json").read_text())
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    cfg = PRESETS["256x256_diffusion_uncond"]
    converted = convert_state(state, cfg)
    with torch.device("meta"):
        unet = UNet2DModel(**unet_config(cfg))
    own = unet.state_dict()
    assert sorted(own) == sorted(converted)
    assert all(own[k].shape == converted[k].shape for k in own)
    unet.load_state_dict(converted, strict=True, assign=True)
    assert sum(v.numel() for v in converted.values()) == sum(
        torch.Size(s).numel() for s in shapes.values()
    )  # 552,814,086: every tensor of the checkpoint is used


def test_wrong_checkpoints_are_named() -> None:
    state, _ = _fixture()
    with pytest.raises(OodkitError, match="class-conditional"):
        convert_state({**state, "label_emb.weight": torch.zeros(10, 128)}, tiny_config())
    with pytest.raises(OodkitError, match="has 1 tensors .* e.g. extra"):
        convert_state({**state, "extra": torch.zeros(1)}, tiny_config())
    with pytest.raises(OodkitError, match="lacks"):
        convert_state(state, PRESETS["256x256_diffusion_uncond"])


def test_import_diffusion_makes_a_model_every_stage_takes(tmp_path: Path) -> None:
    """``oodkit import diffusion adm:FILE`` → an artifact in the DDPM layout whose denoiser
    gives guided-diffusion's ε (the first 3 of its 6 output channels)."""
    from typer.testing import CliRunner

    from oodkit.artifacts import load_artifact
    from oodkit.cli import app
    from oodkit.diffusion.denoisers import describe_model, load_denoiser, model_input
    from oodkit.hashing import file_digest

    state, t = _fixture()
    ckpt = tmp_path / "tiny_adm.pt"
    torch.save(state, ckpt)
    flags = json.dumps({**tiny_config().__dict__, "channel_mult": [1, 2]})
    r = CliRunner().invoke(
        app, ["import", "diffusion", f"adm:{ckpt}", "--flags", flags, "--out", str(tmp_path / "m")]
    )
    assert r.exit_code == 0, r.output
    art = load_artifact(tmp_path / "m", kind="diffusion-model")
    assert art.manifest.inputs[0]["fingerprint"] == file_digest(ckpt)
    spec = describe_model(tmp_path / "m")
    assert (spec.kind, spec.layout, spec.image_size, spec.channels) == ("uncond", "ddpm", 16, 3)
    assert spec.scheduler_config["beta_schedule"] == "linear"
    assert model_input(tmp_path / "m", spec)["fingerprint"]
    den = load_denoiser(tmp_path / "m", spec=spec)
    with torch.no_grad():
        eps = den.eps(t["x"], t["t"], den.condition([[None] * 3]))
    assert (eps[0] - t["legacy/out"][:, :3]).abs().max() <= 1e-5


def test_flags_that_cannot_be_converted_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(OodkitError, match="noise_schedule is linear or cosine"):
        AdmConfig(16, 32, 1, (8,), 16, channel_mult=(1, 2), noise_schedule="sigmoid")
    with pytest.raises(OodkitError, match="must divide every attention width"):
        AdmConfig(16, 32, 1, (8,), 24, channel_mult=(1, 2))
    with pytest.raises(OodkitError, match="channel_mult starting at 0.5"):
        AdmConfig(512, 256, 2, (32, 16, 8), 64)
    with pytest.raises(OodkitError, match="lists of numbers"):
        AdmConfig(16, 32, 1, "8,4", 16, channel_mult=(1, 2))
    from oodkit.stages.import_diffusion.run import import_diffusion

    state, _ = _fixture()
    torch.save(state, tmp_path / "tiny.pt")
    flags = {**tiny_config().__dict__, "learn_sigma": False}  # the checkpoint has 6 outputs
    with pytest.raises(OodkitError, match="wrong shapes of 2 tensors, e.g. conv_out"):
        import_diffusion(f"adm:{tmp_path / 'tiny.pt'}", tmp_path / "m", flags=flags)
    assert not (tmp_path / "m").exists()
