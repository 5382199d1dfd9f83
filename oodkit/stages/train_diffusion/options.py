"""Options of ``oodkit train diffusion`` (docs/methods.md §5)."""

from __future__ import annotations

from dataclasses import dataclass

from oodkit import options as O
from oodkit.diffusion.unets import BETAS, PRESETS


@dataclass(kw_only=True)
class DiffusionOptions:
    """Everything ``train_diffusion`` takes besides the ID set and the output folder."""

    labels: str | None = O.option(
        None, "Pseudo-labels artifact (clusters as classes).", role="input"
    )
    preset: str = O.option(
        "tiny", "tiny (CPU, ~1 M params) or cifar (DDPM CIFAR-10 UNet).", choices=tuple(PRESETS)
    )
    steps: int = O.option(2000, "Training steps.", minimum=1)
    batch_size: int = O.option(64, "Images per step.", minimum=1)
    lr: float = O.option(1e-3, "AdamW learning rate.", above=0)
    p_uncond: float = O.option(0.1, "Label dropout to the null class.", minimum=0, below=1)
    ema_decay: float = O.option(0.999, "EMA decay of the saved weights.", minimum=0, below=1)
    betas: str = O.option("linear", "linear or cosine.", choices=tuple(BETAS))
    train_timesteps: int = O.option(1000, "Diffusion timesteps.", cli=False, minimum=1)
    flip: bool = O.option(False, "Random horizontal flips.")
    seed: int = O.seed_option()
    checkpoint_every: int = O.option(250, "Steps between checkpoints and sample grids.", minimum=1)
    data_root: str | None = O.data_root_option()
    device: str = O.device_option()
    resume: bool = O.resume_option()
    stop_after_steps: int | None = O.option(None, "Pause after N steps.", role="run", minimum=1)
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()
