"""Options of ``oodkit import diffusion`` (conversions: ``oodkit.diffusion.adm``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oodkit import options as O


@dataclass(kw_only=True)
class ImportDiffusionOptions:
    """Everything ``import_diffusion`` takes besides the source and the output folder."""

    preset: str | None = O.option(
        None, "ADM checkpoint preset, e.g. 256x256_diffusion_uncond (default: the file's name)."
    )
    flags: dict[str, Any] = O.option(
        help="ADM flags as JSON (image_size, num_channels, num_res_blocks, "
        "attention_resolutions, num_head_channels, ...) for a checkpoint without a preset.",
        factory=dict,
        parse="json",
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()
