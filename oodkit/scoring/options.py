"""Options of ``oodkit score`` (score conventions: docs/methods.md §1, §5)."""

from __future__ import annotations

from dataclasses import dataclass

from oodkit import options as O
from oodkit.devices import resolve_workers
from oodkit.errors import OodkitError
from oodkit.methods import SCORE
from oodkit.similarity import DISTANCES


@dataclass(kw_only=True)
class ScoreOptions:
    """Everything ``score`` takes besides the detector, benchmark, methods and output folder."""

    outliers: str | None = O.option(None, "Outliers for sd-vote.", role="input")
    k: int | None = O.option(None, f"Neighbours ({SCORE.defaults_help('k')}).", minimum=1)
    alpha: float = O.option(0.3, "sd-vote outlier weight.")
    temperature: float = O.option(1.0, "For msp and energy.", above=0)
    # --- diffguard (docs/diffguard.md) --------------------------------------------------------
    model: str | None = O.option(
        None, "diffguard: diffusion model (folder, artifact or Hub id).", role="input"
    )
    preset: str | None = O.option(
        None,
        "diffguard: the official recipe, gdm (ImageNet exp6.1: ADM, classifier guidance) or ldm "
        "(exp2.25: cin256-v2, CFG); options given on the command line win.",
    )
    guidance: str | None = O.option(None, "diffguard: classifier (any model; default) or cfg.")
    steps: int | None = O.option(None, "diffguard: DDIM steps (classifier 100, cfg 25).", minimum=1)
    stop: str | None = O.option(
        None, "diffguard: inversion depth, aes or a fraction (classifier aes, cfg 1)."
    )
    aes_psnr: float | None = O.option(
        48.5,
        "diffguard AES: stop below this PSNR, 20·log10(255/√MSE) on [−1, 1] (0: off).",
        minimum=0,
    )
    aes_gmsd: float | None = O.option(
        None, "diffguard AES: stop below this 1 − GMSD (0: off).", minimum=0
    )
    aes_dists: float | None = O.option(
        None,
        "diffguard AES: stop below this 1 − DISTS (official 0.38; local weights; 0: off).",
        minimum=0,
    )
    aes_clamp: bool | None = O.option(
        None,
        "diffguard AES: clamp x_t to [0, 1] before pixel similarities (default; official: not).",
        flags=("--aes-clamp/--no-aes-clamp",),
    )
    inversion_eps: str | None = O.option(
        None,
        "diffguard: inversion ε at the target timestep from the clean image (default, "
        "diffusers) or at the source timestep from the image taken as x at t = 0 (source, "
        "official GDM).",
    )
    clip_x0: bool | None = O.option(
        None,
        "diffguard: clip x̂₀ to [−1, 1] in inversion and both chains, ε re-derived (official "
        "GDM; pixel models; default off).",
        flags=("--clip-x0/--no-clip-x0",),
    )
    restart: str | None = O.option(
        None,
        "diffguard: denoise from where inversion stopped (exact, default) or one level above "
        "(official, GDM's forback_skip_diff 3).",
    )
    geometry: str | None = O.option(
        None,
        "diffguard: resize (default: the model's square, resized for the classifier), "
        "classifier (its own resize and crop, upsampled for the model; official GDM) or model "
        "(the model's square as the classifier's input; official LDM).",
    )
    perceptual_weights: str | None = O.option(
        None,
        "diffguard: folder of VGG16 / DISTS / LPIPS weight files (default: torch hub cache).",
        role="input",
    )
    max_invert: float = O.option(
        0.9, "diffguard AES: deepest inversion, fraction of steps.", above=0, maximum=1
    )
    distance: str | None = O.option(
        None,
        f"diffguard: comma list of {', '.join(DISTANCES)}; one artifact each (default logits-l1).",
    )
    reference: str | None = O.option(
        None, "diffguard: compare with the unguided synthesis (default) or the input."
    )
    classifier_scale: float = O.option(3.0, "diffguard classifier guidance scale.", minimum=0)
    cutouts: int = O.option(8, "diffguard cut-outs per step.", minimum=1)
    blend: bool = O.option(
        True,
        "diffguard: classifier sees f·x̂₀ + (1 − f)·x_t, not x̂₀.",
        flags=("--blend/--no-blend",),
    )
    cfg_scale: float = O.option(10.0, "diffguard CFG scale.", minimum=0)
    cam: bool = O.option(
        True,
        "diffguard cfg: guide only where Grad-CAM > --cam-cut (off: everywhere).",
        flags=("--cam/--no-cam",),
    )
    cam_cut: float = O.option(0.3, "diffguard Grad-CAM mask threshold.", minimum=0, below=1)
    cam_resize: str = O.option(
        "image",
        "diffguard cfg: cut the CAM at the image size, then nearest to the model's grid "
        "(image, official) or nearest to the grid, then cut (grid).",
        choices=("image", "grid"),
    )
    oracle: bool = O.option(False, "diffguard analysis: true ID labels, random OOD labels.")
    combine_with: str | None = O.option(
        None, "diffguard: post-hoc scores artifact to combine with.", role="input"
    )
    trust_below: float = O.option(
        0.025,
        "diffguard combination: trust the baseline below this ID-val quantile (under 0.05, "
        "so the 95 %-TPR threshold lies where DiffGuard decides).",
        minimum=0,
        maximum=1,
    )
    trust_above: float = O.option(
        0.975,
        "diffguard combination: trust the baseline above this ID-val quantile.",
        minimum=0,
        maximum=1,
    )
    limit: int | None = O.option(
        None, "Score only the first N samples of each test set.", minimum=1
    )
    label: str | None = O.option(
        None, "Name of these runs in eval tables (default: the detector's loss) before +METHOD."
    )
    diffusion_batch: int = O.option(16, "diffguard: samples per diffusion batch.", minimum=1)
    dtype: str | None = O.option(
        None,
        "diffguard model precision: auto (default: fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.",
    )
    seed: int = O.option(
        0, "diffguard: seed of cut-outs and oracle labels.", minimum=0, maximum=O.SEED_MAX
    )
    save_syntheses: int = O.option(
        0, "diffguard: preview of N ID and N OOD syntheses.", role="run", minimum=0
    )
    shard_size: int = O.option(
        256, "diffguard: samples per resumable shard.", role="run", minimum=1
    )
    batch_size: int = O.option(256, "Images per forward.", role="run", minimum=1)
    device: str = O.device_option()
    num_workers: str = O.num_workers_option()
    data_root: str | None = O.data_root_option()
    resize: bool = O.option(False, "Rescale benchmark images to the detector.")
    cache: bool = O.option(
        True,
        "Reuse cached features and DiffGuard inversions.",
        flags=("--cache/--no-cache",),
        role="run",
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def check(self) -> None:
        resolve_workers(self.num_workers, cuda=False)  # a count or auto, before any work
        if self.label is not None and not self.label.strip():
            raise OodkitError("--label must not be empty")
