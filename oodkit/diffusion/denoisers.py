"""Noise predictors that evaluate every condition of a batch in one forward.

``eps(x, t, cond)`` takes a batch ``x`` [B, ...], timesteps ``t`` [B] and a stacked condition
for ``n`` conditions — class ids [n, B] (pixel backend; the unconditional row is the null
class) or prompt embeddings [n, B, L, D] (latent backend; the unconditional row is the empty
prompt) — and returns [n, B, ...] from a single UNet call on n·B rows.

Latents cross this interface in float32 whatever the UNet's dtype: inputs are cast to the
UNet's dtype for the forward and its outputs back to float32, so the DDIM state and all
guidance math (ψ differences, masks, CFG) stay in float32.

``describe_model`` reads what a model is (kind, channels, size, classes) from its configs
without loading weights, so cheap checks run before the load; ``model_input`` is the model's
entry in a manifest's inputs (an artifact's fingerprint, a folder's content hash, a Hub
revision).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oodkit.errors import OodkitError

CLASS_MODEL_INFO = "oodkit_model.json"
LATENT_PARTS = ("unet", "vae", "text_encoder", "tokenizer")


class _UNetDenoiser:
    """Where the denoiser runs: the device and dtype of its UNet."""

    unet: Any

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def compile(self) -> None:
        """``torch.compile`` the UNet (first batches are slow while it compiles)."""
        self.unet = torch.compile(self.unet)


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
        rows = x.to(self.dtype).repeat(n, *([1] * (x.dim() - 1)))
        out = self.unet(rows, t.repeat(n), class_labels=cond.reshape(-1)).sample
        return out.float().view(n, *x.shape)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → model space [−1, 1] (float32)."""
        return images.to(self.device, torch.float32) * 2 - 1

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
        rows = x.to(self.dtype).repeat(n, 1, 1, 1)
        hidden = cond.reshape(n * x.shape[0], *cond.shape[2:])
        out = self.unet(rows, t.repeat(n), encoder_hidden_states=hidden).sample
        return out.float().view(n, *x.shape)

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → scaled float32 latent (the posterior mode: no sampling noise)."""
        x = images.to(self.device, self.vae_dtype) * 2 - 1
        return self.vae.encode(x).latent_dist.mode().float() * self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = (z.float() / self.scale).to(self.vae_dtype)
        return ((self.vae.decode(z).sample.float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """VAE reconstructions of images in [0, 1]: decode(encode(x).mode()), no diffusion."""
        x = images.to(self.device, self.vae_dtype) * 2 - 1
        out = self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample
        return ((out.float() + 1) / 2).clamp(0, 1)


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise OodkitError(f"{folder} has no scheduler/scheduler_config.json")
    return json.loads(path.read_text())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OodkitError(f"cannot read {path}: {exc}") from None


@dataclass
class ModelSpec:
    """What a model is, read from its configs without loading weights."""

    source: str  # "artifact" | "folder" | "hub"
    kind: str  # "class" (pixel class-conditional) | "text" (Stable Diffusion)
    channels: int
    image_size: int | None  # None: a Hub model (known once loaded)
    num_classes: int | None = None
    path: Path | None = None
    scheduler_config: dict[str, Any] | None = None  # None: a Hub model


def describe_model(model: str | Path) -> ModelSpec:
    """Kind, channels, image size and classes of ``model`` from its configs (no weights)."""
    from oodkit.artifacts import MANIFEST_NAME, load_artifact

    folder = Path(model).expanduser()
    if folder.is_dir():
        if (folder / MANIFEST_NAME).exists():
            load_artifact(folder, kind="diffusion-model")
            info = _read_json(folder / CLASS_MODEL_INFO)
            return ModelSpec(
                "artifact",
                "class",
                int(info["channels"]),
                int(info["image_size"]),
                int(info["num_classes"]),
                folder,
                _read_scheduler_config(folder),
            )
        if all((folder / sub).is_dir() for sub in LATENT_PARTS):
            unet = _read_json(folder / "unet" / "config.json")
            vae = _read_json(folder / "vae" / "config.json")
            factor = 2 ** (len(vae["block_out_channels"]) - 1)
            size = int(unet["sample_size"]) * factor
            return ModelSpec(
                "folder", "text", 3, size, None, folder, _read_scheduler_config(folder)
            )
        raise OodkitError(
            f"unknown model folder {folder}: expected an oodkit diffusion-model artifact or a "
            "Stable Diffusion folder with unet/, vae/, text_encoder/, tokenizer/, scheduler/"
        )
    if "/" not in str(model) or str(model).startswith((".", "/", "~")):
        raise OodkitError(f"model {model!r} is neither a folder nor a Hub id (OWNER/NAME)")
    return ModelSpec("hub", "text", 3, None)


def hub_revision(repo: str) -> str:
    """The commit a Hub model id resolves to: the local cache's when offline, else the Hub's."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / "main"
        if ref.is_file():
            return ref.read_text().strip()
        raise OodkitError(
            f"cannot load Stable Diffusion parts from {repo} (HF_HUB_OFFLINE is set: the Hub is "
            "not reachable and the model is not in the local cache)"
        )
    from huggingface_hub import HfApi

    try:
        return str(HfApi().model_info(repo).sha)
    except Exception as exc:  # noqa: BLE001 - any Hub failure is one line for the user
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OodkitError(f"cannot resolve the Hub model {repo}: {first}") from None


