"""``oodkit score --method diffguard``: re-synthesise every test image toward the label the
detector gave it and score how little it changed (docs/diffguard.md, docs/methods.md §7).

Steps, in order (``score_diffguard``): ``check_inputs`` — the options, the detector, the
model's configs and the benchmark (no weights loaded, nothing written); ``record`` — the
recipe, fingerprinted inputs, finished outputs; ``synthesise`` — load the models, open the
shards, run canonical batches (invert → guided and unguided synthesis → every distance at
once); ``write_outputs`` — one scores artifact per distance (and per combination with a
post-hoc baseline) from the shards' table.

Work is keyed per sample and run through the sharded-run engine (``oodkit.sharding``) like
``generate``: an interrupted run, or one split over ``accelerate launch`` / ``torchrun``
processes, ends with the identical artifacts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodkit.artifacts import Artifact, check_output, column, load_artifact
from oodkit.diffusion.inversions import INVERSIONS
from oodkit.errors import OodkitError
from oodkit.hashing import writable_cache
from oodkit.locks import writes_output
from oodkit.outcome import NOT_MAIN, Pending
from oodkit.schemas import DetectorParams, DiffGuardSummary
from oodkit.scoring.features import FEATURES
from oodkit.scoring.options import ScoreOptions
from oodkit.stages.diffguard.outputs import (
    Target,
    baseline_artifact,
    baseline_scores,
    scored_sets,
    targets_of,
    write_syntheses,
    write_targets,
)
from oodkit.stages.diffguard.recipe import (
    Recipe,
    check_model,
    model_classes,
    perceptual_needs,
    resolve,
)
from oodkit.stages.diffguard.work import Scorer, oracle_labels, plan_items, sharded_work


@dataclass
class Run:
    """What the steps of one DiffGuard run hand to each other."""

    r: Recipe
    o: ScoreOptions
    out: Path
    det: Artifact
    benchmark: str  # as given (recorded; a baseline must name the same)
    bench: Any
    config: Any
    spec: Any
    device: str
    dtype: torch.dtype
    dtype_name: str
    columns: list[int] | None  # the detector's logit column of each benchmark class
    labels: int  # how many classes the classifier's labels range over
    model_ids: list[int] | None  # the model's class of each label
    base: Artifact | None  # the post-hoc baseline to combine with
    sets: list[tuple[str, str, str]]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    model_input: dict[str, Any] = field(default_factory=dict)  # the diffusion model's entry
    params: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    syntheses: Artifact | None = None  # a finished syntheses artifact
    loaded: dict[str, Any] = field(default_factory=dict)  # the scored sets, by key


@writes_output
def score_diffguard(
    detector: str | Path, benchmark: str, out: str | Path, o: ScoreOptions
) -> list[Artifact] | Pending:
    """DiffGuard scores of the benchmark's ID test and OOD test sets, one artifact per distance
    (``out`` itself when there is one output, else ``out/<distance>``; combinations with a
    post-hoc baseline as ``out/<distance>+<method>``)."""
    run = check_inputs(detector, benchmark, Path(out), o)  # no weights loaded, nothing written
    finished = record(run)  # recipe, fingerprinted inputs, finished outputs
    if finished is not None:
        return finished
    done = synthesise(run)  # data, models, shards: every sample's syntheses and distances
    if done is None:
        return NOT_MAIN
    return write_outputs(run, *done)  # one scores artifact per target


def check_inputs(detector: str | Path, benchmark: str, out: Path, o: ScoreOptions) -> Run:
    """Every check that needs no weights: options, detector, benchmark, model configs, class
    maps, the baseline."""
    from oodkit.data.sources import get_benchmark
    from oodkit.devices import resolve_device, resolve_dtype
    from oodkit.diffusion.denoisers import describe_model
    from oodkit.models.detector import DetectorConfig
    from oodkit.models.imported import class_map
    from oodkit.scoring.common import check_fit

    r = resolve(o)
    o = r.options
    det = load_artifact(detector, kind="detector")
    if DetectorParams.read(det.manifest.params).clusters:
        raise OodkitError("diffguard needs a detector of the benchmark's classes, not of clusters")
    bench = get_benchmark(benchmark, data_root=o.data_root)
    device = resolve_device(o.device)
    dtype, dtype_name = resolve_dtype(o.dtype, device)
    config = DetectorConfig.load(det.path)
    check_fit(config, bench, allow_resize=True)
    columns = class_map(config, bench.class_names, bench.class_ids)
    labels = len(columns) if columns is not None else config.num_classes
    spec = describe_model(o.model)
    check_model(r, o, spec, config, bench)
    model_ids = model_classes(spec, bench, labels) if r.guidance == "cfg" else None
    base = baseline_artifact(o, det, benchmark)
    return Run(
        r, o, out, det, benchmark, bench, config, spec, device, dtype, dtype_name, columns, labels,
        model_ids, base, scored_sets(bench, base is not None),
    )  # fmt: skip


def record(run: Run) -> list[Artifact] | None:
    """The recorded recipe and fingerprinted inputs; the outputs when all are finished."""
    from accelerate import PartialState

    from oodkit.diffusion.denoisers import model_input
    from oodkit.perceptual import weights_input
    from oodkit.scoring.common import detector_label, first, map_digest, set_inputs

    r, o, det = run.r, run.o, run.det
    PartialState(cpu=run.device == "cpu")  # joins the process group before outputs are claimed
    run.loaded = {key: first(run.bench.load(key), o.limit) for key, _, _ in run.sets}
    run.model_input = model_input(o.model, run.spec)
    inputs = [det.as_input(), run.model_input]
    inputs += [run.base.as_input()] if run.base else []
    inputs += [weights_input(n, o.perceptual_weights) for n in perceptual_needs(r, o)]
    for name, mapped in (("wordnet-ids", run.columns), ("model-wordnet-ids", run.model_ids)):
        if mapped is not None:
            inputs.append({"kind": "class-map", "path": name, "fingerprint": map_digest(mapped)})
    inputs += set_inputs(run.benchmark, run.bench, run.loaded)
    classifier, cfg = r.guidance == "classifier", r.guidance == "cfg"
    aes = r.stop == "aes"
    run.inputs = inputs
    run.params = {
        "method": "diffguard",
        "label": detector_label(det, o.label) + (f"[first {o.limit}]" if o.limit else ""),
        "detector": det.ref or str(det.path),
        "benchmark": run.benchmark,
        "model": str(o.model),
        "preset": o.preset,
        "guidance": r.guidance,
        "steps": r.steps,
        "stop": r.stop,
        "max_inversion_steps": r.max_steps,
        "aes_psnr": o.aes_psnr if aes else None,
        "aes_gmsd": o.aes_gmsd if aes else None,
        "aes_dists": o.aes_dists if aes else None,
        "aes_clamp": o.aes_clamp if aes and o.aes_dists is not None else None,
        "inversion_eps": o.inversion_eps,
        "clip_x0": o.clip_x0,
        "restart": o.restart,
        "geometry": o.geometry,
        "reference": o.reference,
        "classifier_scale": o.classifier_scale if classifier else None,
        "cutouts": o.cutouts if classifier else None,
        "blend": o.blend if classifier else None,
        "cfg_scale": o.cfg_scale if cfg else None,
        "cam": o.cam if cfg else None,
        "cam_cut": o.cam_cut if cfg and o.cam else None,
        "cam_resize": o.cam_resize if cfg and o.cam else None,
        "oracle": o.oracle,
        "limit": o.limit,
        "diffusion_batch": o.diffusion_batch,
        "dtype": run.dtype_name,
        "seed": o.seed,
        "scheduler": "DDIMScheduler",
        "eta": 0.0,
        "fit": "the classifier's resize and crop"
        if o.geometry == "classifier"
        else "crop to the model's square",
    }
    run.targets = targets_of(r, o, run.params, inputs, run.out, run.base)
    if o.save_syntheses:
        run.syntheses = check_output(
            run.out / "syntheses", "syntheses", _syntheses_params(run), inputs, o.overwrite
        )
    if all(t.existing is not None for t in run.targets) and (run.syntheses or not o.save_syntheses):
        return [t.existing for t in run.targets] + ([run.syntheses] if run.syntheses else [])
    return None


def _syntheses_params(run: Run) -> dict[str, Any]:
    return {**run.params, "samples": run.o.save_syntheses}


def _inversion_cache(run: Run):
    """The inversion cache of this run's inversion recipe (``--cache``), else None."""
    from oodkit.diffusion.inversions import InversionCache

    if not run.o.cache:
        return None
    keys = ("steps", "max_inversion_steps", "aes_psnr", "aes_gmsd", "aes_dists", "dtype")
    keys += ("aes_clamp", "inversion_eps", "clip_x0")  # geometry: in the image hash
    recipe = {k: run.params[k] for k in keys} | {"model": run.model_input["fingerprint"]}
    if run.params["aes_dists"] is not None:
        weights = next(i for i in run.inputs if i["kind"] == "dists-weights")
        recipe["dists"] = weights["fingerprint"]
    return InversionCache(json.dumps(recipe, sort_keys=True))


