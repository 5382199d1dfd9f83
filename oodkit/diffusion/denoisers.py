"""Noise predictors that evaluate every condition of a batch in one forward.

``eps(x, t, cond)`` takes a batch ``x`` [B, ...], timesteps ``t`` [B] and a stacked condition
for ``n`` conditions — class ids [n, B] (pixel backend; the unconditional row is the null
class) or prompt embeddings [n, B, L, D] (latent backend; the unconditional row is the empty
prompt) — and returns [n, B, ...] from a single UNet call on n·B rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from oodkit.errors import OodkitError

CLASS_MODEL_INFO = "oodkit_model.json"


class _UNetDenoiser:
    """Where the denoiser runs: the device and dtype of its UNet."""

    unet: Any

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


class PixelClassDenoiser(_UNetDenoiser):
    """Class-conditional ``UNet2DModel`` with a learned null class for classifier-free guidance."""

    kind = "class"

    def __init__(self, unet, scheduler_config: dict[str, Any], info: dict[str, Any]) -> None:
        self.unet = unet
        self.scheduler_config = scheduler_config
        self.info = dict(info)
        self.num_classes = int(info["num_classes"])
        self.null_class = self.num_classes
        self.channels = int(info["channels"])
        self.image_size = int(info["image_size"])
        self.class_names = info.get("class_names")

    def condition(self, values: list[list[int | None]]) -> torch.Tensor:
        """[n, B] class ids; ``None`` means unconditional (the null class)."""
        ids = [[self.null_class if v is None else int(v) for v in row] for row in values]
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n = cond.shape[0]
        rows = x.repeat(n, *([1] * (x.dim() - 1)))
        out = self.unet(rows, t.repeat(n), class_labels=cond.reshape(-1)).sample
        return out.view(n, *x.shape)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → model space [−1, 1]."""
        return images.to(self.device, self.dtype) * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() + 1) / 2).clamp(0, 1)


class LatentTextDenoiser(_UNetDenoiser):
    """Stable Diffusion parts: VAE, CLIP text encoder + tokenizer, ``UNet2DConditionModel``."""

    kind = "text"

    def __init__(
        self, vae, text_encoder, tokenizer, unet, scheduler_config: dict[str, Any]
    ) -> None:
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        self.scheduler_config = scheduler_config
        self.channels = 3
        self.scale = float(vae.config.scaling_factor)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_size = int(unet.config.sample_size) * self.factor
        self._embeddings: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """Prompt embeddings [len, L, D], each distinct prompt encoded once and cached."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if new:
            tokens = self.tokenizer(
                new,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            hidden = self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)
            self._embeddings.update(zip(new, hidden, strict=True))
        return torch.stack([self._embeddings[p] for p in prompts])

    def condition(self, values: list[list[str | None]]) -> torch.Tensor:
        """[n, B, L, D] embeddings; ``None`` means unconditional (the empty prompt)."""
        return torch.stack(
            [self.embed(["" if v is None else str(v) for v in row]) for row in values]
        )

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n = cond.shape[0]
        rows = x.repeat(n, 1, 1, 1)
        hidden = cond.reshape(n * x.shape[0], *cond.shape[2:])
        return self.unet(rows, t.repeat(n), encoder_hidden_states=hidden).sample.view(n, *x.shape)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → scaled latent (the posterior mode: no sampling noise)."""
        x = images.to(self.device, self.dtype) * 2 - 1
        return self.vae.encode(x).latent_dist.mode() * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((self.vae.decode(z / self.scale).sample.float() + 1) / 2).clamp(0, 1)


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise OodkitError(f"{folder} has no scheduler/scheduler_config.json")
    return json.loads(path.read_text())


def _is_latent_folder(folder: Path) -> bool:
    return all((folder / sub).is_dir() for sub in ("unet", "vae", "text_encoder", "tokenizer"))


def load_denoiser(
    model: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> PixelClassDenoiser | LatentTextDenoiser:
    """A denoiser from an oodkit diffusion-model artifact, a Stable Diffusion folder or Hub id.

    Weights load through diffusers / transformers ``from_pretrained`` (safetensors preferred,
    never remote code). Offline Hub ids fail with one line.
    """
    from oodkit.artifacts import MANIFEST_NAME, load_artifact

    folder = Path(model).expanduser()
    if folder.is_dir():
        if (folder / MANIFEST_NAME).exists():
            load_artifact(folder, kind="diffusion-model")
            from diffusers import UNet2DModel

            info = json.loads((folder / CLASS_MODEL_INFO).read_text())
            unet = (
                UNet2DModel.from_pretrained(str(folder / "unet"), torch_dtype=dtype)
                .to(device)
                .eval()
            )
            return PixelClassDenoiser(unet, _read_scheduler_config(folder), info)
        if _is_latent_folder(folder):
            return _load_latent(str(folder), device, dtype, local=True)
        raise OodkitError(
            f"unknown model folder {folder}: expected an oodkit diffusion-model artifact or a "
            "Stable Diffusion folder with unet/, vae/, text_encoder/, tokenizer/, scheduler/"
        )
    if "/" not in str(model) or str(model).startswith((".", "/", "~")):
        raise OodkitError(f"model {model!r} is neither a folder nor a Hub id (OWNER/NAME)")
    return _load_latent(str(model), device, dtype, local=False)


def _load_latent(source: str, device, dtype, local: bool) -> LatentTextDenoiser:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    transformers.utils.logging.disable_progress_bar()

    try:
        kw = {"torch_dtype": dtype}
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kw)
        text = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw)
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
        if local:
            scheduler_config = _read_scheduler_config(Path(source))
        else:
            from diffusers import DDIMScheduler

            scheduler_config = dict(DDIMScheduler.load_config(source, subfolder="scheduler"))
    except OSError as exc:
        import os

        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        offline = (
            " (HF_HUB_OFFLINE is set: the Hub is not reachable)"
            if os.environ.get("HF_HUB_OFFLINE")
            else ""
        )
        raise OodkitError(
            f"cannot load Stable Diffusion parts from {source}{offline}: {first}"
        ) from None
    parts = [m.to(device).eval() for m in (vae, text, unet)]
    return LatentTextDenoiser(parts[0], parts[1], tokenizer, parts[2], scheduler_config)
