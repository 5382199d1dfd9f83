"""``oodkit generate``: outliers (or ID reconstructions) from ID images with a diffusion model.

Each ID image is fitted to the model's square (``--resize``), encoded, noised to its own
start step and denoised with DDIM under the method's guidance
(``oodkit.stages.generate.methods``, docs/methods.md §3, §5) by the re-synthesis engine
(``oodkit.diffusion.resynthesis``); all condition rows of a batch go through one UNet forward
per step.

Work is planned per sample from (seed, key), cut into canonical batches grouped by start
step (so every batch runs only the steps it needs, and a sample is always computed with the
same batch companions), and cut into shards that the ranks claim through the sharded-run
engine (``oodkit.sharding``): an interrupted run, or one split over ``accelerate launch`` /
``torchrun`` processes, ends with the identical artifact.

The accelerator never waits on the host: sources are decoded and fitted ahead by loader
workers; each finished batch is quality-scored where it was made, and only its 8-bit images
go to the host, where a thread pool encodes and writes them while the next batches run.

Steps, in order: check the options, the model's configs and the data (no weights loaded, no
file written); fingerprint the inputs (a complete artifact ends here); load the model; open
the shards; plan the samples (drawn once per run and kept with the shards, so a resume loads
them); generate; finish (the shards become the artifact).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodkit.artifacts import (
    DATA_DIR,
    Artifact,
    check_output,
    column,
    load_table,
    partial_of,
    read_memo,
)
from oodkit.data.images import Box, encode_image, fit_square, unfit
from oodkit.devices import resolve_device, resolve_dtype
from oodkit.diffusion import guidance as G
from oodkit.diffusion.denoisers import ModelSpec
from oodkit.diffusion.resynthesis import resynthesize
from oodkit.diffusion.sampler import DDIMSampler, check_steps, ddim_scheduler
from oodkit.errors import OodkitError
from oodkit.locks import writes_output
from oodkit.methods import GENERATION
from oodkit.options import AUTO, recipe, with_overrides
from oodkit.outcome import NOT_MAIN, Pending
from oodkit.schemas import OUTLIER_COLUMNS, outlier_features, read_pseudo_labels
from oodkit.seeding import sample_generators
from oodkit.sharding import ShardWork, cut_shards, gather_stats, open_sharded, run_shards
from oodkit.similarity import ssim_psnr
from oodkit.stages.generate.autotune import (
    SCALES,
    probe_rows,
    shift_of,
    smallest_reaching,
    timestep_candidates,
)
from oodkit.stages.generate.judge import (
    MODEL,
    check_judge,
    diagnostics_figure,
    judge_predictions,
    judged_summary,
    model_predictions,
)
from oodkit.stages.generate.methods import GenerationMethod, method_class
from oodkit.stages.generate.options import GenerateOptions
from oodkit.stages.generate.plans import Plan, check_leakage, plan_samples, read_class_list
from oodkit.training import agree_on_main, from_main


def _start_steps(o: GenerateOptions, method: type[GenerationMethod], scheduler: Any) -> int | None:
    """The fixed start in DDIM steps, checked against the schedule (None = uniform per sample;
    also for a timestep start with no ``scheduler`` config yet: a Hub model, checked once loaded).

    For wrong-class (SD) outliers ``--t-start`` is the training timestep S the source is
    noised to (the paper's S): it must lie on the DDIM grid, and the run then denoises from
    S through every later grid step down to 0 (S / stride + 1 steps on a grid with stride
    spacing that ends at 0, docs/methods.md §5).
    """
    if o.mode == "vae":
        return 0
    if o.t_start is None or o.t_start == AUTO:  # auto: chosen on the probe, after loading
        return None
    if method.t_start_in_timesteps:
        if scheduler is None:
            return None
        sampler = DDIMSampler(ddim_scheduler(scheduler), o.steps)
        if o.t_start < 1:
            raise OodkitError(f"--t-start {o.t_start} must be a training timestep ≥ 1")
        try:
            return sampler.steps_from_timestep(o.t_start)
        except ValueError as exc:
            raise OodkitError(f"--t-start {o.t_start}: {exc}") from None
    if not 1 <= o.t_start <= o.steps:
        raise OodkitError(f"--t-start {o.t_start} is outside 1..{o.steps} (the schedule)")
    return o.t_start


def canonical_batches(plans: Sequence[Plan], batch_size: int) -> list[list[int]]:
    """Plan indices ordered by start step (stably), then cut into full batches.

    Batches are full, and their starts nearly equal, so each runs about as many steps as its
    samples need (the sampler runs a row only from its own start). The cut does not depend on
    what is already done or on the number of processes.
    """
    order = sorted(range(len(plans)), key=lambda i: plans[i].start)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class BatchGenerator:
    """Runs one canonical batch through the re-synthesis engine (or the VAE, ``--mode vae``);
    optional SONA mask capture."""

    def __init__(self, denoiser, opts: GenerateOptions, capture: set[str] | None = None) -> None:
        self.denoiser, self.opts = denoiser, opts
        self.method = method_class(opts.method)(opts)
        self.sampler = DDIMSampler(ddim_scheduler(denoiser.scheduler_config), opts.steps)
        self.capture = set(capture or ()) if opts.method == "sona" else set()  # SONA masks
        self.masks: dict[str, dict[str, torch.Tensor]] = {}
        self.denoise_s = 0.0  # time spent in the denoising loop

    def __call__(self, plans: Sequence[Plan], images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (the model's square) → generated images in [0, 1], float32."""
        if self.opts.mode == "vae":
            return self.denoiser.round_trip(images)
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

    def start_timestep(self, plan: Plan) -> int:
        """The training timestep a sample was noised to (−1: none, VAE round trips)."""
        return self.sampler.timestep_of(plan.start) if plan.start else -1

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
                psi_id = e[1, j : j + 1] - e[0, j : j + 1]
                psi_ood = self.method.ood_eps(e)[j : j + 1] - e[0, j : j + 1]
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


def _class_conditions(o, idd, labels: np.ndarray, spec: ModelSpec) -> int:
    """Checks for a class-conditional model; returns its number of classes."""
    if o.method != "reconstruct" and len(set(labels.tolist())) < 2:
        raise OodkitError("the ID set has one class: no other class (c_r / c_OOD) can be drawn")
    if int(labels.max()) >= spec.num_classes:
        raise OodkitError(
            f"ID label {int(labels.max())} is beyond the model's {spec.num_classes} classes"
        )
    if spec.channels != idd.channels:
        raise OodkitError(
            f"the model makes {spec.channels}-channel images; the ID set has {idd.channels}"
        )
    return spec.num_classes


def _prompt_conditions(o, id_ref, idd, method) -> tuple[tuple[list[str], list[str]], list[str]]:
    """(ID class names, OOD class names) for a text-conditional model, and leaked names."""
    from oodkit.data.classes import imagenet800_classes

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


def _sources(id_ref: str, o: GenerateOptions, idd, spec: ModelSpec, method) -> _Sources:
    from oodkit.data.sources import dataset_input

    inputs: list[dict[str, Any]] = [dataset_input(id_ref, idd.train)]
    labels = np.asarray(column(idd.train, "label"), dtype=np.int64)
    if o.labels is not None:
        pseudo = read_pseudo_labels(o.labels)
        labels = pseudo.labels_for(column(idd.train, "sample_id"))
        inputs.append(pseudo.artifact.as_input())
    if (labels < 0).any():
        raise OodkitError(f"{id_ref}: some ID samples have no label; pass --labels")
    prompts, leaked = None, []
    if spec.kind == "class":
        num_classes = _class_conditions(o, idd, labels, spec)
    else:
        prompts, leaked = _prompt_conditions(o, id_ref, idd, method)
        num_classes = len(idd.class_names)
    return _Sources(idd.train, labels, num_classes, prompts, leaked, inputs)


def _check_model(o: GenerateOptions, spec: ModelSpec) -> None:
    """Method, mode and steps against the kind of model."""
    check_steps(o.steps, spec.scheduler_config)
    if spec.kind == "uncond":
        raise OodkitError(
            "an unconditional model takes no class or prompt: generate needs a class- or "
            "text-conditional model"
        )
    class_only = "class-conditional" in GENERATION.get(o.method).needs or o.labels is not None
    if spec.kind == "text" and class_only:
        raise OodkitError(
            "a text-conditional model takes prompts, not class ids: "
            "--method sd and --labels need a class-conditional model"
        )
    if o.judge == MODEL and spec.kind != "class":
        raise OodkitError("--judge model needs a class-conditional model; pass a detector")
    if o.mode == "vae" and spec.layout not in ("sd", "dit", "ldm"):
        raise OodkitError(
            "--mode vae needs a latent model with an autoencoder (Stable Diffusion, DiT, LDM)"
        )


def _load_sources(train, rows: list[int], size: int, channels: int, policy: str):
    """A batch's sources fitted to the model's square, with content boxes (loader workers)."""
    return fit_square([train[r]["image"] for r in rows], size, channels, policy)


def _quality_on_device(
    generated: torch.Tensor, sources: torch.Tensor, boxes: Sequence[Box], out_size: int
) -> tuple[list[torch.Tensor], list[float], list[float]]:
    """Outputs at the output size as 8-bit CPU tensors, and SSIM / PSNR to the source as
    fitted the same way — computed where the images are (per sample, grouped by shape), so
    only 8-bit images cross to the host."""
    outs = [(t * 255).round() for t in unfit(generated.float(), boxes, out_size)]
    refs = unfit(sources.to(generated.device, torch.float32), boxes, out_size)
    ssim, psnr = [0.0] * len(outs), [0.0] * len(outs)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for j, t in enumerate(outs):
        by_shape.setdefault(tuple(t.shape), []).append(j)
    for idx in by_shape.values():
        s, q = ssim_psnr(
            torch.stack([outs[j] / 255 for j in idx]), torch.stack([refs[j] for j in idx])
        )
        for j, a, b in zip(idx, s, q, strict=True):
            ssim[j], psnr[j] = a, b
    return [t.to(torch.uint8).cpu() for t in outs], ssim, psnr


def _rows(runner: BatchGenerator, ps: Sequence[Plan], result, o: GenerateOptions) -> dict:
    """A finished batch as table rows, images encoded in ``--image-format`` (host pool)."""
    images, ssim, psnr = result
    rows: dict[str, list] = {k: [] for k in OUTLIER_COLUMNS}
    for p, im, s, q in zip(ps, images, ssim, psnr, strict=True):
        rows["image"].append(encode_image(im, o.image_format, o.image_quality))
        rows["sample_id"].append(p.key)
        rows["source_id"].append(p.source_id)
        rows["source_label"].append(p.source_label)
        rows["condition"].append(runner.method.condition_label(p))
        rows["id_condition"].append(str(p.id_cond))
        rows["ood_condition"].append(None if p.ood_cond is None else str(p.ood_cond))
        rows["t_start"].append(p.start)
        rows["start_timestep"].append(runner.start_timestep(p))
        rows["method"].append(o.method)
        rows["seed"].append(o.seed)
        rows["ssim"].append(s)
        rows["psnr"].append(q)
    return rows


def _work(runner: BatchGenerator, plans: Sequence[Plan], train, out_size: int, o, cuda: bool):
    """Generation as sharded-run work: canonical batches by start step, cut into shards."""
    from oodkit.devices import host_workers, resolve_workers

    den = runner.denoiser

    def compute(batch: list[int], inputs) -> Any:
        images, boxes = inputs
        start = time.perf_counter()
        generated = runner([plans[i] for i in batch], images)
        if cuda:
            torch.cuda.synchronize()  # the denoiser's share of the time, for the summary
        runner.denoise_s += time.perf_counter() - start
        return _quality_on_device(generated, images, boxes, out_size)

    return ShardWork(
        shards=cut_shards(canonical_batches(plans, o.batch_size), o.batch_size, o.shard_size),
        key_of=lambda i: plans[i].key,
        load=lambda batch: _load_sources(
            train, [plans[i].row for i in batch], den.image_size, den.channels, o.resize
        ),
        compute=compute,
        host=lambda batch, _inputs, result: _rows(runner, [plans[i] for i in batch], result, o),
        features=outlier_features(),
        num_workers=resolve_workers(o.num_workers, cuda),
        host_workers=host_workers(o.host_workers),
        pin_memory=cuda,
    )


@writes_output
def generate(
    id_ref: str,
    model: str,
    out: str | Path,
    options: GenerateOptions | None = None,
    **overrides: Any,
) -> Artifact | Pending:
    """Generate an outliers artifact; returns it (``None`` on non-main processes).

    Keyword arguments override fields of ``options``.
    """
    from accelerate import PartialState
    from rich.console import Console

    from oodkit.data.sources import resolve_id
    from oodkit.diffusion.denoisers import describe_model, load_denoiser, model_input
    from oodkit.hashing import file_input

    # 1. options, model configs and data: every check that needs no weights
    o = with_overrides(GenerateOptions, options, overrides).resolved()
    method = method_class(o.method)(o)
    device = resolve_device(o.device)
    dtype, dtype_name = resolve_dtype(o.dtype, device)
    spec = describe_model(model)
    _check_model(o, spec)
    _start_steps(o, method, spec.scheduler_config)  # before any weights, where known
    idd = resolve_id(id_ref, data_root=o.data_root)
    src = _sources(id_ref, o, idd, spec, method)
    state = PartialState(cpu=device == "cpu")
    say = Console(quiet=o.quiet or not state.is_main_process).print

    judge = o.judge if o.judge in (None, MODEL) else check_judge(o.judge, src.num_classes)

    # 2. the recipe and fingerprinted inputs (the model's content included)
    model_entry = from_main(state, lambda: model_input(model, spec))  # hashed once
    inputs = [*src.inputs, model_entry]
    if judge is not None and judge != MODEL:
        inputs.append(judge.as_input())
    if o.ood_classes:
        inputs.append(file_input(o.ood_classes, "class-list"))
    params = {
        **recipe(o),
        "dtype": dtype_name,
        "id": id_ref,
        "model": str(model),
        "data_root": o.data_root,
        "labels": o.labels,
        "ood_classes": o.ood_classes,
        "leaked_classes": src.leaked,
        "scheduler": "DDIMScheduler",
        "eta": 0.0,
        "batches": "start-sorted, full",  # batch companions shape the last bits of a sample
        "guidance_convention": "decode(encode(x).mode())" if o.mode == "vae" else method.convention,
    }
    existing = check_output(out, "outliers", params, inputs, o.overwrite)
    if existing is not None:
        say(f"complete: nothing to do ({out} holds this artifact)")
        return existing

    # 3. the samples: one key per (source, repeat)
    n_src = len(src.train) if o.limit is None else min(o.limit, len(src.train))
    source_ids = column(src.train, "sample_id")
    keys = [(f"{source_ids[r]}#{k}", r) for r in range(n_src) for k in range(o.per_image)]

    # 4. the model, the shards, and every sample's start and conditions from (seed, key)
    dev = state.device if device.startswith("cuda") else torch.device("cpu")
    revision = model_entry["fingerprint"] if spec.source == "hub" else None
    denoiser = load_denoiser(model, dev, dtype, revision=revision, spec=spec)
    if o.compile:
        denoiser.compile()
    judged = _judgement(judge, denoiser, sorted(set(src.labels.tolist())), o)
    fixed_start = _start_steps(o, method, denoiser.scheduler_config)  # a Hub model's, now
    auto_digest = hashlib.sha256(
        json.dumps(["auto-v1", params], sort_keys=True, default=str).encode()
    ).hexdigest()
    kept = None if o.overwrite else read_memo(partial_of(out), "auto", auto_digest)
    if kept is not None:  # a resume: the first run's choice, not a new probe
        search = json.loads(str(kept))
    else:  # every rank probes (none waits idle in a collective); the main one's choice counts
        search = agree_on_main(state, lambda: _auto(o, method, src, denoiser, judged))
    writer, claims = open_sharded(
        state,
        out,
        o.overwrite,
        o.shard_size,
        kind="outliers",
        keys=[k for k, _ in keys],
        params=params,
        inputs=inputs,
    )
    if search is not None:  # kept in the partial output for a resume
        search = json.loads(
            str(writer.memo("auto", auto_digest, lambda: np.array(json.dumps(search))))
        )
        o = replace(o, **{search["option"]: search["chosen"]})
        fixed_start = _start_steps(o, method, denoiser.scheduler_config)
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
        memo=writer.memo,  # drawn once per run: a resume loads them
    )
    pending = len(writer.pending())
    if pending < len(plans):
        say(f"resuming: {len(plans) - pending} / {len(plans)} done")
    capture = {p.key for p in plans[: o.save_masks]} if o.method == "sona" else set()
    runner = BatchGenerator(denoiser, o, capture)
    work = _work(runner, plans, src.train, o.size or denoiser.image_size, o, dev.type == "cuda")
    started = time.perf_counter()
    from rich.progress import Progress

    with Progress(disable=o.quiet or not state.is_main_process) as progress:
        task = progress.add_task(f"generate {o.method}", total=pending)
        stats = run_shards(work, writer, claims, lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - started
    ranks = gather_stats(state, stats, denoise_s=round(runner.denoise_s, 3))
    if not state.is_main_process:
        return NOT_MAIN
    made = sum(r["samples"] for r in ranks)
    counts = {"count": len(plans), "made": made, "seconds": seconds, "ranks": ranks}
    return _finalize(writer, runner.masks, src.train, o, counts, judged, search)


def _judgement(judge, denoiser, classes: list[int], o: GenerateOptions):
    """``None``, or (the judge's name, a function from the outliers table to its classes,
    its class names)."""
    if judge is None:
        return None
    if judge == MODEL:

        def by_model(ds) -> np.ndarray:
            return model_predictions(
                denoiser,
                ds,
                classes,
                seed=o.seed,
                policy=o.resize,
                batch_size=o.batch_size,
            )

        return "model (smallest denoising error)", by_model, denoiser.class_names
    from oodkit.models.detector import DetectorConfig

    names = DetectorConfig.load(judge.path).class_names
    predict = lambda ds: judge_predictions(judge.path, ds, denoiser.device)  # noqa: E731
    return judge.as_input()["path"], predict, names


def _auto(o: GenerateOptions, method, src: _Sources, denoiser, judged) -> dict[str, Any] | None:
    """``--t-start auto`` / ``--scale auto`` resolved on the probe (autotune.py): the search
    (option, chosen value, judge, probe, curve) for the summary, None when nothing is
    automatic. One process runs it (``from_main``) and the others take its choice."""
    what = "t_start" if o.t_start == AUTO else "scale" if o.scale == AUTO else None
    if what is None:
        return None
    flag = "--" + what.replace("_", "-")
    if what == "scale":
        candidates: list = list(SCALES)
    elif method.t_start_in_timesteps:
        sampler = DDIMSampler(ddim_scheduler(denoiser.scheduler_config), o.steps)
        candidates = timestep_candidates(sampler.timesteps.tolist())
    else:
        candidates = list(range(1, o.steps + 1))
    if not candidates:
        raise OodkitError(f"{flag} auto: the {o.steps}-step DDIM grid has no start to search")
    rows = probe_rows(len(src.train), o.probe_size, o.seed)
    name, predict, _ = judged
    measure = _probe(o, what, method, src, denoiser, rows, predict)
    search = smallest_reaching(candidates, measure, o.target_shift)
    if search.chosen is None:
        best = max(search.curve, key=lambda p: p["left_source"] or 0)
        raise OodkitError(
            f"{flag} auto: no {what} reaches --target-shift {o.target_shift:g} on the probe "
            f"(the most: {best['left_source'] or 0:.2f} at {best['value']:g}); lower it, or "
            "use another judge"
        )
    return {
        "option": what,
        "chosen": search.chosen,
        "target_shift": o.target_shift,
        "judge": name,
        "probe": {"size": len(rows), "seed": o.seed, "rows": rows},
        "curve": search.curve,
    }


def _probe(o, what, method, src, denoiser, rows, predict) -> Callable[[float], dict]:
    """``measure(value)``: the probe's outliers made with ``what`` = value (in memory, with
    keys of their own), judged: left-source share and mean SSIM."""
    import datasets

    from oodkit.schemas import image_features

    source_ids = column(src.train, "sample_id")
    keys = [(f"{source_ids[r]}#probe", r) for r in rows]
    size = o.size or denoiser.image_size

    def measure(value: float) -> dict[str, Any]:
        trial = replace(o, **{what: value})
        plans = plan_samples(
            keys,
            source_ids,
            src.labels,
            uses_ood=method.uses_ood,
            seed=o.seed,
            steps=o.steps,
            t_start=_start_steps(trial, method, denoiser.scheduler_config),
            num_classes=src.num_classes,
            prompts=src.prompts,
        )
        runner = BatchGenerator(denoiser, trial)
        images, ssim, order = [], [], []
        for batch in canonical_batches(plans, o.batch_size):
            ps = [plans[i] for i in batch]
            x, boxes = _load_sources(
                src.train, [p.row for p in ps], denoiser.image_size, denoiser.channels, o.resize
            )
            outs, s, _ = _quality_on_device(runner(ps, x.to(denoiser.device)), x, boxes, size)
            images += [encode_image(t, o.image_format, o.image_quality) for t in outs]
            ssim += s
            order += batch
        table = datasets.Dataset.from_dict(
            {
                "image": images,
                "label": [plans[i].source_label for i in order],
                "sample_id": [plans[i].key for i in order],
            },
            features=image_features(),
        )
        labels = np.asarray([plans[i].source_label for i in order], dtype=np.int64)
        return shift_of(np.asarray(predict(table)), labels, ssim)

    return measure


def _finalize(
    writer, masks, train, o: GenerateOptions, counts: dict[str, Any], judged, search
) -> Artifact:
    """Finish the artifact from its shards; preview grid, SONA masks, diagnostics (nuisance
    preservation per start step, semantic shift under ``--judge``) and their figure."""

    from oodkit.stages.generate.report import preview_grid, quality_summary, save_mask_figure

    diagnostics: dict[str, Any] = {}
    verdicts = []

    def summarize(ds) -> dict[str, Any]:
        summary = quality_summary(ds, o.steps)
        if judged is not None:
            name, predict, class_names = judged
            shift, rows = judged_summary(ds, predict(ds), class_names, o.steps)
            verdicts.append(rows)
            for bucket, row in shift.pop("by_start_step").items():
                summary["by_start_step"][bucket].update(row)
            summary.update(shift, judge=name)
        diagnostics.update(summary)
        return summary

    def write_files(folder: Path) -> None:
        preview_grid(folder / "preview.png", load_table(folder / DATA_DIR), train)
        if masks:
            save_mask_figure(folder / "masks.png", masks)
        diagnostics_figure(folder / "diagnostics.png", diagnostics)
        for rows in verdicts:
            rows.save(folder)

    made, seconds = counts["made"], counts["seconds"]
    return writer.finalize(
        summary={
            "count": counts["count"],
            "seconds_this_run": round(seconds, 2),
            "images_per_s_this_run": round(made / seconds, 3) if made and seconds else None,
            "ranks_this_run": counts["ranks"],
            **({"auto": search} if search else {}),
        },
        summarize=summarize,
        write_files=write_files,
    )
