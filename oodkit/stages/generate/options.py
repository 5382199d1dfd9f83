"""Options of ``oodkit generate`` (docs/methods.md §3, §5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from oodkit import options as O
from oodkit.errors import OodkitError
from oodkit.methods import GENERATION


@dataclass(kw_only=True)
class GenerateOptions:
    """Everything ``generate`` takes besides the ID set, the model and the output folder."""

    method: str = O.option("sona", f"{GENERATION.help()}.", required=True)
    labels: str | None = O.option(None, "Pseudo-labels artifact (sd).", role="input")
    steps: int | None = O.option(None, f"DDIM steps ({GENERATION.defaults_help('steps')}).")
    t_start: int | None = O.option(
        None,
        "Fixed start: DDIM steps, or training timesteps for class-conditional methods "
        f"({GENERATION.defaults_help('t_start')}); default: uniform per sample.",
    )
    lam: float = O.option(0.1, "SONA mask fraction λ.")
    scale: float | None = O.option(None, f"Guidance scale s ({GENERATION.defaults_help('scale')}).")
    w: float = O.option(2.0, "SD guidance weight.")
    momentum_scale: float = O.option(0.0, "SONA momentum (official: 0.3).")
    momentum_beta: float = O.option(0.6, "SONA momentum β.")
    warmup: int = O.option(0, "Unguided steps at each sample's start.")
    ood_classes: str | None = O.option(None, "File of OOD class names.", role="input")
    allow_leakage: bool = O.option(False, "Allow OOD names that are ID classes.")
    per_image: int = O.option(1, "Outliers per ID image.")
    limit: int | None = O.option(None, "Use only the first N ID images.")
    size: int | None = O.option(None, "Output size (default: the source's).")
    save_masks: int = O.option(0, "Save SONA masks of the first N samples.", role="run")
    batch_size: int = O.option(16, "Samples per denoising batch.")
    seed: int = O.seed_option()
    data_root: str | None = O.data_root_option()
    device: str = O.device_option()
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def resolved(self) -> GenerateOptions:
        """A copy with the method's registered defaults filled in, checked."""
        defaults = GENERATION.get(self.method).defaults
        out = GenerateOptions(**asdict(self))
        out.steps = self.steps or defaults["steps"]
        if out.t_start is None:
            out.t_start = defaults.get("t_start")
        if out.scale is None:
            out.scale = defaults.get("scale")
        if out.per_image < 1 or out.batch_size < 1 or out.steps < 1:
            raise OodkitError("--per-image, --batch-size and --steps must be positive")
        if not 0 < out.lam <= 1:
            raise OodkitError("--lam must lie in (0, 1]")
        return out
