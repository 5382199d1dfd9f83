"""Options of ``oodkit train detector`` (the recipe follows SONA / OpenOOD, docs/methods.md §3):
the ones every loss shares, written here, and the options of the losses, generated from their
declarations in the registry (``oodkit.methods``).

A loss option defaults to ``None`` ("not given"): ``resolved`` fills in the loss's own default,
and an option the loss does not read is refused (``--loss ce --beta 1`` would be silently
ignored otherwise).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from oodkit import options as O
from oodkit.devices import resolve_workers
from oodkit.errors import OodkitError
from oodkit.methods import DETECTOR_LOSS
from oodkit.stages.train_detector.outlier_filter import parse_filter

AUGMENTS = ("auto", "none", "crop", "crop-flip", "rrc-flip")


@dataclass(kw_only=True)
class _Shared:
    """The options of every loss."""

    loss: str = O.option("ce", f"{DETECTOR_LOSS.help()}.")
    labels: str | None = O.option(None, "Pseudo-labels artifact.", role="input")
    outliers: list[str] = O.option(
        help="Outliers artifact or dataset reference; repeatable.", factory=list, role="input"
    )
    extra_id: list[str] = O.option(
        help="Extra ID images keeping their label; repeatable.", factory=list, role="input"
    )
    val: str | None = O.option(None, "ID validation set (default: benchmark's).", role="input")
    arch: str = O.option("resnet18", "Any timm model name.")
    arch_kwargs: dict[str, Any] = O.arch_kwargs_option()
    weights: str | None = O.option(None, "Local backbone weights.", role="input")
    pretrained: bool = O.option(False, "timm hub weights (online).")
    epochs: int = O.option(100, "Training epochs.", minimum=1)
    batch_size: int = O.option(128, "ID images per step.", minimum=1)
    lr: float = O.option(0.1, "Base learning rate (SGD).", above=0)
    momentum: float = O.option(0.9, "SGD momentum.", minimum=0, below=1)
    weight_decay: float = O.option(5e-4, "SGD weight decay.", minimum=0)
    nesterov: bool = O.option(True, "Nesterov momentum.", flags=("--nesterov/--no-nesterov",))
    min_lr: float = O.option(1e-6, "End of the per-step cosine.", minimum=0)
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
        """Refuse what the loss could not use: an option it does not read, a bad filter, an
        inconsistent optimiser, bad workers."""
        resolve_workers(self.num_workers, cuda=False)  # a count or auto, before any work
        loss = DETECTOR_LOSS.get(self.loss)
        DETECTOR_LOSS.check_read([loss], self._loss_values())
        parse_filter(self.outlier_filter)
        if self.nesterov and self.momentum == 0:
            raise OodkitError("--nesterov needs --momentum > 0: give a momentum or --no-nesterov")
        if self.min_lr > self.lr:
            raise OodkitError(f"--min-lr {self.min_lr:g} must not exceed --lr {self.lr:g}")

    def resolved(self) -> Any:
        """A checked copy with the loss's own defaults filled in (what the manifest records)."""
        self.check()
        filled = DETECTOR_LOSS.resolve(DETECTOR_LOSS.get(self.loss), self._loss_values())
        return dataclasses.replace(self, **filled)

    def _loss_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DETECTOR_LOSS.params}


TrainOptions = dataclasses.make_dataclass(
    "TrainOptions", DETECTOR_LOSS.option_fields(), bases=(_Shared,), kw_only=True
)
TrainOptions.__module__ = __name__
TrainOptions.__doc__ = (
    "Everything ``train_detector`` takes besides the ID set and the output folder."
)
