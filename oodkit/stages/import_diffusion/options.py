"""Options of ``oodkit import diffusion`` (conversions: ``oodkit.diffusion.adm``, ``.ldm``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oodkit import options as O


@dataclass(kw_only=True)
class ImportDiffusionOptions:
    """Everything ``import_diffusion`` takes besides the source and the output folder."""

    preset: str | None = O.option(
        None,
        "Checkpoint preset, e.g. 256x256_diffusion_uncond (ADM) or cin256-v2 (LDM) (default: "
        "the file's name, or for LDM its folder's).",
    )
    flags: dict[str, Any] = O.option(
        help="Flags as JSON for a checkpoint without a preset: ADM (image_size, num_channels, "
        "num_res_blocks, attention_resolutions, num_head_channels, ...) or LDM (image_size, "
        "model_channels, channel_mult, num_res_blocks, attention_resolutions, context_dim, ...).",
        factory=dict,
        parse="json",
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()
