"""Each denoiser backend against direct calls of its diffusers network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMInverseScheduler

from oodkit.diffusion.denoisers import describe_model, load_denoiser
from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
from oodkit.errors import OodkitError
from oodkit.testing import build_tiny_ddpm, build_tiny_dit

pytestmark = pytest.mark.threads(1)


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory) -> Path:
    return build_tiny_ddpm(tmp_path_factory.mktemp("ddpm") / "m", learned_sigma=True)


@pytest.fixture(scope="module")
def dit(tmp_path_factory) -> Path:
    return build_tiny_dit(tmp_path_factory.mktemp("dit") / "m", num_classes=5)


def _images(n: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(1))


def test_ddpm_folder_is_an_unconditional_pixel_model(ddpm: Path) -> None:
    spec = describe_model(ddpm)
    assert (spec.kind, spec.layout, spec.channels, spec.image_size) == ("uncond", "ddpm", 3, 16)
    den = load_denoiser(ddpm, spec=spec)
    x, t = den.encode(_images(2)), torch.tensor([10, 700])
    assert torch.equal(x, _images(2) * 2 - 1)
    eps = den.eps(x, t, den.condition([[None, None], [None, None]]))
    direct = den.unet(x, t).sample
    assert direct.shape[1] == 6  # learned σ: ε is the first half
    assert torch.allclose(eps[0], direct[:, :3], atol=1e-6) and torch.equal(eps[0], eps[1])
    with pytest.raises(ValueError, match="no class or prompt"):
        den.condition([[None, 1]])


def test_dit_folder_is_a_latent_class_model_with_a_null_class(dit: Path) -> None:
    spec = describe_model(dit)
    assert (spec.kind, spec.layout, spec.image_size, spec.num_classes) == ("class", "dit", 16, 5)
    assert spec.class_names == ["class0", "class1", "class2", "class3", "class4"]
    den = load_denoiser(dit, spec=spec)
    images = _images(3)
    z = den.encode(images)
    ref = den.vae.encode(images * 2 - 1).latent_dist.mode() * den.vae.config.scaling_factor
    assert torch.allclose(z, ref, atol=1e-6)
    t = torch.tensor([5, 500, 990])
    eps = den.eps(z, t, den.condition([[None] * 3, [0, 4, 2]]))
    labels = torch.tensor([5, 5, 5, 0, 4, 2])  # the null class is index num_classes
    direct = den.unet(z.repeat(2, 1, 1, 1), timestep=t.repeat(2), class_labels=labels).sample
    assert direct.shape[1] == 8  # learned σ
    assert torch.allclose(eps.reshape(6, 4, 8, 8), direct[:, :4], atol=1e-5)
    assert not torch.allclose(eps[0], eps[1])  # the class changes ε
    out = den.decode(z)
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("backend", ["class-artifact", "sd", "ddpm", "dit"])
def test_ddim_inversion_is_exact_with_a_stub_for_every_backend(
    backend: str, class_model, tiny_sd, ddpm, dit
) -> None:
    """encode → invert (stub ε) equals diffusers' DDIMInverseScheduler on the backend's own
    scheduler config, and denoising the end point returns the encoded input."""
    model = {"class-artifact": class_model, "sd": tiny_sd, "ddpm": ddpm, "dit": dit}[backend]
    den = load_denoiser(model)
    x0 = den.encode(_images(2, den.channels))
    stub = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    eps = lambda xa, t, rows, k: stub[rows]  # noqa: E731 - ε that does not depend on x
    sampler = DDIMSampler(ddim_scheduler(den.scheduler_config), 20)
    trajectory = sampler.invert(x0, eps)
    inverse = DDIMInverseScheduler.from_config(
        sampler.scheduler.config, steps_offset=sampler.scheduler.config.steps_offset
    )
    inverse.set_timesteps(20)
    ref = x0.clone()
    for t in inverse.timesteps:
        ref = inverse.step(stub, t, ref).prev_sample
    assert torch.allclose(trajectory[-1], ref, atol=1e-4)
    assert torch.allclose(sampler.denoise(trajectory[-1], [20, 20], eps), x0, atol=1e-4)


def test_hub_ids_fail_offline_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(OodkitError, match=r"cannot read the Hub model facebook/DiT-XL-2-256 "):
        describe_model("facebook/DiT-XL-2-256")


def test_unsupported_and_incomplete_folders_are_refused(tmp_path: Path, dit: Path) -> None:
    import json
    import shutil

    other = tmp_path / "xl"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(OodkitError, match="KandinskyPipeline models are not supported"):
        describe_model(other)
    broken = shutil.copytree(dit, tmp_path / "dit")
    shutil.rmtree(broken / "vae")
    with pytest.raises(OodkitError, match="is a dit model without vae/"):
        describe_model(broken)
