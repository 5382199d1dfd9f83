"""``oodkit generate``: outliers (or ID reconstructions) from ID images with a diffusion model.

Each ID image is encoded, noised to its own start step and denoised with DDIM under the
method's guidance (REFERENCE §3, §5):

- ``sona``: ε̃ = ε(z) + s·Δ(ψ_ID, ψ_OOD) — three condition rows (∅, ID, OOD) per forward;
- ``global``: ε̃ = ε(z) + s·ψ_OOD — the paper's unmasked ablation;
- ``sd``: ε̃ = (1 + w)·ε(x, c_r) − w·ε(x), c_r a random other class (class-conditional only);
- ``reconstruct``: ε̃ = ε(z) + s·ψ_ID — ID-preserving reconstructions.

Work is planned per sample from (seed, key), cut into canonical batches grouped by start
step (so every batch runs only the steps it needs, and a sample is always computed with the
same batch companions), and written in shards: an interrupted run, or one split over
``accelerate launch`` processes, ends with the identical artifact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodkit.artifacts import Artifact, ShardedWriter, check_output
from oodkit.devices import resolve_device
from oodkit.errors import OodkitError
from oodkit.generate.conditions import Plan, check_leakage, plan_samples, read_class_list

METHODS = ("sona", "sd", "global", "reconstruct")
DEFAULT_SCALE = {"sona": 10.0, "global": 10.0, "reconstruct": 1.0}


@dataclass
class GenerateOptions:
    """Everything that shapes the outliers; recorded in the manifest."""

    method: str = "sona"
    steps: int | None = None  # DDIM grid; default 50 (sona, global, reconstruct), 100 (sd)
    t_start: int | None = None  # sona/global/reconstruct: grid steps; sd: training timesteps
    lam: float = 0.1
    scale: float | None = None
    w: float = 2.0
    momentum_scale: float = 0.0
    momentum_beta: float = 0.6
    warmup: int = 0
    per_image: int = 1
    limit: int | None = None
    size: int | None = None
    seed: int = 0
    batch_size: int = 16
    allow_leakage: bool = False

    def resolved(self) -> GenerateOptions:
        if self.method not in METHODS:
            raise OodkitError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        out = GenerateOptions(**asdict(self))
        out.steps = self.steps or (100 if self.method == "sd" else 50)
        if self.method == "sd" and self.t_start is None:
            out.t_start = 100
        if out.scale is None:
            out.scale = DEFAULT_SCALE.get(self.method)
        if out.per_image < 1 or out.batch_size < 1 or out.steps < 1:
            raise OodkitError("--per-image, --batch-size and --steps must be positive")
        if not 0 < out.lam <= 1:
            raise OodkitError("--lam must lie in (0, 1]")
        return out


def _start_steps(opts: GenerateOptions, train_timesteps: int) -> int | None:
    """The fixed start in grid steps, checked against the schedule (None = uniform per sample)."""
    if opts.t_start is None:
        return None
    if opts.method == "sd":
        stride = train_timesteps // opts.steps
        if not 1 <= opts.t_start < train_timesteps or opts.t_start % stride:
            raise OodkitError(
                f"--t-start {opts.t_start} must be a multiple of {stride} (= {train_timesteps} / "
                f"{opts.steps} steps) in 1..{train_timesteps - 1}"
            )
        return opts.t_start // stride
    if not 1 <= opts.t_start <= opts.steps:
        raise OodkitError(f"--t-start {opts.t_start} is outside 1..{opts.steps} (the schedule)")
    return opts.t_start


def canonical_batches(plans: Sequence[Plan], batch_size: int) -> list[list[int]]:
    """Plan indices grouped by start step, then chunked; independent of what is already done."""
    by_start: dict[int, list[int]] = {}
    for i, p in enumerate(plans):
        by_start.setdefault(p.start, []).append(i)
    batches = []
    for start in sorted(by_start):
        idx = by_start[start]
        batches += [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    return batches


def _to_tensor(images: Sequence, size: int, channels: int) -> torch.Tensor:
    from torchvision.transforms.functional import pil_to_tensor, resize

    mode = "L" if channels == 1 else "RGB"
    out = []
    for im in images:
        im = im.convert(mode) if im.mode != mode else im
        t = pil_to_tensor(im).float() / 255
        if t.shape[-2:] != (size, size):
            t = resize(t, [size, size], antialias=True)
        out.append(t)
    return torch.stack(out)


def _to_pil(x: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list:
    from PIL import Image
    from torchvision.transforms.functional import resize

    out = []
    for img, (w, h) in zip(x, sizes, strict=True):
        if img.shape[-2:] != (h, w):
            img = resize(img, [h, w], antialias=True).clamp(0, 1)
        arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        out.append(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
    return out


class BatchGenerator:
    """Runs one canonical batch: encode, noise, guided DDIM, decode; optional mask capture."""

    def __init__(self, denoiser, opts: GenerateOptions, capture: set[str] | None = None) -> None:
        from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler

        self.denoiser, self.opts = denoiser, opts
        self.sampler = DDIMSampler(ddim_scheduler(denoiser.scheduler_config), opts.steps)
        self.capture = capture or set()
        self.masks: dict[str, dict[str, torch.Tensor]] = {}

    def rows(self, plans: Sequence[Plan]) -> list[list[Any]]:
        m = self.opts.method
        uncond = [None] * len(plans)
        if m == "sona":
            return [uncond, [p.id_cond for p in plans], [p.ood_cond for p in plans]]
        if m == "reconstruct":
            return [uncond, [p.id_cond for p in plans]]
        return [uncond, [p.ood_cond for p in plans]]  # sd: c_r; global: c_OOD

    @torch.no_grad()
    def __call__(self, plans: Sequence[Plan], images: torch.Tensor) -> torch.Tensor:
        from oodkit.diffusion import guidance as G
        from oodkit.diffusion.sampler import per_sample_randn, sample_generators

        d, o = self.denoiser, self.opts
        x0 = d.encode(images)
        gens = sample_generators(o.seed, [p.key for p in plans])
        noise = per_sample_randn(x0.shape[1:], gens, x0.device, x0.dtype)
        starts = [p.start for p in plans]
        xt = self.sampler.noise(x0, starts, noise)
        cond = d.condition(self.rows(plans))
        sona = G.SonaGuidance(o.scale, o.lam, o.momentum_scale, o.momentum_beta, o.warmup)
        sona.reset(x0)
        keys = [p.key for p in plans]
        capture = bool(self.capture.intersection(keys))  # only these batches read masks back

        def eps_fn(x, t, rows, k):
            e = d.eps(x, t, cond[:, rows])
            if o.method == "sona":
                if capture:
                    self._capture(keys, rows, k, e)
                return sona(e[0], e[1], e[2], k, rows)
            if o.method == "sd":
                return G.sd_eps(e[1], e[0], o.w)
            if o.method == "global":
                return G.global_eps(e[1], e[0], o.scale)
            return G.cfg_eps(e[1], e[0], o.scale)

        return d.decode(self.sampler.denoise(xt, starts, eps_fn))

    def _capture(
        self, keys: list[str], rows: torch.Tensor, k: torch.Tensor, e: torch.Tensor
    ) -> None:
        from oodkit.diffusion import guidance as G

        for j, r in enumerate(rows.tolist()):
            key = keys[r]
            if key in self.capture and key not in self.masks and int(k[j]) == 0:
                psi_id, psi_ood = (
                    (e[1, j : j + 1] - e[0, j : j + 1]),
                    (e[2, j : j + 1] - e[0, j : j + 1]),
                )
                ms, mn = G.sona_masks(psi_id, self.opts.lam)
                self.masks[key] = {
                    "M_S(ID)": ms[0].mean(0),
                    "M_N(ID)": mn[0].mean(0),
                    "M_S(OOD)": G.extreme_mask(psi_ood, self.opts.lam, True)[0].mean(0),
                }


def _quality(outlier: torch.Tensor, source: torch.Tensor) -> tuple[list[float], list[float]]:
    import piq

    ssim = piq.ssim(
        outlier,
        source,
        data_range=1.0,
        reduction="none",
        kernel_size=min(11, outlier.shape[-1] // 2 * 2 - 1),
    )
    psnr = piq.psnr(outlier, source, data_range=1.0, reduction="none")
    return ssim.tolist(), psnr.clamp(max=100).tolist()


def generate(
    id_ref: str,
    model: str,
    out: str | Path,
    options: GenerateOptions | None = None,
    *,
    labels: str | None = None,
    ood_classes: str | None = None,
    save_masks: int = 0,
    data_root: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
    shard_size: int = 256,
) -> Artifact | None:
    """Generate an outliers artifact; returns it (``None`` on non-main processes).

    ``shard_size`` (samples per resumable shard) does not change the result.
    """
    from accelerate import PartialState

    from oodkit.artifacts import load_artifact
    from oodkit.data.classes import imagenet800_classes
    from oodkit.data.sources import dataset_input, resolve_id
    from oodkit.diffusion.denoisers import load_denoiser

    o = (options or GenerateOptions()).resolved()
    state = PartialState(cpu=device == "cpu")
    device = resolve_device(device)
    dev = state.device if device.startswith("cuda") else torch.device("cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    idd = resolve_id(id_ref, data_root=data_root)
    train = idd.train
    denoiser = load_denoiser(model, dev, dtype)
    train_t = int(denoiser.scheduler_config.get("num_train_timesteps", 1000))
    fixed_start = _start_steps(o, train_t)

    inputs: list[dict[str, Any]] = [dataset_input(id_ref, train)]
    source_labels = np.asarray(train["label"], dtype=np.int64)
    if labels is not None:
        art = load_artifact(labels, kind="pseudo-labels")
        table = art.dataset()
        cluster = dict(zip(table["sample_id"], table["cluster"], strict=True))
        missing = [s for s in train["sample_id"] if s not in cluster]
        if missing:
            raise OodkitError(f"{labels} has no cluster for ID sample {missing[0]!r}")
        source_labels = np.array([cluster[s] for s in train["sample_id"]], dtype=np.int64)
        inputs.append(art.as_input())
    if (source_labels < 0).any():
        raise OodkitError(f"{id_ref}: some ID samples have no label; pass --labels")

    prompts = None
    leaked: list[str] = []
    if denoiser.kind == "class":
        if o.method != "reconstruct" and len(set(source_labels.tolist())) < 2:
            raise OodkitError("the ID set has one class: no other class (c_r / c_OOD) can be drawn")
        if int(source_labels.max()) >= denoiser.num_classes:
            raise OodkitError(
                f"ID label {int(source_labels.max())} is beyond the model's "
                f"{denoiser.num_classes} classes"
            )
        if denoiser.channels != idd.channels:
            raise OodkitError(
                f"the model makes {denoiser.channels}-channel images; the ID set has {idd.channels}"
            )
        num_classes = denoiser.num_classes
    else:
        if o.method == "sd" or labels is not None:
            raise OodkitError(
                "a text-conditional model takes prompts, not class ids: "
                "--method sd and --labels need a class-conditional model"
            )
        if not idd.class_names:
            raise OodkitError(
                f"{id_ref} has no class names for prompts: use a benchmark with class names"
            )
        ood_names = (
            read_class_list(ood_classes)
            if ood_classes
            else (imagenet800_classes() if idd.benchmark == "imagenet200" else None)
        )
        if ood_names is None and o.method in ("sona", "global"):
            raise OodkitError("pass --ood-classes FILE (OOD class names for the prompts)")
        leaked = check_leakage(ood_names or [], idd.class_names, o.allow_leakage)
        prompts = (idd.class_names, ood_names or idd.class_names)
        num_classes = len(idd.class_names)

    n_src = len(train) if o.limit is None else min(o.limit, len(train))
    source_ids = train["sample_id"]
    keys = [(f"{source_ids[r]}#{k}", r) for r in range(n_src) for k in range(o.per_image)]
    plans = plan_samples(
        keys,
        source_ids,
        source_labels,
        method=o.method,
        seed=o.seed,
        steps=o.steps,
        t_start=fixed_start,
        num_classes=num_classes,
        prompts=prompts,
    )
    params = {
        **asdict(o),
        "id": id_ref,
        "model": str(model),
        "labels": labels,
        "ood_classes": ood_classes,
        "leaked_classes": leaked,
        "scheduler": "DDIMScheduler",
        "eta": 0.0,
        "guidance_convention": {
            "sona": "eps_u + s*delta",
            "sd": "(1+w)*eps_c - w*eps_u",
            "global": "eps_u + s*psi_ood",
            "reconstruct": "eps_u + s*psi_id",
        }[o.method],
    }
    existing = check_output(out, "outliers", params, inputs, overwrite)
    if existing is not None:
        return existing
    writer = None
    if state.is_main_process:
        writer = ShardedWriter(
            out,
            kind="outliers",
            keys=[p.key for p in plans],
            params=params,
            inputs=inputs,
            overwrite=overwrite,
        )
    state.wait_for_everyone()
    if writer is None:
        writer = ShardedWriter(
            out, kind="outliers", keys=[p.key for p in plans], params=params, inputs=inputs
        )

    batches = canonical_batches(plans, o.batch_size)
    per_shard = max(1, math.ceil(shard_size / o.batch_size))
    shards = [batches[i : i + per_shard] for i in range(0, len(batches), per_shard)]
    pending = set(writer.pending())
    mine = [
        s
        for j, s in enumerate(shards)
        if j % state.num_processes == state.process_index
        and any(plans[i].key in pending for b in s for i in b)
    ]
    capture = {p.key for p in plans[:save_masks]} if o.method == "sona" else set()
    runner = BatchGenerator(denoiser, o, capture)
    started = time.perf_counter()
    made = 0
    import datasets
    from rich.progress import Progress

    with Progress(disable=quiet or not state.is_main_process) as progress:
        task = progress.add_task(f"generate {o.method}", total=sum(len(b) for s in mine for b in s))
        for shard in mine:
            rows = _run_shard(runner, shard, plans, train, idd.channels, denoiser.image_size, o)
            writer.write_shard(
                [plans[i].key for b in shard for i in b],
                datasets.Dataset.from_dict(rows, features=outlier_features()),
            )
            made += len(rows["sample_id"])
            progress.advance(task, len(rows["sample_id"]))
    seconds = time.perf_counter() - started
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    from oodkit.generate.report import preview_grid, quality_summary, save_mask_figure

    masks = runner.masks

    def write_files(folder: Path) -> None:
        preview_grid(folder / "preview.png", datasets.load_from_disk(str(folder / "data")), train)
        if masks:
            save_mask_figure(folder / "masks.png", masks)

    return writer.finalize(
        summary={
            "count": len(plans),
            "seconds_this_run": round(seconds, 2),
            "images_per_s_this_run": round(made / seconds, 3) if made and seconds else None,
        },
        summarize=lambda ds: quality_summary(ds, o.steps),
        write_files=write_files,
    )


def outlier_features():
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "sample_id": datasets.Value("string"),
            "source_id": datasets.Value("string"),
            "source_label": datasets.Value("int64"),
            "condition": datasets.Value("string"),
            "t_start": datasets.Value("int64"),
            "method": datasets.Value("string"),
            "seed": datasets.Value("int64"),
            "ssim": datasets.Value("float64"),
            "psnr": datasets.Value("float64"),
        }
    )


def _run_shard(
    runner: BatchGenerator,
    shard: list[list[int]],
    plans: Sequence[Plan],
    train,
    channels: int,
    model_size: int,
    o: GenerateOptions,
) -> dict[str, list]:
    rows: dict[str, list] = {k: [] for k in outlier_features()}
    for batch in shard:
        ps = [plans[i] for i in batch]
        srcs = [train[p.row]["image"] for p in ps]
        sizes = [(o.size, o.size) if o.size else im.size for im in srcs]
        x = runner(ps, _to_tensor(srcs, model_size, channels))
        images = _to_pil(x.cpu(), sizes)
        out_t = _to_tensor(images, sizes[0][0], channels) if len(set(sizes)) == 1 else None
        if out_t is not None:
            ssim, psnr = _quality(out_t, _to_tensor(srcs, sizes[0][0], channels))
        else:
            ssim, psnr = [float("nan")] * len(ps), [float("nan")] * len(ps)
        for p, im, s, q in zip(ps, images, ssim, psnr, strict=True):
            rows["image"].append(im)
            rows["sample_id"].append(p.key)
            rows["source_id"].append(p.source_id)
            rows["source_label"].append(p.source_label)
            rows["condition"].append(str(p.id_cond if o.method == "reconstruct" else p.ood_cond))
            rows["t_start"].append(p.start)
            rows["method"].append(o.method)
            rows["seed"].append(o.seed)
            rows["ssim"].append(s)
            rows["psnr"].append(q)
    return rows
