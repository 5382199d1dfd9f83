"""``import_diffusion``: a paper's diffusion checkpoint as a diffusion-model artifact that
``generate`` and ``score --method diffguard`` take as ``--model``.

- ``adm:FILE``: OpenAI guided-diffusion (ADM) unconditional checkpoints → the diffusers
  ``DDPMPipeline`` layout (``unet/``, ``scheduler/``; learned σ kept);
- ``ldm:FILE``: CompVis class-conditional latent diffusion (``cin256-v2``) → ``unet/``
  (``UNet2DConditionModel``), ``vqvae/`` (``VQModel``), ``class_embedder/`` (the class table,
  the null class last; ImageNet WordNet ids and names for 1000 classes), ``scheduler/``
  (DDIM on LDM's grid).

Steps: parse the source and settle the flags (a preset named by the option or the file, or
``--flags``); read the checkpoint (``weights_only``); convert every tensor and load them
strictly into the diffusers models; write the artifact (the manifest records the flags and
the checkpoint's SHA-256). Nothing is written before the conversion succeeded.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from oodkit.artifacts import Artifact, check_output, write_artifact
from oodkit.errors import OodkitError, first_line
from oodkit.locks import writes_output
from oodkit.options import with_overrides
from oodkit.schemas import ImportedDiffusionSummary
from oodkit.stages.import_diffusion.options import ImportDiffusionOptions

SOURCES = ("adm", "ldm")


def _flags(kind: str, path: Path, o: ImportDiffusionOptions):
    """(preset name, config) of the checkpoint: ``--flags``, ``--preset``, or the preset named
    like the file (or, for LDM, its folder: CompVis ships ``cin256-v2/model.ckpt``)."""
    if kind == "adm":
        from oodkit.diffusion.adm import PRESETS
        from oodkit.diffusion.adm import AdmConfig as Config
    else:
        from oodkit.diffusion.ldm import PRESETS
        from oodkit.diffusion.ldm import LdmConfig as Config

    if o.flags and o.preset is not None:
        raise OodkitError("pass --preset or --flags, not both")
    if o.flags:
        try:
            return "custom", Config(**o.flags)
        except (TypeError, ValueError) as exc:
            raise OodkitError(f"--flags: {first_line(exc)}") from None
    names = [o.preset] if o.preset else [path.stem, path.parent.name]
    for name in names:
        if name in PRESETS:
            return name, PRESETS[name]
    raise OodkitError(
        f"no {kind.upper()} preset {names[0]!r}: pass --preset ({', '.join(PRESETS)}) or "
        "--flags JSON"
    )


def _adm_files(state, cfg, name: str, origin: str):
    """The converted ADM UNet's folder writer and summary."""
    from diffusers import DDPMScheduler, UNet2DModel

    from oodkit.diffusion.adm import convert_state, scheduler_config, unet_config
    from oodkit.models.imported import load_strict

    unet = UNet2DModel(**unet_config(cfg))
    load_strict(unet, convert_state(state, cfg), origin, f"the {name} ADM UNet")
    scheduler = DDPMScheduler(**scheduler_config(cfg))

    def files(folder: Path) -> None:
        unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
        scheduler.save_pretrained(str(folder / "scheduler"))
        index = {
            "_class_name": "DDPMPipeline",
            "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    summary = ImportedDiffusionSummary(
        parameters=sum(p.numel() for p in unet.parameters()),
        image_size=cfg.image_size,
        learned_sigma=cfg.learn_sigma,
    ).as_dict()
    return files, summary


def _ldm_files(state, cfg, name: str, origin: str):
    """The converted LDM's folder writer and summary."""
    from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel
    from safetensors.torch import save_file

    from oodkit.data.classes import imagenet1k
    from oodkit.diffusion.denoisers import CLASS_TABLE
    from oodkit.diffusion.ldm import convert_checkpoint, scheduler_config, unet_config, vq_config
    from oodkit.models.imported import load_strict

    unet_sd, vq_sd, table = convert_checkpoint(state, cfg, origin)
    if tuple(table.shape) != (cfg.n_classes, cfg.context_dim):
        raise OodkitError(
            f"{origin}: its class table is {list(table.shape)}, these flags say "
            f"[{cfg.n_classes}, {cfg.context_dim}]"
        )
    unet = UNet2DConditionModel(**unet_config(cfg))
    load_strict(unet, unet_sd, origin, f"the {name} LDM UNet")
    vq = VQModel(**vq_config(cfg))
    load_strict(vq, vq_sd, origin, f"the {name} VQ autoencoder")
    scheduler = DDIMScheduler(**scheduler_config(cfg))
    classes = cfg.n_classes - 1
    info: dict[str, Any] = {
        "num_classes": classes,
        "null_class": classes,
        "embed_dim": cfg.context_dim,
    }
    index: dict[str, Any] = {
        "_class_name": "LDMClassPipeline",  # oodkit's layout, not a diffusers pipeline
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vqvae": ["diffusers", "VQModel"],
        "class_embedder": ["oodkit", "class table"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    if classes == 1000:  # ImageNet-1k in label order (CompVis's class_label)
        info["class_ids"] = [w for w, _ in imagenet1k()]
        index["id2label"] = {str(i): n for i, (_, n) in enumerate(imagenet1k())}

    def files(folder: Path) -> None:
        unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
        vq.save_pretrained(str(folder / "vqvae"), safe_serialization=True)
        (folder / "class_embedder").mkdir()
        save_file({"weight": table.contiguous()}, str(folder / CLASS_TABLE))
        (folder / "class_embedder" / "config.json").write_text(json.dumps(info, indent=2) + "\n")
        scheduler.save_pretrained(str(folder / "scheduler"))
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    parameters = sum(p.numel() for m in (unet, vq) for p in m.parameters()) + table.numel()
    summary = ImportedDiffusionSummary(
        parameters=parameters,
        image_size=cfg.image_size * 2 ** (len(cfg.ch_mult) - 1),
        classes=classes,
    ).as_dict()
    return files, summary


@writes_output
def import_diffusion(
    source: str,
    out: str | Path,
    options: ImportDiffusionOptions | None = None,
    **overrides: Any,
) -> Artifact:
    """Convert ``adm:FILE`` or ``ldm:FILE`` into a diffusion-model artifact at ``out``.

    Keyword arguments override fields of ``options``.
    """
    from oodkit.hashing import file_digest
    from oodkit.models.backbone import read_state_dict

    # 1. the source, its flags and the output (nothing read or written yet)
    o = with_overrides(ImportDiffusionOptions, options, overrides)
    kind, _, file = source.partition(":")
    if kind not in SOURCES or not file:
        raise OodkitError(f"diffusion source {source!r}: expected adm:FILE or ldm:FILE")
    path = Path(file)
    name, cfg = _flags(kind, path, o)
    if not path.is_file():
        raise OodkitError(f"checkpoint {path} does not exist")
    params = {"source": kind, "preset": name, "flags": asdict(cfg)}
    inputs = [{"kind": "checkpoint", "path": str(path), "fingerprint": file_digest(path)}]
    existing = check_output(out, "diffusion-model", params, inputs, o.overwrite)
    if existing is not None:
        return existing

    # 2. read, convert and load strictly; 3. write
    convert = _adm_files if kind == "adm" else _ldm_files
    files, summary = convert(read_state_dict(path), cfg, name, str(path))
    return write_artifact(
        out, "diffusion-model", params, inputs, write_files=files, summary=summary
    )
