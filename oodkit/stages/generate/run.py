"""``oodkit generate``: outliers (or ID reconstructions) from ID images with a diffusion model.

Each ID image is encoded, noised to its own start step and denoised with DDIM under the
method's guidance (``oodkit.stages.generate.methods``, docs/methods.md §3, §5) by the
re-synthesis engine (``oodkit.diffusion.resynthesis``); all condition rows of a batch go
through one UNet forward per step.

Work is planned per sample from (seed, key), cut into canonical batches grouped by start
step (so every batch runs only the steps it needs, and a sample is always computed with the
same batch companions), and written in shards: an interrupted run, or one split over
``accelerate launch`` processes, ends with the identical artifact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodkit.artifacts import Artifact, ShardedWriter, check_output
from oodkit.data.images import to_pil, to_tensor
from oodkit.devices import resolve_device
from oodkit.diffusion import guidance as G
from oodkit.diffusion.resynthesis import resynthesize
from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
from oodkit.errors import OodkitError
from oodkit.methods import GENERATION
from oodkit.options import recipe, with_overrides
from oodkit.schemas import OUTLIER_COLUMNS, outlier_features, read_pseudo_labels
from oodkit.seeding import sample_generators
from oodkit.similarity import ssim_psnr
from oodkit.stages.generate.methods import GenerationMethod, method_class
from oodkit.stages.generate.options import GenerateOptions
from oodkit.stages.generate.plans import Plan, check_leakage, plan_samples, read_class_list


def _start_steps(
    o: GenerateOptions, method: type[GenerationMethod], train_timesteps: int
) -> int | None:
    """The fixed start in grid steps, checked against the schedule (None = uniform per sample).

    For wrong-class (SD) outliers ``--t-start`` is in training timesteps (the paper's S).
    """
    if o.t_start is None:
        return None
    if method.t_start_in_timesteps:
        stride = train_timesteps // o.steps
        if not 1 <= o.t_start < train_timesteps or o.t_start % stride:
            raise OodkitError(
                f"--t-start {o.t_start} must be a multiple of {stride} (= {train_timesteps} / "
                f"{o.steps} steps) in 1..{train_timesteps - 1}"
            )
        return o.t_start // stride
    if not 1 <= o.t_start <= o.steps:
        raise OodkitError(f"--t-start {o.t_start} is outside 1..{o.steps} (the schedule)")
    return o.t_start


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


class BatchGenerator:
    """Runs one canonical batch through the re-synthesis engine; optional SONA mask capture."""

    def __init__(self, denoiser, opts: GenerateOptions, capture: set[str] | None = None) -> None:
        self.denoiser, self.opts = denoiser, opts
        self.method = method_class(opts.method)(opts)
        self.sampler = DDIMSampler(ddim_scheduler(denoiser.scheduler_config), opts.steps)
        self.capture = set(capture or ()) if opts.method == "sona" else set()  # SONA masks
        self.masks: dict[str, dict[str, torch.Tensor]] = {}

    def __call__(self, plans: Sequence[Plan], images: torch.Tensor) -> torch.Tensor:
        keys = [p.key for p in plans]
        return resynthesize(
            self.denoiser,
            self.sampler,
            images,
            [p.start for p in plans],
            sample_generators(self.opts.seed, keys),
            self.method.conditions(plans),
            self._guide_maker(keys),
        )

    def _guide_maker(self, keys: list[str]):
        """The method's guidance; batches holding captured samples also record their masks."""
        if not self.capture.intersection(keys):
            return self.method.make_guide

        def make_guide(x0):
            guide = self.method.make_guide(x0)

            def capturing(x, t, e, k, rows):
                self._capture(keys, rows, k, e)
                return guide(x, t, e, k, rows)

            return capturing

        return make_guide

    def _capture(
        self, keys: list[str], rows: torch.Tensor, k: torch.Tensor, e: torch.Tensor
    ) -> None:
        """M_S / M_N maps of each captured sample at its first step (channel means)."""
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


@dataclass
class _Sources:
    """The ID images with the labels and condition vocabulary the plans draw from."""

    train: Any
    labels: np.ndarray
    num_classes: int
    prompts: tuple[list[str], list[str]] | None
    leaked: list[str]
    inputs: list[dict[str, Any]]


def _class_conditions(o, idd, labels: np.ndarray, denoiser) -> int:
    """Checks for a class-conditional model; returns its number of classes."""
    if o.method != "reconstruct" and len(set(labels.tolist())) < 2:
        raise OodkitError("the ID set has one class: no other class (c_r / c_OOD) can be drawn")
    if int(labels.max()) >= denoiser.num_classes:
        raise OodkitError(
            f"ID label {int(labels.max())} is beyond the model's {denoiser.num_classes} classes"
        )
    if denoiser.channels != idd.channels:
        raise OodkitError(
            f"the model makes {denoiser.channels}-channel images; the ID set has {idd.channels}"
        )
    return denoiser.num_classes


def _prompt_conditions(o, id_ref, idd, method) -> tuple[tuple[list[str], list[str]], list[str]]:
    """(ID class names, OOD class names) for a text-conditional model, and leaked names."""
    from oodkit.data.classes import imagenet800_classes

    if "class-conditional" in GENERATION.get(o.method).needs or o.labels is not None:
        raise OodkitError(
            "a text-conditional model takes prompts, not class ids: "
            "--method sd and --labels need a class-conditional model"
        )
    if not idd.class_names:
        raise OodkitError(
            f"{id_ref} has no class names for prompts: use a benchmark with class names"
        )
    ood_names = (
        read_class_list(o.ood_classes)
        if o.ood_classes
        else (imagenet800_classes() if idd.benchmark == "imagenet200" else None)
    )
    if ood_names is None and method.uses_ood:
        raise OodkitError("pass --ood-classes FILE (OOD class names for the prompts)")
    leaked = check_leakage(ood_names or [], idd.class_names, o.allow_leakage)
    return (idd.class_names, ood_names or idd.class_names), leaked


def _sources(id_ref: str, o: GenerateOptions, idd, denoiser, method) -> _Sources:
    from oodkit.data.sources import dataset_input

    inputs: list[dict[str, Any]] = [dataset_input(id_ref, idd.train)]
    labels = np.asarray(idd.train["label"], dtype=np.int64)
    if o.labels is not None:
        pseudo = read_pseudo_labels(o.labels)
        labels = pseudo.labels_for(idd.train["sample_id"])
        inputs.append(pseudo.artifact.as_input())
    if (labels < 0).any():
        raise OodkitError(f"{id_ref}: some ID samples have no label; pass --labels")
    prompts, leaked = None, []
    if denoiser.kind == "class":
        num_classes = _class_conditions(o, idd, labels, denoiser)
    else:
        prompts, leaked = _prompt_conditions(o, id_ref, idd, method)
        num_classes = len(idd.class_names)
    return _Sources(idd.train, labels, num_classes, prompts, leaked, inputs)


def _writer(out, plans, params, inputs, o: GenerateOptions, state) -> ShardedWriter:
    """The shard writer; the main process prepares ``<out>.partial`` before the others open it."""

    def open_writer(overwrite: bool) -> ShardedWriter:
        keys = [p.key for p in plans]
        return ShardedWriter(
            out, kind="outliers", keys=keys, params=params, inputs=inputs, overwrite=overwrite
        )

    writer = open_writer(o.overwrite) if state.is_main_process else None
    state.wait_for_everyone()
    return writer or open_writer(False)


def _my_shards(plans, o: GenerateOptions, writer, state, shard_size: int) -> list[list[list[int]]]:
    """This process's shards (every n-th) that still hold unfinished samples."""
    batches = canonical_batches(plans, o.batch_size)
    per_shard = max(1, math.ceil(shard_size / o.batch_size))
    shards = [batches[i : i + per_shard] for i in range(0, len(batches), per_shard)]
    pending = set(writer.pending())
    return [
        s
        for j, s in enumerate(shards)
        if j % state.num_processes == state.process_index
        and any(plans[i].key in pending for b in s for i in b)
    ]


def generate(
    id_ref: str,
    model: str,
    out: str | Path,
    options: GenerateOptions | None = None,
    *,
    shard_size: int = 256,
    **overrides: Any,
) -> Artifact | None:
    """Generate an outliers artifact; returns it (``None`` on non-main processes).

    Keyword arguments override fields of ``options``; ``shard_size`` (samples per resumable
    shard) does not change the result.
    """
    import datasets
    from accelerate import PartialState

    from oodkit.data.sources import resolve_id
    from oodkit.diffusion.denoisers import load_denoiser

    o = with_overrides(GenerateOptions, options, overrides).resolved()
    method = method_class(o.method)
    state = PartialState(cpu=o.device == "cpu")
    device = resolve_device(o.device)
    dev = state.device if device.startswith("cuda") else torch.device("cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    idd = resolve_id(id_ref, data_root=o.data_root)
    denoiser = load_denoiser(model, dev, dtype)
    fixed_start = _start_steps(
        o, method, int(denoiser.scheduler_config.get("num_train_timesteps", 1000))
    )
    src = _sources(id_ref, o, idd, denoiser, method)
    n_src = len(src.train) if o.limit is None else min(o.limit, len(src.train))
    source_ids = src.train["sample_id"]
    keys = [(f"{source_ids[r]}#{k}", r) for r in range(n_src) for k in range(o.per_image)]
    plans = plan_samples(
        keys,
        source_ids,
        src.labels,
        uses_ood=method.uses_ood,
        seed=o.seed,
        steps=o.steps,
        t_start=fixed_start,
        num_classes=src.num_classes,
        prompts=src.prompts,
    )
    params = {
        **recipe(o),
        "id": id_ref,
        "model": str(model),
        "labels": o.labels,
        "ood_classes": o.ood_classes,
        "leaked_classes": src.leaked,
        "scheduler": "DDIMScheduler",
        "eta": 0.0,
        "guidance_convention": method.convention,
    }
    existing = check_output(out, "outliers", params, src.inputs, o.overwrite)
    if existing is not None:
        return existing
    writer = _writer(out, plans, params, src.inputs, o, state)
    mine = _my_shards(plans, o, writer, state, shard_size)
    capture = {p.key for p in plans[: o.save_masks]} if o.method == "sona" else set()
    runner = BatchGenerator(denoiser, o, capture)
    started, made = time.perf_counter(), 0
    from rich.progress import Progress

    with Progress(disable=o.quiet or not state.is_main_process) as progress:
        task = progress.add_task(f"generate {o.method}", total=sum(len(b) for s in mine for b in s))
        for shard in mine:
            rows = _run_shard(runner, shard, plans, src.train, idd.channels, denoiser.image_size, o)
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
    return _finalize(writer, runner.masks, src.train, o, len(plans), made, seconds)


def _finalize(writer, masks, train, o: GenerateOptions, count, made, seconds) -> Artifact:
    """Merge the shards; preview grid, SONA masks and quality figures into the artifact."""
    import datasets

    from oodkit.stages.generate.report import preview_grid, quality_summary, save_mask_figure

    def write_files(folder: Path) -> None:
        preview_grid(folder / "preview.png", datasets.load_from_disk(str(folder / "data")), train)
        if masks:
            save_mask_figure(folder / "masks.png", masks)

    return writer.finalize(
        summary={
            "count": count,
            "seconds_this_run": round(seconds, 2),
            "images_per_s_this_run": round(made / seconds, 3) if made and seconds else None,
        },
        summarize=lambda ds: quality_summary(ds, o.steps),
        write_files=write_files,
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
    rows: dict[str, list] = {k: [] for k in OUTLIER_COLUMNS}
    for batch in shard:
        ps = [plans[i] for i in batch]
        srcs = [train[p.row]["image"] for p in ps]
        sizes = [(o.size, o.size) if o.size else im.size for im in srcs]
        x = runner(ps, to_tensor(srcs, model_size, channels))
        images = to_pil(x.cpu(), sizes)
        out_t = to_tensor(images, sizes[0][0], channels) if len(set(sizes)) == 1 else None
        if out_t is not None:
            ssim, psnr = ssim_psnr(out_t, to_tensor(srcs, sizes[0][0], channels))
        else:
            ssim, psnr = [float("nan")] * len(ps), [float("nan")] * len(ps)
        for p, im, s, q in zip(ps, images, ssim, psnr, strict=True):
            rows["image"].append(im)
            rows["sample_id"].append(p.key)
            rows["source_id"].append(p.source_id)
            rows["source_label"].append(p.source_label)
            rows["condition"].append(runner.method.condition_label(p))
            rows["t_start"].append(p.start)
            rows["method"].append(o.method)
            rows["seed"].append(o.seed)
            rows["ssim"].append(s)
            rows["psnr"].append(q)
    return rows
