"""``import_diffusion``: an OpenAI guided-diffusion (ADM) unconditional checkpoint as a
diffusion-model artifact in the diffusers ``DDPMPipeline`` layout (``unet/``, ``scheduler/``),
which ``generate`` and ``score --method diffguard`` take as ``--model``.

Steps: parse the source and settle the UNet's flags (a preset named by the option or the
file, or ``--flags``); read the checkpoint (``weights_only``); convert every tensor and load
them strictly into ``UNet2DModel``; write the artifact (the manifest records the flags and
the checkpoint's SHA-256). Nothing is written before the conversion succeeded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oodkit.artifacts import Artifact, check_output, write_artifact
from oodkit.errors import OodkitError, first_line
from oodkit.locks import writes_output
from oodkit.options import with_overrides
from oodkit.stages.import_diffusion.options import ImportDiffusionOptions

SOURCES = ("adm",)


def _adm_config(path: Path, o: ImportDiffusionOptions):
    from oodkit.diffusion.adm import PRESETS, AdmConfig

    if o.flags and o.preset is not None:
        raise OodkitError("pass --preset or --flags, not both")
    if o.flags:
        try:
            return "custom", AdmConfig(**o.flags)
        except (TypeError, ValueError) as exc:
            raise OodkitError(f"--flags: {first_line(exc)}") from None
    name = o.preset or path.stem
    if name not in PRESETS:
        raise OodkitError(
            f"no ADM preset {name!r}: pass --preset ({', '.join(PRESETS)}) or --flags JSON"
        )
    return name, PRESETS[name]


@writes_output
def import_diffusion(
    source: str,
    out: str | Path,
    options: ImportDiffusionOptions | None = None,
    **overrides: Any,
) -> Artifact:
    """Convert ``adm:FILE`` into a diffusion-model artifact at ``out``.

    Keyword arguments override fields of ``options``.
    """
    from dataclasses import asdict

    from oodkit.diffusion.adm import convert_state, scheduler_config, unet_config
    from oodkit.hashing import file_digest
    from oodkit.models.backbone import read_state_dict

    o = with_overrides(ImportDiffusionOptions, options, overrides)
    kind, _, file = source.partition(":")
    if kind not in SOURCES or not file:
        raise OodkitError(f"diffusion source {source!r}: expected adm:FILE")
    path = Path(file)
    name, cfg = _adm_config(path, o)
    if not path.is_file():
        raise OodkitError(f"checkpoint {path} does not exist")
    params = {"source": "adm", "preset": name, "flags": asdict(cfg)}
    inputs = [{"kind": "checkpoint", "path": str(path), "fingerprint": file_digest(path)}]
    existing = check_output(out, "diffusion-model", params, inputs, o.overwrite)
    if existing is not None:
        return existing
    converted = convert_state(read_state_dict(path), cfg)
    from diffusers import DDPMScheduler, UNet2DModel

    from oodkit.models.imported import load_strict

    unet = UNet2DModel(**unet_config(cfg))
    load_strict(unet, converted, str(path), f"the {name} ADM UNet")
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

    summary = {
        "parameters": sum(p.numel() for p in unet.parameters()),
        "image_size": cfg.image_size,
        "learned_sigma": cfg.learn_sigma,
    }
    return write_artifact(
        out, "diffusion-model", params, inputs, write_files=files, summary=summary
    )
