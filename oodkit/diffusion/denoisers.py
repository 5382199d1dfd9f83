"""Noise predictors that evaluate every condition of a batch in one forward.

``eps(x, t, cond)`` takes a batch ``x`` [B, ...], timesteps ``t`` [B] and a stacked condition
for ``n`` conditions — class ids [n, B] (class-conditional backends; the unconditional row is
the null class) or prompt embeddings [n, B, L, D] (Stable Diffusion; the unconditional row is
the empty prompt) — and returns [n, B, ...] from a single network call on n·B rows.

Backends, one per model layout users bring:

- ``PixelClassDenoiser``: the class-conditional pixel UNets ``oodkit train diffusion`` makes;
- ``PixelUncondDenoiser``: unconditional pixel UNets (``DDPMPipeline`` folders, e.g.
  ``google/ddpm-cifar10-32``), which take no condition (only ``None`` rows);
- ``LatentClassDenoiser``: class-conditional latent transformers (``DiTPipeline`` folders, e.g.
  ``facebook/DiT-XL-2-256``: null class = number of classes, learned σ whose first half is ε);
- ``LatentTextDenoiser``: Stable Diffusion (VAE, CLIP text encoder, ``UNet2DConditionModel``);
- ``LatentCrossClassDenoiser``: CompVis class-conditional LDMs (``cin256-v2``, converted by
  ``oodkit import diffusion ldm:FILE``): a ``UNet2DConditionModel`` whose context is the class's
  embedding row, a VQ autoencoder, the null class as the table's last row.

Latents cross this interface in float32 whatever the UNet's dtype: inputs are cast to the
UNet's dtype for the forward and its outputs back to float32, so the DDIM state and all
guidance math (ψ differences, masks, CFG) stay in float32.

``describe_model`` reads what a model is (kind, channels, size, classes) from its configs
without loading weights, so cheap checks run before the load; ``model_input`` is the model's
entry in a manifest's inputs (an artifact's fingerprint, a folder's content hash, a Hub
revision).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oodkit.errors import OodkitError, first_line
from oodkit.hub import PREFIX as HUB_PREFIX

CLASS_MODEL_INFO = "oodkit_model.json"
# diffusers layouts: the pipeline class in model_index.json → (layout, kind, parts)
LAYOUTS = {
    "StableDiffusionPipeline": ("sd", "text", ("unet", "vae", "text_encoder", "tokenizer")),
    "DDPMPipeline": ("ddpm", "uncond", ("unet",)),
    "DDIMPipeline": ("ddpm", "uncond", ("unet",)),
    "DiTPipeline": ("dit", "class", ("transformer", "vae")),
    # oodkit's own layout for converted CompVis LDMs (no diffusers pipeline has a class table)
    "LDMClassPipeline": ("ldm", "class", ("unet", "vqvae", "class_embedder")),
}
CLASS_TABLE = "class_embedder/embedding.safetensors"  # [classes + 1, context] ("weight")


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

    def _eps_rows(self, out: torch.Tensor, n: int, x: torch.Tensor) -> torch.Tensor:
        """The network's n·B output rows → ε [n, B, ...] in float32 (a learned-σ output's
        first half is ε)."""
        return out[:, : x.shape[1]].float().view(n, *x.shape)


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
        return self._eps_rows(out, n, x)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → model space [−1, 1] (float32)."""
        return images.to(self.device, torch.float32) * 2 - 1

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model space → images (unclamped, differentiable: classifier guidance)."""
        return (x.float() + 1) / 2

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_pixels(x).clamp(0, 1)


class PixelUncondDenoiser(PixelClassDenoiser):
    """Unconditional pixel ``UNet2DModel`` (a ``DDPMPipeline`` folder): every row is ``None``."""

    kind = "uncond"

    def __init__(self, unet, scheduler_config: dict[str, Any]) -> None:
        cfg = unet.config
        info = {"num_classes": 0, "channels": cfg.in_channels, "image_size": cfg.sample_size}
        super().__init__(unet, scheduler_config, info)
        self.num_classes = None

    def condition(self, values: list[list[Any]]) -> torch.Tensor:
        """[n, B] placeholders; an unconditional model refuses any other condition."""
        if any(v is not None for row in values for v in row):
            raise ValueError("an unconditional model takes no class or prompt")
        shape = (len(values), len(values[0]) if values else 0)
        return torch.zeros(shape, dtype=torch.long, device=self.device)

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n = cond.shape[0]
        rows = x.to(self.dtype).repeat(n, *([1] * (x.dim() - 1)))
        return self._eps_rows(self.unet(rows, t.repeat(n)).sample, n, x)


class _VaeCodec:
    """Images ↔ scaled latents through an autoencoder (a VAE: its posterior mode, no sampling
    noise; subclasses say what their latent is: ``_latent``)."""

    vae: Any
    device: torch.device

    def _codec(self, vae) -> None:
        self.vae = vae
        self.channels = 3
        self.scale = float(vae.config.scaling_factor)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        """The autoencoder's latent of images in [−1, 1], unscaled (a VAE: its posterior
        mode)."""
        return self.vae.encode(x).latent_dist.mode()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → scaled float32 latent (no sampling noise)."""
        x = images.to(self.device, self.vae_dtype) * 2 - 1
        return self._latent(x).float() * self.scale

    def to_pixels(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents → images (unclamped, differentiable: classifier guidance)."""
        z = (z.float() / self.scale).to(self.vae_dtype)
        return (self.vae.decode(z).sample.float() + 1) / 2

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_pixels(z).clamp(0, 1)

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """Autoencoder reconstructions of images in [0, 1] (the latent decoded), no diffusion."""
        x = images.to(self.device, self.vae_dtype) * 2 - 1
        out = self.vae.decode(self._latent(x)).sample
        return ((out.float() + 1) / 2).clamp(0, 1)


class LatentClassDenoiser(_VaeCodec, _UNetDenoiser):
    """A class-conditional latent transformer (``DiTPipeline`` parts: ``transformer/``, ``vae/``).

    ``unet`` holds the transformer. Its label table has one extra row, the null class
    (index = number of classes), which the ``DiTPipeline`` uses for classifier-free guidance.
    """

    kind = "class"

    def __init__(self, transformer, vae, scheduler_config: dict[str, Any], names) -> None:
        self.unet = transformer
        self._codec(vae)
        self.scheduler_config = scheduler_config
        self.num_classes = int(transformer.config.num_embeds_ada_norm)
        self.null_class = self.num_classes
        self.image_size = int(transformer.config.sample_size) * self.factor
        self.class_names = names

    condition = PixelClassDenoiser.condition

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n = cond.shape[0]
        rows = x.to(self.dtype).repeat(n, 1, 1, 1)
        out = self.unet(rows, timestep=t.repeat(n), class_labels=cond.reshape(-1)).sample
        return self._eps_rows(out, n, x)


class LatentTextDenoiser(_VaeCodec, _UNetDenoiser):
    """Stable Diffusion parts: VAE, CLIP text encoder + tokenizer, ``UNet2DConditionModel``."""

    kind = "text"

    def __init__(
        self, vae, text_encoder, tokenizer, unet, scheduler_config: dict[str, Any]
    ) -> None:
        self.text_encoder, self.tokenizer, self.unet = text_encoder, tokenizer, unet
        self._codec(vae)
        self.scheduler_config = scheduler_config
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


class LatentCrossClassDenoiser(_VaeCodec, _UNetDenoiser):
    """A class-conditional LDM: the class reaches the ``UNet2DConditionModel`` as a one-token
    context (its row of ``table``; the last row is the null class), images through a
    ``VQModel`` (encoding stops before quantisation; decoding quantises, as LDM's
    ``VQModelInterface``; gradients pass the quantiser straight through)."""

    kind = "class"

    def __init__(self, unet, vqvae, table: torch.Tensor, scheduler_config, names) -> None:
        self.unet = unet
        self._codec(vqvae)
        self.table = table.to(self.device, self.dtype)
        self.scheduler_config = scheduler_config
        self.num_classes = int(table.shape[0]) - 1
        self.null_class = self.num_classes
        self.image_size = int(unet.config.sample_size) * self.factor
        self.class_names = names

    condition = PixelClassDenoiser.condition

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latents

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n = cond.shape[0]
        rows = x.to(self.dtype).repeat(n, 1, 1, 1)
        context = self.table[cond.reshape(-1)][:, None]
        out = self.unet(rows, t.repeat(n), encoder_hidden_states=context).sample
        return out.float().view(n, *x.shape)


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
    kind: str  # "class" | "uncond" | "text" (what conditions it takes)
    channels: int | None  # None: a Hub DDPM model (known once loaded)
    image_size: int | None  # None: a Hub model (known once loaded)
    num_classes: int | None = None
    path: Path | None = None
    scheduler_config: dict[str, Any] | None = None  # None: a Hub model
    layout: str = "oodkit"  # "oodkit" | "sd" | "ddpm" | "dit" | "ldm"
    class_names: list[str] | None = None
    ref: str | None = None  # hub:OWNER/NAME@COMMIT of an artifact fetched from the Hub
    class_ids: list[str] | None = None  # WordNet ids of the classes, where known


def _layout(index: dict[str, Any] | None, folder: Path | None, where: str) -> tuple:
    """(layout, kind, parts) from a model_index.json, or from the subfolders present."""
    if index is not None and "_class_name" in index:
        name = index["_class_name"]
        if name not in LAYOUTS:
            raise OodkitError(
                f"{where}: {name} models are not supported (supported: {', '.join(LAYOUTS)})"
            )
        return LAYOUTS[name]
    if folder is not None:
        for layout in ("StableDiffusionPipeline", "DiTPipeline", "DDPMPipeline"):
            if all((folder / part).is_dir() for part in (*LAYOUTS[layout][2], "scheduler")):
                return LAYOUTS[layout]
    raise OodkitError(
        f"unknown model folder {where}: expected an oodkit diffusion-model artifact or a diffusers "
        "folder (Stable Diffusion: unet/ vae/ text_encoder/ tokenizer/; DiT: transformer/ vae/; "
        "DDPM: unet/; each with scheduler/)"
    )


def _label_names(index: dict[str, Any] | None) -> list[str] | None:
    """Class names from a DiT model_index.json ``id2label`` (the first synonym of each)."""
    labels = (index or {}).get("id2label")
    if not labels:
        return None
    return [str(labels[k]).split(",")[0].strip() for k in sorted(labels, key=int)]


def _folder_spec(folder: Path) -> ModelSpec:
    index_file = folder / "model_index.json"
    index = _read_json(index_file) if index_file.is_file() else None
    layout, kind, parts = _layout(index, folder, str(folder))
    missing = [p for p in (*parts, "scheduler") if not (folder / p).is_dir()]
    if missing:
        raise OodkitError(f"{folder} is a {layout} model without {', '.join(missing)}/")
    scheduler = _read_scheduler_config(folder)
    if layout == "ddpm":
        unet = _read_json(folder / "unet" / "config.json")
        if unet.get("num_class_embeds"):
            raise OodkitError(
                f"{folder}: a class-conditional UNet2DModel needs an oodkit diffusion-model "
                "artifact (its null class is not in a DDPM folder)"
            )
        size, channels = int(unet["sample_size"]), int(unet["in_channels"])
        return ModelSpec("folder", kind, channels, size, None, folder, scheduler, layout)
    vae = _read_json(folder / ("vqvae" if layout == "ldm" else "vae") / "config.json")
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    if layout == "ldm":
        info = _read_json(folder / "class_embedder" / "config.json")
        size = int(_read_json(folder / "unet" / "config.json")["sample_size"]) * factor
        names = _label_names(index)
        classes = int(info["num_classes"])
        return ModelSpec(
            "folder", kind, 3, size, classes, folder, scheduler, layout, names,
            class_ids=info.get("class_ids"),
        )  # fmt: skip
    if layout == "dit":
        net = _read_json(folder / "transformer" / "config.json")
        classes = int(net["num_embeds_ada_norm"])
        size = int(net["sample_size"]) * factor
        names = _label_names(index)
        return ModelSpec("folder", kind, 3, size, classes, folder, scheduler, layout, names)
    size = int(_read_json(folder / "unet" / "config.json")["sample_size"]) * factor
    return ModelSpec("folder", kind, 3, size, None, folder, scheduler, layout)


def _hub_index(repo: str) -> dict[str, Any]:
    """A Hub model's model_index.json (the local cache's when offline)."""
    from huggingface_hub import constants, hf_hub_download

    try:
        return _read_json(Path(hf_hub_download(repo, "model_index.json")))
    except Exception as exc:  # noqa: BLE001 - any Hub failure is one line for the user
        offline = (
            " (HF_HUB_OFFLINE is set: the Hub is not reachable)"
            if (constants.HF_HUB_OFFLINE)
            else ""
        )
        first = first_line(exc)
        raise OodkitError(f"cannot read the Hub model {repo}{offline}: {first}") from None


def describe_model(model: str | Path) -> ModelSpec:
    """Kind, channels, image size and classes of ``model`` from its configs (no weights).

    ``hub:OWNER/NAME[@REVISION]`` is a diffusion-model artifact that ``oodkit push`` put on
    the Hub (fetched to the local cache); a plain ``OWNER/NAME`` is a diffusers repo.
    """
    from oodkit.artifacts import MANIFEST_NAME, load_artifact

    if str(model).startswith(HUB_PREFIX):
        from oodkit.hub import fetch_artifact

        folder, ref = fetch_artifact(str(model))
        if not (folder / MANIFEST_NAME).exists():
            raise OodkitError(f"{model} is not an oodkit artifact (no {MANIFEST_NAME})")
        return dataclasses.replace(describe_model(folder), ref=ref)
    folder = Path(model).expanduser()
    if folder.is_dir():
        if (folder / MANIFEST_NAME).exists():
            load_artifact(folder, kind="diffusion-model")
            if (folder / "model_index.json").is_file():  # an imported checkpoint: diffusers inside
                return _folder_spec(folder)
            info = _read_json(folder / CLASS_MODEL_INFO)
            return ModelSpec(
                "artifact",
                "class",
                int(info["channels"]),
                int(info["image_size"]),
                int(info["num_classes"]),
                folder,
                _read_scheduler_config(folder),
                class_names=info.get("class_names"),
            )
        return _folder_spec(folder)
    if "/" not in str(model) or str(model).startswith((".", "/", "~")):
        raise OodkitError(f"model {model!r} is neither a folder nor a Hub id (OWNER/NAME)")
    index = _hub_index(str(model))
    layout, kind, _ = _layout(index, None, str(model))
    if layout == "ldm":
        raise OodkitError(
            f"{model}: a converted LDM loads from a folder or an oodkit artifact (hub:OWNER/NAME)"
        )
    channels = None if layout == "ddpm" else 3
    return ModelSpec("hub", kind, channels, None, layout=layout, class_names=_label_names(index))


def hub_revision(repo: str) -> str:
    """The commit a Hub model id resolves to: the local cache's when offline, else the Hub's."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / "main"
        if ref.is_file():
            return ref.read_text().strip()
        raise OodkitError(
            f"cannot load the Hub model {repo} (HF_HUB_OFFLINE is set: the Hub is not reachable "
            "and the model is not in the local cache)"
        )
    from huggingface_hub import HfApi

    try:
        return str(HfApi().model_info(repo).sha)
    except Exception as exc:  # noqa: BLE001 - any Hub failure is one line for the user
        first = first_line(exc)
        raise OodkitError(f"cannot resolve the Hub model {repo}: {first}") from None


