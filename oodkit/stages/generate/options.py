"""Options of ``oodkit generate`` (docs/methods.md §3, §5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from oodkit import options as O
from oodkit.devices import DTYPES, host_workers, resolve_workers
from oodkit.errors import OodkitError
from oodkit.methods import GENERATION

OOD_CONDITIONS = ("class", "away", "none")  # SONA / global c_OOD (generate/methods.py)

PROBE_SIZE = 64  # default of --probe-size


@dataclass(kw_only=True)
class GenerateOptions:
    """Everything ``generate`` takes besides the ID set, the model and the output folder."""

    method: str = O.option("sona", f"{GENERATION.help()}.", required=True)
    labels: str | None = O.option(None, "Pseudo-labels artifact (sd).", role="input")
    steps: int | None = O.option(
        None, f"DDIM steps ({GENERATION.defaults_help('steps')}).", minimum=1
    )
    t_start: int | str | None = O.option(
        None,
        "Fixed start: DDIM steps, or training timesteps for class-conditional methods "
        f"({GENERATION.defaults_help('t_start')}); auto: the smallest that reaches "
        "--target-shift on a probe; default: uniform per sample.",
        parse=O.AUTO,
    )
    lam: float = O.option(0.1, "SONA mask fraction λ.", above=0, maximum=1)
    scale: float | str | None = O.option(
        None,
        f"Guidance scale s ({GENERATION.defaults_help('scale')}); auto: the smallest that "
        "reaches --target-shift on a probe.",
        parse=O.AUTO,
    )
    w: float = O.option(2.0, "SD guidance weight.")
    momentum_scale: float = O.option(0.0, "SONA momentum (official: 0.3).", minimum=0)
    momentum_beta: float = O.option(0.6, "SONA momentum β.", minimum=0, below=1)
    warmup: int = O.option(0, "Unguided steps at each sample's start.", minimum=0)
    ood_condition: str = O.option(
        "class",
        "SONA / global c_OOD: class (drawn: another ID class, or an --ood-classes prompt), "
        "away (ψ_OOD = −ψ_ID) or none (ψ_OOD = 0).",
        choices=OOD_CONDITIONS,
    )
    ood_classes: str | None = O.option(None, "File of OOD class names.", role="input")
    judge: str | None = O.option(
        None,
        "Judge of the outliers' semantic shift (diagnostics): a detector artifact, or 'model' "
        "(the class-conditional model's own posterior).",
        role="input",
    )
    target_shift: float | None = O.option(
        None,
        "With --t-start auto or --scale auto: the share of a probe's outliers that the "
        "--judge must see leave their source class.",
        above=0,
        maximum=1,
    )
    probe_size: int | None = O.option(
        None,
        f"With --t-start auto or --scale auto: ID training images (seeded draw) the search "
        f"generates from (default {PROBE_SIZE}).",
        minimum=1,
    )
    allow_leakage: bool = O.option(False, "Allow OOD names that are ID classes.")
    mode: str = O.option(
        "sdedit",
        "reconstruct: sdedit (re-generate from a random start) or vae (VAE round trips, "
        "SONA's extra ID set; latent models).",
        choices=("sdedit", "vae"),
    )
    per_image: int = O.option(1, "Outliers per ID image.", minimum=1)
    limit: int | None = O.option(None, "Use only the first N ID images.", minimum=1)
    resize: str = O.option(
        "crop",
        "Fit sources to the model's square: crop (centre), pad (edges, cut back after) or squash.",
        choices=O.RESIZE_POLICIES,
    )
    size: int | None = O.option(
        None, "Output size, long side (default: the model's).", minimum=1, maximum=O.MAX_IMAGE_SIDE
    )
    dtype: str = O.option(
        "auto", "Model precision: auto (fp16 on CUDA, else fp32), fp32, fp16, bf16.", choices=DTYPES
    )
    compile: bool = O.option(False, "torch.compile the UNet (GPU runs of many batches).")
    save_masks: int = O.option(0, "Save SONA masks of the first N samples.", role="run", minimum=0)
    batch_size: int = O.option(16, "Samples per denoising batch.", minimum=1)
    shard_size: int = O.option(
        256, "Samples per resumable shard (does not change the result).", role="run", minimum=1
    )
    num_workers: str = O.num_workers_option()
    host_workers: str = O.option(
        "auto",
        "Threads that encode and write outputs beside the accelerator (auto: the rank's CPUs).",
        role="run",
    )
    image_format: str = O.option(
        "png", "Image encoding of the outputs: png, jpeg or webp.", choices=tuple(O.IMAGE_FORMATS)
    )
    image_quality: int | None = O.option(
        None, "PNG: zlib level 0-9 (default 6); JPEG / WebP: quality 1-100 (default 95)."
    )
    seed: int = O.seed_option()
    data_root: str | None = O.data_root_option()
    device: str = O.device_option()
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def resolved(self) -> GenerateOptions:
        """A copy with the method's registered defaults filled in, checked."""
        registered = GENERATION.get(self.method)
        defaults = registered.defaults
        out = GenerateOptions(**asdict(self))
        out.steps = defaults["steps"] if self.steps is None else self.steps
        if out.t_start is None:
            out.t_start = defaults.get("t_start")
        if out.scale is None:
            out.scale = defaults.get("scale")
        if out.ood_condition != "class" and "ood_condition" not in registered.options:
            raise OodkitError(f"--ood-condition applies to sona and global, not {out.method}")
        out.image_quality = O.check_image_format(out.image_format, out.image_quality)
        resolve_workers(out.num_workers, cuda=False)
        host_workers(out.host_workers)
        _check_auto(out, registered.options)
        if out.mode == "vae" and out.method != "reconstruct":
            raise OodkitError("--mode vae is a reconstruct mode: use --method reconstruct")
        return out


def _check_auto(o: GenerateOptions, registered: tuple[str, ...]) -> None:
    """``--t-start auto`` / ``--scale auto`` need a target and a judge, one at a time."""
    autos = [f for f in ("t_start", "scale") if getattr(o, f) == O.AUTO]
    if not autos:
        for name in ("target_shift", "probe_size"):
            if getattr(o, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise OodkitError(f"{flag} applies with --t-start auto or --scale auto")
        return
    flag = "--" + autos[0].replace("_", "-")
    if len(autos) > 1:
        raise OodkitError("--t-start auto and --scale auto: search one, fix the other")
    if autos[0] not in registered:
        raise OodkitError(f"{flag} does not apply to --method {o.method}")
    if o.method == "reconstruct" or o.mode == "vae":
        raise OodkitError(f"{flag} auto targets a semantic shift: not for reconstructions")
    if o.target_shift is None:
        raise OodkitError(f"{flag} auto needs --target-shift (e.g. 0.9)")
    if o.judge is None:
        raise OodkitError(f"{flag} auto needs --judge (model, or a detector artifact)")
    if o.probe_size is None:
        o.probe_size = PROBE_SIZE
