"""Generation reports: source | outlier preview grid, SONA mask maps, quality per start step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodkit.artifacts import column
from oodkit.stages.generate.judge import buckets

if TYPE_CHECKING:
    import datasets
    import torch


def quality_summary(ds: datasets.Dataset, steps: int) -> dict[str, Any]:
    """Mean SSIM and PSNR (outlier vs source) overall and per start-step bucket."""
    start = np.asarray(column(ds, "t_start"))
    ssim, psnr = (
        np.asarray(column(ds, "ssim"), dtype=float),
        np.asarray(column(ds, "psnr"), dtype=float),
    )
    per: dict[str, dict[str, Any]] = {
        name: {
            "n": int(sel.sum()),
            "ssim": float(np.nanmean(ssim[sel])),
            "psnr": float(np.nanmean(psnr[sel])),
        }
        for name, sel in buckets(start, steps)
    }
    return {
        "mean_ssim": float(np.nanmean(ssim)) if len(ssim) else None,
        "mean_psnr": float(np.nanmean(psnr)) if len(psnr) else None,
        "by_start_step": per,
    }


def preview_grid(
    path: Path, outliers: datasets.Dataset, sources: datasets.Dataset, n: int = 8
) -> None:
    """Rows of (source, outlier) pairs for the first ``n`` outliers, upscaled for viewing."""
    from PIL import Image

    row_of = {s: i for i, s in enumerate(sources["sample_id"])}
    n = min(n, len(outliers))
    if n == 0:
        return
    cell = 96
    canvas = Image.new("RGB", (2 * cell + 8, n * (cell + 4)), "white")
    for i in range(n):
        out = outliers[i]
        src = sources[row_of[out["source_id"]]]["image"]
        for j, im in enumerate((src, out["image"])):
            canvas.paste(
                im.convert("RGB").resize((cell, cell), Image.NEAREST),
                (j * (cell + 8), i * (cell + 4)),
            )
    canvas.save(path)


def save_mask_figure(path: Path, masks: dict[str, dict[str, torch.Tensor]]) -> None:
    """SONA's M_S / M_N maps (channel-averaged) at each captured sample's first step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(masks)
    names = list(next(iter(masks.values())))
    fig, axes = plt.subplots(
        len(keys), len(names), figsize=(2.2 * len(names), 2.2 * len(keys)), squeeze=False
    )
    for r, key in enumerate(keys):
        for c, name in enumerate(names):
            ax = axes[r][c]
            ax.imshow(masks[key][name].float().cpu().numpy(), cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(key, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