def model_input(model: str | Path, spec: ModelSpec | None = None) -> dict[str, Any]:
    """The model's entry in a manifest's ``inputs``: what it is and a fingerprint of its content.

    An oodkit artifact by its fingerprint, a diffusers folder by a hash of its files (cached
    by path, size and mtime), a Hub id by the commit it resolves to.
    """
    from oodkit.artifacts import MANIFEST_NAME, load_artifact
    from oodkit.hashing import tree_digest

    spec = spec or describe_model(model)
    if spec.source == "artifact" or (spec.path and (spec.path / MANIFEST_NAME).is_file()):
        entry = load_artifact(spec.path, kind="diffusion-model").as_input()
        return {**entry, "path": spec.ref} if spec.ref else entry
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
) -> (
    PixelClassDenoiser
    | PixelUncondDenoiser
    | LatentClassDenoiser
    | LatentTextDenoiser
    | LatentCrossClassDenoiser
):
    """A denoiser from an oodkit diffusion-model artifact, a diffusers folder or a Hub id.

    Weights load through diffusers / transformers ``from_pretrained`` (safetensors preferred,
    never remote code); a Hub id loads at ``revision`` (the one fingerprinted). Offline Hub
    ids fail with one line. On CUDA the networks and VAEs use the channels-last layout.
    ``spec``: the model's ``describe_model`` when the caller already has it.
    """
    spec = spec or describe_model(model)
    if spec.source == "artifact":
        from diffusers import UNet2DModel

        info = _read_json(spec.path / CLASS_MODEL_INFO)
        unet = UNet2DModel.from_pretrained(str(spec.path / "unet"), torch_dtype=dtype)
        return PixelClassDenoiser(_placed(unet, device), _read_scheduler_config(spec.path), info)
    if spec.source == "folder":
        return _load_diffusers(str(spec.path), spec, device, dtype, None)
    return _load_diffusers(str(model), spec, device, dtype, revision or hub_revision(str(model)))