def model_input(model: str | Path, spec: ModelSpec | None = None) -> dict[str, Any]:
    """The model's entry in a manifest's ``inputs``: what it is and a fingerprint of its content.

    An oodkit artifact by its fingerprint, a diffusers folder by a hash of its files (cached
    by path, size and mtime), a Hub id by the commit it resolves to.
    """
    from oodkit.artifacts import load_artifact
    from oodkit.hashing import tree_digest

    spec = spec or describe_model(model)
    if spec.source == "artifact":
        return load_artifact(spec.path, kind="diffusion-model").as_input()
    if spec.source == "folder":
        return {
            "kind": "diffusers-model",
            "path": str(spec.path),
            "fingerprint": tree_digest(spec.path),
        }
    return {"kind": "hub-model", "path": str(model), "fingerprint": hub_revision(str(model))}


def load_denoiser(
    model: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    revision: str | None = None,
    spec: ModelSpec | None = None,
) -> PixelClassDenoiser | LatentTextDenoiser:
    """A denoiser from an oodkit diffusion-model artifact, a Stable Diffusion folder or Hub id.

    Weights load through diffusers / transformers ``from_pretrained`` (safetensors preferred,
    never remote code); a Hub id loads at ``revision`` (the one fingerprinted). Offline Hub
    ids fail with one line. On CUDA the UNet and VAE use the channels-last layout. ``spec``:
    the model's ``describe_model`` when the caller already has it.
    """
    spec = spec or describe_model(model)
    if spec.source == "artifact":
        from diffusers import UNet2DModel

        info = _read_json(spec.path / CLASS_MODEL_INFO)
        unet = UNet2DModel.from_pretrained(str(spec.path / "unet"), torch_dtype=dtype)
        denoiser: Any = PixelClassDenoiser(
            _placed(unet, device), _read_scheduler_config(spec.path), info
        )
    elif spec.source == "folder":
        denoiser = _load_latent(str(spec.path), device, dtype, local=True)
    else:
        denoiser = _load_latent(
            str(model), device, dtype, local=False, revision=revision or hub_revision(str(model))
        )
    return denoiser


def _placed(module, device):
    """``module`` on ``device`` in eval mode; channels-last on CUDA (faster convolutions)."""
    module = module.to(device).eval()
    if torch.device(device).type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


def _load_latent(
    source: str, device, dtype, local: bool, revision: str | None = None
) -> LatentTextDenoiser:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    transformers.utils.logging.disable_progress_bar()

    try:
        kw: dict[str, Any] = {"torch_dtype": dtype}
        if revision:
            kw["revision"] = revision
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kw)
        text = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw)
        tokenizer = CLIPTokenizer.from_pretrained(
            source, subfolder="tokenizer", **({"revision": revision} if revision else {})
        )
        if local:
            scheduler_config = _read_scheduler_config(Path(source))
        else:
            from diffusers import DDIMScheduler

            scheduler_config = dict(
                DDIMScheduler.load_config(source, subfolder="scheduler", revision=revision)
            )
    except OSError as exc:
        from huggingface_hub import constants as hub_constants

        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        offline = (
            " (HF_HUB_OFFLINE is set: the Hub is not reachable)"
            if hub_constants.HF_HUB_OFFLINE
            else ""
        )
        raise OodkitError(
            f"cannot load Stable Diffusion parts from {source}{offline}: {first}"
        ) from None
    return LatentTextDenoiser(
        _placed(vae, device),
        text.to(device).eval(),
        tokenizer,
        _placed(unet, device),
        scheduler_config,
    )