def synthesise(run: Run):
    """Load the data and models, open the shards and run every canonical batch (this rank's
    share); on the main process (table, items, models, loaded sets, seconds, samples)."""
    from accelerate import PartialState
    from rich.progress import Progress

    from oodkit.diffusion.denoisers import load_denoiser
    from oodkit.models.detector import load_detector
    from oodkit.sharding import open_sharded, run_shards

    o, r = run.o, run.r
    if o.cache:
        writable_cache(FEATURES)
        writable_cache(INVERSIONS)
    loaded = run.loaded
    items = plan_items(loaded, run.sets)
    oracle = oracle_labels(items, o.seed, run.labels) if o.oracle else None
    state = PartialState(cpu=run.device == "cpu")
    dev = state.device if run.device.startswith("cuda") else torch.device("cpu")
    model = load_detector(run.det.path, dev)
    revision = run.model_input["fingerprint"] if run.spec.source == "hub" else None
    denoiser = load_denoiser(o.model, dev, run.dtype, revision=revision, spec=run.spec)
    writer, claims = open_sharded(
        state,
        run.out,
        o.overwrite,
        o.shard_size,
        kind="scores",
        keys=[it.key for it in items],
        params={**run.params, "distances": r.distances, "combine_with": o.combine_with},
        inputs=run.inputs,
        key_column="key",
    )
    keep = [it.key for it in items if it.group == "id"][: o.save_syntheses]
    keep += [it.key for it in items if it.group in ("near", "far")][: o.save_syntheses]
    scorer = Scorer(
        denoiser, model, r, o, run.bench.class_names, _inversion_cache(run), run.columns,
        run.model_ids,
    )  # fmt: skip
    started = time.perf_counter()
    work = sharded_work(scorer, run.config, items, loaded, o, oracle, set(keep), dev.type == "cuda")
    with Progress(disable=o.quiet or not state.is_main_process) as progress:
        task = progress.add_task("diffguard", total=len(writer.pending()))
        stats = run_shards(work, writer, claims, lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - started
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return writer, items, model, loaded, seconds, stats.samples


def write_outputs(run: Run, writer, items, model, loaded, seconds, samples) -> list[Artifact]:
    """One scores artifact per target (and the syntheses) from the shards' table."""
    o = run.o
    table = writer.table()
    id_rows = [j for j, it in enumerate(items) if it.group == "id"]
    pred = np.asarray(column(table, "pred"))
    acc = float(np.mean([pred[j] == items[j].label for j in id_rows])) if id_rows else None
    stops = np.asarray(column(table, "stop"))
    summary = DiffGuardSummary(
        id_accuracy=acc,
        inversion_steps={
            "mean": float(stops.mean()),
            "min": int(stops.min()),
            "max": int(stops.max()),
        },
        images_per_s_this_run=round(samples / seconds, 3) if samples else None,
    )
    base_scores = None
    if run.base is not None:
        base_scores = baseline_scores(run.base, run.det, model, run.bench, loaded, items, o)
    write_targets(run.targets, table, items, o, run.inputs, summary, base_scores)
    outputs = [t.existing for t in run.targets]
    if o.save_syntheses:
        path, params = run.out / "syntheses", _syntheses_params(run)
        outputs.append(run.syntheses or write_syntheses(path, params, run.inputs, table, items))
    writer.discard()
    return outputs
