"""Outlier diagnostics: how far each start-step bucket moved from its source.

Two axes, as in the papers' analyses: *nuisance preservation* (SSIM / PSNR of the outlier to
its source, computed at generation) and *semantic shift*, judged by an ID classifier — a
detector artifact (``--judge DIR``) or the class-conditional diffusion model itself
(``--judge model``: the class with the smallest denoising error, ``oodkit.diffusion.posterior``)
— as the share of outliers it no longer assigns to the source's class, and the share it
assigns to the class the outlier was guided toward.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodkit.artifacts import column
from oodkit.errors import OodkitError
from oodkit.schemas import Judged

if TYPE_CHECKING:
    import datasets


def buckets(start: np.ndarray, steps: int, n: int = 5) -> Iterator[tuple[str, np.ndarray]]:
    """``("lo-hi", mask)`` for ``n`` equal ranges of start steps 1..steps that hold rows."""
    width = max(1, math.ceil(steps / n))
    for lo in range(1, steps + 1, width):
        hi = min(steps, lo + width - 1)
        sel = (start >= lo) & (start <= hi)
        if sel.any():
            yield f"{lo}-{hi}", sel


def targets(conditions: Sequence[str | None], class_names: Sequence[str] | None) -> np.ndarray:
    """The judge's class index of each guided-toward condition (−1 when it has none): a class
    index as a string, or one of the judge's class names."""
    names = {n.lower(): i for i, n in enumerate(class_names or [])}
    out = np.full(len(conditions), -1, dtype=np.int64)
    for i, c in enumerate(conditions):
        if c is None:
            continue
        text = str(c).strip()
        if text.lstrip("-").isdigit():
            out[i] = int(text)
        elif text.lower() in names:
            out[i] = names[text.lower()]
    return out


def _share(hit: np.ndarray, valid: np.ndarray) -> float | None:
    return float(hit[valid].mean()) if valid.any() else None


def semantic_summary(
    start: np.ndarray,
    source_label: np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    steps: int,
) -> dict[str, Any]:
    """Overall and per start-step bucket: ``left_source`` = P(pred ≠ source class) over
    outliers with a known source class, ``reached_target`` = P(pred = target) over outliers
    with a target the judge knows."""
    known, aimed = source_label >= 0, target >= 0
    left, reached = pred != source_label, pred == target
    per = {
        name: {
            "left_source": _share(left[sel], known[sel]),
            "reached_target": _share(reached[sel], aimed[sel]),
        }
        for name, sel in buckets(start, steps)
    }
    return {
        "left_source": _share(left, known),
        "reached_target": _share(reached, aimed),
        "by_start_step": per,
    }


MODEL = "model"  # --judge model: the generating model's own posterior (a folder: ./model)
MODEL_TIMESTEPS = 10  # timesteps averaged per class (Li et al. use far more; diagnostics only)


def _slices(ds: datasets.Dataset, batch_size: int) -> Iterator[dict[str, list]]:
    """The table's rows, ``batch_size`` at a time: only one batch of images decoded in RAM."""
    for i in range(0, len(ds), batch_size):
        yield ds[i : i + batch_size]


def model_predictions(
    denoiser: Any,
    ds: datasets.Dataset,
    classes: Sequence[int],
    *,
    seed: int,
    policy: str,
    batch_size: int,
) -> np.ndarray:
    """The diffusion model's class (smallest denoising error among ``classes``) of each
    outlier, fitted to its square like the sources; noise per sample key; streamed."""
    import torch

    from oodkit.data.images import fit_square
    from oodkit.diffusion.posterior import denoising_errors, judge_timesteps
    from oodkit.diffusion.sampler import ddim_scheduler
    from oodkit.seeding import sample_generators

    scheduler = ddim_scheduler(denoiser.scheduler_config)
    timesteps = judge_timesteps(scheduler.config.num_train_timesteps, MODEL_TIMESTEPS)
    alphas = scheduler.alphas_cumprod
    picks = []
    for rows in _slices(ds, batch_size):
        x, _ = fit_square(rows["image"], denoiser.image_size, denoiser.channels, policy)
        gens = sample_generators(seed, [f"{k}#judge" for k in rows["sample_id"]])
        errors = denoising_errors(denoiser, x, classes, alphas, timesteps, gens)
        picks.append(errors.argmin(1).cpu())
    index = torch.cat(picks).numpy() if picks else np.zeros(0, dtype=np.int64)
    return np.asarray(classes, dtype=np.int64)[index]


def judge_predictions(
    judge: Path, ds: datasets.Dataset, device: Any = "cpu", batch_size: int = 256
) -> np.ndarray:
    """The judge detector's class for each outlier (its eval transform), on the generation
    device, streamed through the table a batch at a time."""
    import torch

    from oodkit.data.images import eval_transform
    from oodkit.data.tables import to_mode
    from oodkit.models.detector import load_detector

    model = load_detector(judge, device)
    transform = eval_transform(model.config)
    mode = "L" if model.config.in_chans == 1 else "RGB"
    preds = []
    with torch.no_grad():
        for rows in _slices(ds, batch_size):
            batch = torch.stack([transform(to_mode(im, mode)) for im in rows["image"]])
            preds.append(model(batch.to(device))["logits"].argmax(1).cpu())
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def judged_summary(
    ds: datasets.Dataset, pred: np.ndarray, class_names: Sequence[str] | None, steps: int
) -> tuple[dict[str, Any], Judged]:
    """``semantic_summary`` of an outliers table under a judge's predictions ``pred``, and
    the per-row verdicts (``judged.npz``)."""
    tgt = targets(column(ds, "condition"), class_names)
    source = np.asarray(column(ds, "source_label"), dtype=np.int64)
    summary = semantic_summary(np.asarray(column(ds, "t_start")), source, tgt, pred, steps)

    def verdict(hit: np.ndarray, known: np.ndarray) -> np.ndarray:
        return np.where(known, hit.astype(np.int8), np.int8(-1)).astype(np.int8)

    rows = Judged(
        np.asarray(column(ds, "sample_id"), dtype=str),
        np.asarray(pred, dtype=np.int64),
        verdict(pred != source, source >= 0),
        verdict(pred == tgt, tgt >= 0),
    )
    return summary, rows


def check_judge(judge: str, num_classes: int | None) -> Any:
    """The judge detector artifact, refused when its classes are not the ID data's (images
    are converted to its channel count, so any outliers fit)."""
    from oodkit.artifacts import load_artifact
    from oodkit.models.detector import DetectorConfig

    art = load_artifact(judge, kind="detector")
    config = DetectorConfig.load(art.path)
    if num_classes is not None and config.num_classes != num_classes:
        raise OodkitError(
            f"--judge {judge} has {config.num_classes} classes but the ID data has {num_classes}"
        )
    return art


def diagnostics_figure(path: Path, summary: dict[str, Any]) -> None:
    """Per start-step bucket: SSIM to the source next to the semantic-shift shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary.get("by_start_step", {})
    if not per:
        return
    names = list(per)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 3.2))
    series = {
        "SSIM to source (nuisance kept)": "ssim",
        "left the source class": "left_source",
        "reached the target class": "reached_target",
    }
    for label, key in series.items():
        ys = [per[n].get(key) for n in names]
        if any(y is not None for y in ys):
            ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", label=label)
    ax.set_xticks(x, names)
    ax.set_xlabel("start step (DDIM steps run)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
