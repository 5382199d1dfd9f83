"""Options of ``oodkit train detector`` (the recipe follows SONA / OpenOOD, docs/methods.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oodkit import options as O
from oodkit.devices import resolve_workers
from oodkit.errors import OodkitError
from oodkit.methods import DETECTOR_LOSS
from oodkit.stages.train_detector.outlier_filter import WEIGHTS, parse_filter

AUGMENTS = ("auto", "none", "crop", "crop-flip", "rrc-flip")


@dataclass(kw_only=True)
class TrainOptions:
    """Everything ``train_detector`` takes besides the ID set and the output folder."""

    loss: str = O.option("ce", f"{DETECTOR_LOSS.help()}.")
    labels: str | None = O.option(None, "Pseudo-labels artifact.", role="input")
    outliers: list[str] = O.option(
        help="Outliers artifact or dataset reference; repeatable.", factory=list, role="input"
    )
    extra_id: list[str] = O.option(
        help="Extra ID images keeping their label; repeatable.", factory=list, role="input"
    )
    outlier_filter: str | None = O.option(
        None,
        "Keep only outliers that satisfy every rule: left, !left, reached, !reached (the "
        "generation judge's verdicts), ssim<X, psnr>=X, … (comma-separated).",
    )
    outlier_weight: str = O.option(
        "uniform",
        "Draw outliers uniformly, or by dissimilarity (∝ 1 − SSIM to their source).",
        choices=WEIGHTS,
    )
    val: str | None = O.option(None, "ID validation set (default: benchmark's).", role="input")
    arch: str = O.option("resnet18", "Any timm model name.")
    arch_kwargs: dict[str, Any] = O.arch_kwargs_option()
    weights: str | None = O.option(None, "Local backbone weights.", role="input")
    pretrained: bool = O.option(False, "timm hub weights (online).")
    epochs: int = O.option(100, "Training epochs.", minimum=1)
    batch_size: int = O.option(128, "ID images per step.", minimum=1)
    outlier_batch_size: int | None = O.option(
        None, "Outliers per step (default: batch size).", minimum=1
    )
    lr: float = O.option(0.1, "Base learning rate (SGD).", above=0)
    momentum: float = O.option(0.9, "SGD momentum.", minimum=0, below=1)
    weight_decay: float = O.option(5e-4, "SGD weight decay.", minimum=0)
    nesterov: bool = O.option(True, "Nesterov momentum.", flags=("--nesterov/--no-nesterov",))
    min_lr: float = O.option(1e-6, "End of the per-step cosine.", minimum=0)
    beta: float = O.option(0.5, "OE weight (oe, sona).", minimum=0)
    club_weight: float = O.option(1.0, "CLUB weight (sona).", minimum=0)
    club_steps: int = O.option(5, "Estimator steps per batch.", minimum=0)
    club_lr: float = O.option(1e-4, "CLUB estimator learning rate.", above=0)
    sd_lambda: float = O.option(0.3, "Out-class head weight (sd).", minimum=0)
    energy_weight: float = O.option(0.1, "Energy-margin weight (energy).", minimum=0)
    m_in: float = O.option(-25.0, "ID energy margin (energy).")
    m_out: float = O.option(-7.0, "Outlier energy margin (energy).")
    augment: str = O.option("auto", f"{', '.join(AUGMENTS)}.", choices=AUGMENTS)
    image_size: int | None = O.option(
        None, "Input size (default: the data's).", minimum=1, maximum=O.MAX_IMAGE_SIDE
    )
    seed: int = O.seed_option()
    data_root: str | None = O.data_root_option()
    device: str = O.device_option()
    num_workers: str = O.num_workers_option()
    resume: bool = O.resume_option()
    stop_after_epochs: int | None = O.option(
        None, "Pause after N epochs (then --resume).", role="run", minimum=1
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def check(self) -> None:
        resolve_workers(self.num_workers, cuda=False)  # a count or auto, before any work
        DETECTOR_LOSS.get(self.loss)
        parse_filter(self.outlier_filter)
        if "outliers" not in DETECTOR_LOSS.get(self.loss).needs and (
            self.outlier_filter is not None or self.outlier_weight != "uniform"
        ):
            raise OodkitError(
                f"--outlier-filter and --outlier-weight need a loss with outliers, not {self.loss}"
            )
        if self.nesterov and self.momentum == 0:
            raise OodkitError("--nesterov needs --momentum > 0: give a momentum or --no-nesterov")
        if self.min_lr > self.lr:
            raise OodkitError(f"--min-lr {self.min_lr:g} must not exceed --lr {self.lr:g}")