def _load_ldm(folder: Path, spec: ModelSpec, device, dtype, scheduler_config):
    """A converted LDM folder (``oodkit import diffusion ldm:FILE``)."""
    from diffusers import UNet2DConditionModel, VQModel
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", torch_dtype=dtype)
    vq = VQModel.from_pretrained(str(folder), subfolder="vqvae", torch_dtype=dtype)
    table = load_file(str(folder / CLASS_TABLE))["weight"]
    return LatentCrossClassDenoiser(
        _placed(unet, device), _placed(vq, device), table, scheduler_config, spec.class_names
    )


def _placed(module, device):
    """``module`` on ``device`` in eval mode; channels-last on CUDA (faster convolutions)."""
    module = module.to(device).eval()
    if torch.device(device).type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


def _load_diffusers(source: str, spec: ModelSpec, device, dtype, revision: str | None):
    """The parts of a diffusers layout, from a folder or a Hub id at ``revision``."""
    import transformers
    from diffusers import DDIMScheduler

    transformers.utils.logging.disable_progress_bar()
    kw: dict[str, Any] = {"revision": revision} if revision else {}
    try:
        scheduler_config = (
            spec.scheduler_config
            if spec.scheduler_config is not None
            else dict(DDIMScheduler.load_config(source, subfolder="scheduler", **kw))
        )
        if spec.layout == "ddpm":
            from diffusers import UNet2DModel

            unet = UNet2DModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kw)
            return PixelUncondDenoiser(_placed(unet, device), scheduler_config)
        if spec.layout == "ldm":
            return _load_ldm(Path(source), spec, device, dtype, scheduler_config)
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
        if spec.layout == "dit":
            from diffusers import DiTTransformer2DModel

            net = DiTTransformer2DModel.from_pretrained(
                source, subfolder="transformer", torch_dtype=dtype, **kw
            )
            return LatentClassDenoiser(
                _placed(net, device), _placed(vae, device), scheduler_config, spec.class_names
            )
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", torch_dtype=dtype, **kw
        )
        text = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", torch_dtype=dtype, **kw
        )
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
    except OSError as exc:
        from huggingface_hub import constants as hub_constants

        first = first_line(exc)
        offline = (
            " (HF_HUB_OFFLINE is set: the Hub is not reachable)"
            if hub_constants.HF_HUB_OFFLINE
            else ""
        )
        raise OodkitError(
            f"cannot load the {spec.layout} model {source}{offline}: {first}"
        ) from None
    return LatentTextDenoiser(
        _placed(vae, device),
        text.to(device).eval(),
        tokenizer,
        _placed(unet, device),
        scheduler_config,
    )
