"""``oodkit score --method diffguard``: re-synthesise every test image toward the label the
detector gave it and score how little it changed (docs/diffguard.md, docs/methods.md §7).

Steps, in order: check the options, the detector, the model's configs and the benchmark (no
weights loaded, nothing written); fingerprint the inputs and find finished outputs; load the
model; open the shards; run canonical batches (invert → guided and unguided synthesis →
every distance at once); one scores artifact per distance (and per combination with a
post-hoc baseline) from the shards' table.

Work is keyed per sample and run through the sharded-run engine (``oodkit.sharding``) like
``generate``: an interrupted run, or one split over ``accelerate launch`` / ``torchrun``
processes, ends with the identical artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodkit.artifacts import Artifact, check_output, column, load_artifact, write_artifact
from oodkit.data.images import fit_square, tensor_to_pil
from oodkit.diffusion.inversions import INVERSIONS
from oodkit.errors import OodkitError
from oodkit.hashing import writable_cache
from oodkit.locks import writes_output
from oodkit.schemas import SetScores, scores_dataset
from oodkit.similarity import DISTANCES, PERCEPTUAL
from oodkit.stages.score.features import FEATURES
from oodkit.stages.score.options import ScoreOptions

GUIDANCES = ("classifier", "cfg")
REFERENCES = ("unguided", "input")
INVERSION_EPS = ("target", "source")
RESTARTS = {"exact": 0, "official": 1}  # levels above where inversion stopped
GEOMETRIES = ("resize", "classifier", "model")
STEPS = {"classifier": 100, "cfg": 25}  # official: 100-step GDM, 25-step LDM
STOPS = {"classifier": "aes", "cfg": "1"}  # official: AES for GDM, full inversion for LDM


@dataclass
class Recipe:
    """The resolved DiffGuard settings of a run (``options``: every option, preset applied)."""

    options: ScoreOptions
    guidance: str
    steps: int
    stop: str  # "aes" or a fraction
    max_steps: int  # the fixed depth, or AES's cap
    distances: list[str]


def _stop_depth(stop: str, o: ScoreOptions, steps: int) -> int:
    if stop == "aes":
        if o.aes_psnr is None and o.aes_gmsd is None and o.aes_dists is None:
            raise OodkitError("--stop aes needs --aes-psnr, --aes-gmsd and/or --aes-dists")
        if not 0 < o.max_invert <= 1:
            raise OodkitError(f"--max-invert must lie in (0, 1], got {o.max_invert}")
        return max(1, math.floor(o.max_invert * steps + 1e-9))
    try:
        fraction = float(stop)
    except ValueError:
        raise OodkitError(f"--stop must be aes or a fraction in (0, 1], got {stop!r}") from None
    if not 0 < fraction <= 1:
        raise OodkitError(f"--stop must be aes or a fraction in (0, 1], got {stop!r}")
    return max(1, round(fraction * steps))


def resolve(o: ScoreOptions) -> Recipe:
    """The run's settings: the preset and per-guidance defaults applied, every value
    checked."""
    from oodkit.stages.score.presets import apply_preset

    if o.model is None:
        raise OodkitError("--method diffguard needs --model (a diffusion model)")
    o = apply_preset(o)
    for flag, value, allowed in (
        ("--guidance", o.guidance, GUIDANCES),
        ("--reference", o.reference, REFERENCES),
        ("--inversion-eps", o.inversion_eps, INVERSION_EPS),
        ("--restart", o.restart, tuple(RESTARTS)),
        ("--geometry", o.geometry, GEOMETRIES),
    ):
        if value not in allowed:
            raise OodkitError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    for flag, value in (("--aes-psnr", o.aes_psnr), ("--aes-dists", o.aes_dists)):
        if value is not None and value < 0:
            raise OodkitError(f"{flag} must be ≥ 0 (0: off), got {value}")
    if o.aes_dists == 0:  # 0 switches a preset's DISTS rule off
        o = dataclasses.replace(o, aes_dists=None)
    if o.aes_psnr == 0:
        o = dataclasses.replace(o, aes_psnr=None)
    steps = STEPS[o.guidance] if o.steps is None else o.steps
    if o.cfg_scale < 0 or o.classifier_scale < 0:
        raise OodkitError("--cfg-scale and --classifier-scale must be ≥ 0")
    if not 0 <= o.cam_cut < 1:
        raise OodkitError(f"--cam-cut must lie in [0, 1), got {o.cam_cut}")
    if o.cam_resize not in ("image", "grid"):
        raise OodkitError(f"--cam-resize must be image or grid, got {o.cam_resize!r}")
    if not 0 <= o.trust_below <= o.trust_above <= 1:
        raise OodkitError("--trust-below and --trust-above must satisfy 0 ≤ below ≤ above ≤ 1")
    stop = STOPS[o.guidance] if o.stop is None else o.stop
    distances = list(dict.fromkeys(d.strip() for d in o.distance.split(",") if d.strip()))
    if not distances:
        raise OodkitError(f"--distance: none given ({', '.join(DISTANCES)})")
    for d in distances:
        if d not in DISTANCES:
            raise OodkitError(f"unknown distance {d!r} (one of {', '.join(DISTANCES)})")
    depth = _stop_depth(stop, o, steps)
    if o.inversion_eps == "source" and depth > steps - 1:
        raise OodkitError(
            f"--inversion-eps source starts from the image taken as x at t = 0, so at most "
            f"{steps - 1} of {steps} steps invert: lower --stop / --max-invert or raise --steps"
        )
    return Recipe(o, o.guidance, steps, stop, depth, distances)


def check_model(r: Recipe, o: ScoreOptions, spec, config, bench) -> None:
    """The model against the guidance, the detector and the benchmark (configs only)."""
    if r.guidance == "cfg" and spec.kind == "uncond":
        raise OodkitError(
            "--guidance cfg needs a class- or text-conditional model with a null condition; "
            "this model is unconditional: use --guidance classifier"
        )
    if spec.channels is not None and spec.channels != config.in_chans:
        raise OodkitError(
            f"the model makes {spec.channels}-channel images but the detector takes "
            f"{config.in_chans}"
        )
    if r.guidance == "classifier" and spec.image_size and config.image_size > spec.image_size:
        raise OodkitError(
            f"the detector takes {config.image_size}px images but the model makes "
            f"{spec.image_size}px ones: classifier-guidance cut-outs need detector ≤ model size"
        )
    if spec.kind == "text" and not bench.class_names:
        raise OodkitError(
            f"benchmark {bench.name} has no class names for a text-conditional model's prompts"
        )
    if o.clip_x0 and spec.layout in ("sd", "dit", "ldm"):
        raise OodkitError(
            "--clip-x0 clips x̂₀ to the pixel range [−1, 1]: not for a latent model (--no-clip-x0)"
        )
    pixel_rules = [f for f, v in (("--aes-gmsd", o.aes_gmsd), ("--aes-dists", o.aes_dists)) if v]
    if pixel_rules and r.stop == "aes" and spec.layout in ("sd", "dit", "ldm"):
        raise OodkitError(f"{pixel_rules[0]} compares pixels: use --aes-psnr with a latent model")


def model_classes(spec, bench, labels: int) -> list[int] | None:
    """The class-conditional model's class of each of the ``labels`` classes the classifier
    gives (the benchmark's): by WordNet id where both know theirs (a 1000-class LDM / DiT with
    ImageNet-200), else by index (``None``: the same index)."""
    if spec.kind != "class":
        return None
    own, ids = spec.class_ids, bench.class_ids
    if own and ids:
        where = {w: i for i, w in enumerate(own)}
        missing = [w for w in ids if w not in where]
        if missing:
            raise OodkitError(
                f"the model lacks {len(missing)} of {bench.name}'s {len(ids)} classes "
                f"(e.g. {missing[0]}): no class map"
            )
        mapped = [where[w] for w in ids]
        return None if mapped == list(range(len(mapped))) else mapped
    if spec.num_classes and labels > spec.num_classes:
        raise OodkitError(
            f"the detector gives {labels} classes but the model has only {spec.num_classes}, "
            "and no WordNet ids map one to the other: labels pass to the model by index"
        )
    return None


def perceptual_needs(r: Recipe, o: ScoreOptions) -> list[str]:
    """The networks with local weights this run needs (DISTS / LPIPS distances, DISTS AES)."""
    need = [d for d in r.distances if d in PERCEPTUAL]
    if r.stop == "aes" and o.aes_dists is not None and "dists" not in need:
        need.append("dists")
    return need


@dataclass
class Item:
    """One sample to score."""

    key: str
    set_key: str
    dataset: str
    group: str  # id | near | far | id-val
    row: int
    sample_id: str
    label: int


def plan_items(loaded: dict[str, Any], sets: Sequence[tuple[str, str, str]]) -> list[Item]:
    """Every sample of the scored sets in canonical order (set by set, row by row)."""
    items = []
    for set_key, name, group in sets:
        ds = loaded[set_key]
        for row, (sid, lab) in enumerate(
            zip(column(ds, "sample_id"), column(ds, "label"), strict=True)
        ):
            items.append(Item(f"{name}/{sid}", set_key, name, group, row, sid, int(lab)))
    return items


def oracle_labels(items: Sequence[Item], seed: int, num_classes: int) -> list[int]:
    """Ground truth for ID samples, a random class (per seed and sample) for OOD ones."""
    from oodkit.seeding import key_rng

    return [
        it.label
        if it.group in ("id", "id-val")
        else int(key_rng(seed, it.key, "oracle").integers(num_classes))
        for it in items
    ]


class Scorer:
    """Runs one canonical batch: prediction, syntheses and every distance."""

    def __init__(
        self,
        denoiser,
        detector,
        r: Recipe,
        o: ScoreOptions,
        class_names,
        inversions=None,
        columns: list[int] | None = None,
        model_ids: list[int] | None = None,
    ) -> None:
        from oodkit.diffusion.diffguard import Classifier, Guidance, Inversion, StopRule
        from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
        from oodkit.similarity import measure

        self.denoiser, self.r, self.o = denoiser, r, o
        self.classifier = Classifier(detector, resize=o.geometry != "model", columns=columns)
        self.model_ids = model_ids  # the model's class of each label, or None (same index)
        self.sampler = DDIMSampler(ddim_scheduler(denoiser.scheduler_config), r.steps)
        dev = self.classifier.mean.device
        self.measures = {
            d: measure(d, o.perceptual_weights, dev) for d in r.distances if d != "logits-l1"
        }
        aes = r.stop == "aes"
        pixel = []
        if aes and o.aes_gmsd is not None:  # similarity("gmsd") is −GMSD
            pixel.append((o.aes_gmsd, lambda a, b: 1 + measure("gmsd")(a, b)))
        if aes and o.aes_dists is not None:
            dists = self.measures.get("dists") or measure("dists", o.perceptual_weights, dev)
            pixel.append((o.aes_dists, dists))
        rule = StopRule(r.max_steps, o.aes_psnr if aes else None, pixel, clamp=o.aes_clamp)
        self.inversion = Inversion(rule, o.inversion_eps, o.clip_x0)
        self.restart = RESTARTS[o.restart]
        self.guidance = Guidance(
            r.guidance,
            o.cfg_scale,
            o.cam_cut if o.cam else None,
            o.classifier_scale,
            o.cutouts,
            o.blend,
            o.seed,
            cam_resize=o.cam_resize,
            clip=o.clip_x0,
        )
        self.class_names = class_names
        self.inversions = inversions  # an InversionCache, or None

    def conditions(self, labels: list[int]) -> list[Any]:
        """The model's condition values for the classifier's labels."""
        if self.denoiser.kind != "text":
            return labels if self.model_ids is None else [self.model_ids[y] for y in labels]
        from oodkit.data.classes import prompt

        return [prompt(self.class_names[y]) for y in labels]

    @torch.no_grad()
    def __call__(
        self, items: Sequence[Item], images: torch.Tensor, oracle: list[int] | None, keep: set
    ) -> dict[str, list]:
        """``images``: the inputs as the geometry gives them ([0, 1]; the model's square, or
        the classifier's own crop with ``--geometry classifier``)."""
        from oodkit.diffusion.diffguard import invert, resynthesise
        from oodkit.similarity import logits_l1

        c = self.classifier
        logits = c.logits(images)
        pred = logits.argmax(1)
        labels = pred if oracle is None else torch.tensor(oracle, device=pred.device)
        unguided = self.o.reference == "unguided"

        def run(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
            return invert(self.denoiser, self.sampler, x, self.inversion)

        cache = self.inversions
        model_in = _resized(images, self.denoiser.image_size)
        inverted = run(model_in) if cache is None else cache.invert(model_in, run, pred.device)
        eps_at = self.inversion.eps_at
        starts = [self.sampler.restart(s, eps_at, self.restart) for s in inverted[1]]
        syn = resynthesise(
            self.denoiser,
            self.sampler,
            c,
            images,
            inverted,
            starts,
            labels,
            self.conditions(labels.tolist()),
            [it.key for it in items],
            self.guidance,
            unguided,
        )
        size = images.shape[-1]  # syntheses back to the inputs' size (official GDM: 224)
        syn.guided = _resized(syn.guided, size)
        syn.unguided = None if syn.unguided is None else _resized(syn.unguided, size)
        ref = syn.unguided if unguided else images.to(syn.guided.device)
        values = {}
        for d in self.r.distances:
            if d == "logits-l1":
                ref_logits = c.logits(ref) if unguided else logits
                values[d] = logits_l1(c.logits(syn.guided), ref_logits)
            else:
                values[d] = self.measures[d](syn.guided, ref)
        return _rows(items, pred, labels, syn, images, values, keep)


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` resized bilinearly (antialiased) to ``size``² (itself when it has that size)."""
    import torch.nn.functional as F

    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x.float(), size=size, mode="bilinear", antialias=True).clamp(0, 1)


def _rows(items, pred, labels, syn, images, values, keep: set) -> dict[str, list]:
    """A batch as table rows; images only for the samples kept for the preview."""
    pil = {}
    for j, it in enumerate(items):
        if it.key in keep:
            ug = syn.unguided[j] if syn.unguided is not None else None
            pil[it.key] = [
                None if t is None else tensor_to_pil(t.cpu())
                for t in (images[j], syn.guided[j], ug)
            ]
    rows: dict[str, list] = {
        "key": [it.key for it in items],
        "pred": pred.tolist(),
        "guide_label": labels.tolist(),
        "stop": syn.stops,
    }
    for d, v in values.items():
        rows[f"score:{d}"] = v.double().cpu().tolist()
    for n, name in enumerate(("input", "guided", "unguided")):
        rows[name] = [pil[it.key][n] if it.key in pil else None for it in items]
    return rows


def _table_features(distances: Sequence[str]):
    import datasets

    cols = {
        "key": datasets.Value("string"),
        "pred": datasets.Value("int64"),
        "guide_label": datasets.Value("int64"),
        "stop": datasets.Value("int64"),
        **{f"score:{d}": datasets.Value("float64") for d in distances},
        **{n: datasets.Image() for n in ("input", "guided", "unguided")},
    }
    return datasets.Features(cols)


@dataclass
class Target:
    """One output artifact: a distance alone, or combined with the baseline."""

    name: str
    distance: str
    path: Path
    params: dict[str, Any]
    existing: Artifact | None
    combined: bool = False


def _targets(r: Recipe, o, base_params, inputs, out: Path, baseline) -> list[Target]:
    names = [(d, d, False) for d in r.distances]
    if baseline is not None:
        b = baseline.manifest.params["method"]
        names += [(f"{d}+{b}", d, True) for d in r.distances]
    targets = []
    for name, d, combined in names:
        nocam = "-nocam" if r.guidance == "cfg" and not o.cam else ""
        tag = f"diffguard-{r.guidance}{nocam}{'-oracle' if o.oracle else ''}-{d}"
        params = {**base_params, "distance": d, "label": f"{base_params['label']}+{tag}"}
        if combined:
            b = baseline.manifest.params
            params.update(
                method=f"diffguard+{b['method']}",
                label=f"{params['label']}+{b['method']}",
                trust_below=o.trust_below,
                trust_above=o.trust_above,
            )
        path = out if len(names) == 1 and not o.save_syntheses else out / name
        existing = check_output(path, "scores", params, inputs, o.overwrite)
        targets.append(Target(name, d, path, params, existing, combined))
    return targets


def _baseline(o: ScoreOptions, det, benchmark: str):
    """The post-hoc scores artifact to combine with, checked against this run."""
    from oodkit.methods import SCORE

    if o.combine_with is None:
        return None
    art = load_artifact(o.combine_with, kind="scores")
    p = art.manifest.params
    method = p.get("method")
    if method not in SCORE.names() or "model" in SCORE.get(method).needs:
        raise OodkitError(
            f"--combine-with {o.combine_with}: not a post-hoc scores artifact (method {method!r})"
        )
    if p.get("benchmark") != benchmark:
        raise OodkitError(
            f"--combine-with {o.combine_with} scores benchmark {p.get('benchmark')!r}, "
            f"not {benchmark!r}"
        )
    recorded = str(p.get("detector"))
    same = (
        recorded == det.ref
        if det.ref or recorded.startswith("hub:")
        else Path(recorded).resolve() == Path(det.path).resolve()
    )
    if not same:
        raise OodkitError(
            f"--combine-with {o.combine_with} was made with another detector ({p.get('detector')})"
        )
    return art


def _sets(bench, combining: bool) -> list[tuple[str, str, str]]:
    """(load key, set name, group) of the scored sets; ID validation for a combination."""
    sets = [("id_test", bench.id_test.name, "id")] + [(s.name, s.name, s.group) for s in bench.ood]
    if combining:
        if bench.id_val is None:
            raise OodkitError(
                f"benchmark {bench.name} has no ID validation set to fit the combination on"
            )
        sets.append(("id_val", bench.id_val.name, "id-val"))
    return sets


def _work(scorer: Scorer, config, items, loaded, o: ScoreOptions, oracle, keep: set, cuda: bool):
    """DiffGuard as sharded-run work: batches in item order, cut into shards; inputs as the
    geometry gives them (the model's square, or the classifier's resize and crop)."""
    from oodkit.data.images import eval_view
    from oodkit.data.tables import image_mode
    from oodkit.devices import resolve_workers
    from oodkit.sharding import ShardWork, cut_shards

    den = scorer.denoiser
    batches = [
        list(range(i, min(i + o.diffusion_batch, len(items))))
        for i in range(0, len(items), o.diffusion_batch)
    ]
    view = eval_view(config) if o.geometry == "classifier" else None
    mode = image_mode(den.channels)

    def load(batch: list[int]) -> torch.Tensor:
        images = [loaded[items[i].set_key][items[i].row]["image"] for i in batch]
        if view is not None:
            return torch.stack([view(im.convert(mode) if im.mode != mode else im) for im in images])
        return fit_square(images, den.image_size, den.channels, "crop")[0]

    def compute(batch: list[int], images: torch.Tensor) -> dict[str, list]:
        labels = None if oracle is None else [oracle[i] for i in batch]
        return scorer([items[i] for i in batch], images, labels, keep)

    return ShardWork(
        shards=cut_shards(batches, o.diffusion_batch, o.shard_size),
        key_of=lambda i: items[i].key,
        load=load,
        compute=compute,
        host=lambda _batch, _images, rows: rows,
        features=_table_features(scorer.r.distances),
        num_workers=resolve_workers(o.num_workers, cuda),
        pin_memory=cuda,
    )


def _preview(path: Path, ds) -> None:
    """Rows of (input, unguided, guided), upscaled for viewing (no unguided cell with
    ``--reference input``)."""
    from PIL import Image

    cell = 96
    canvas = Image.new("RGB", (3 * (cell + 8), len(ds) * (cell + 4)), "white")
    for r, row in enumerate(ds):
        for j, name in enumerate(("input", "unguided", "guided")):
            if row[name] is None:
                continue
            canvas.paste(
                row[name].convert("RGB").resize((cell, cell), Image.NEAREST),
                (j * (cell + 8), r * (cell + 4)),
            )
    canvas.save(path)


def _syntheses(path: Path, params, inputs, table, items) -> Artifact:
    """The kept samples' inputs, syntheses and scores as their own artifact, with
    ``preview.png`` (ID rows first, then OOD)."""
    kept = [j for j, im in enumerate(table["input"]) if im is not None]
    order = sorted(kept, key=lambda j: items[j].group not in ("id", "id-val"))
    ds = table.select(order)
    info = {
        "dataset": [items[j].dataset for j in order],
        "group": [items[j].group for j in order],
        "sample_id": [items[j].sample_id for j in order],
    }
    for name, values in info.items():
        ds = ds.add_column(name, values)
    return write_artifact(
        path,
        "syntheses",
        params,
        inputs,
        dataset=ds,
        summary={"samples": len(ds)},
        write_files=lambda folder: _preview(folder / "preview.png", ds),
    )


def _baseline_scores(base, det, model, bench, loaded, items, o) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's id_score for every scored test item (from its artifact) and for the ID
    validation items (recomputed with its method and recorded parameters)."""
    from oodkit.methods import SCORE
    from oodkit.stages.score.features import cached_extract
    from oodkit.stages.score.methods import References

    ds = base.dataset()
    by_key = {
        f"{d}/{s}": v
        for d, s, v in zip(
            column(ds, "dataset"), column(ds, "sample_id"), column(ds, "id_score"), strict=True
        )
    }
    test = [it for it in items if it.group != "id-val"]
    missing = [it.key for it in test if it.key not in by_key]
    if missing:
        raise OodkitError(f"--combine-with {base.path} has no score for {missing[0]!r}")
    p = base.manifest.params
    method = SCORE.get(p["method"])

    def run(d):
        return cached_extract(
            model, det.manifest.fingerprint, d, o.batch_size, o.num_workers, o.cache
        )

    refs = References(id_train=run(bench.load("id_train")) if "id_train" in method.needs else None)
    val = [it.row for it in items if it.group == "id-val"]
    val_scores = method.load()(run(loaded["id_val"].select(val)), refs, p)
    return np.array([by_key[it.key] for it in test]), np.asarray(val_scores, dtype=np.float64)


def _write(targets, table, items, o, inputs, acc, summary, base_scores) -> None:
    """One scores artifact per target from the merged per-sample table."""
    from oodkit.stages.score.combine import combine

    is_test = np.array([it.group != "id-val" for it in items])
    test = [it for it in items if it.group != "id-val"]
    pred = np.asarray(column(table, "pred"))[is_test]
    for t in targets:
        if t.existing is not None:
            continue
        values = np.asarray(table[f"score:{t.distance}"], dtype=np.float64)
        scores = values[is_test]
        if t.combined:
            base_test, base_val = base_scores
            scores = combine(
                base_test, scores, base_val, values[~is_test], o.trust_below, o.trust_above
            )
        sets = []
        for name in dict.fromkeys(it.dataset for it in test):
            idx = [j for j, it in enumerate(test) if it.dataset == name]
            group = test[idx[0]].group
            sets.append(
                SetScores(
                    name,
                    group,
                    [test[j].sample_id for j in idx],
                    scores[idx],
                    pred[idx],
                    [test[j].label for j in idx] if group == "id" else None,
                )
            )
        t.existing = write_artifact(
            t.path,
            "scores",
            t.params,
            inputs,
            dataset=scores_dataset(sets),
            summary={"id_accuracy": acc, **summary},
        )


@writes_output
def score_diffguard(
    detector: str | Path, benchmark: str, out: str | Path, o: ScoreOptions
) -> list[Artifact]:
    """DiffGuard scores of the benchmark's ID test and OOD test sets, one artifact per distance
    (``out`` itself when there is one output, else ``out/<distance>``; combinations with a
    post-hoc baseline as ``out/<distance>+<method>``)."""
    from accelerate import PartialState
    from rich.progress import Progress

    from oodkit.data.sources import get_benchmark
    from oodkit.devices import resolve_device, resolve_dtype
    from oodkit.diffusion.denoisers import describe_model, load_denoiser, model_input
    from oodkit.models.detector import DetectorConfig, load_detector
    from oodkit.models.imported import class_map
    from oodkit.perceptual import weights_input
    from oodkit.sharding import open_sharded, run_shards
    from oodkit.stages.score.run import check_fit, detector_label, first, map_digest

    # 1. every check that needs no weights
    r = resolve(o)
    o = r.options
    out = Path(out)
    det = load_artifact(detector, kind="detector")
    if det.manifest.params.get("labels") is not None:
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
    model_ids = model_classes(spec, bench, labels)
    base = _baseline(o, det, benchmark)
    sets = _sets(bench, base is not None)

    # 2. recorded recipe, fingerprinted inputs, finished outputs
    inputs = [det.as_input(), model_input(o.model, spec)] + ([base.as_input()] if base else [])
    inputs += [weights_input(n, o.perceptual_weights) for n in perceptual_needs(r, o)]
    for name, mapped in (("wordnet-ids", columns), ("model-wordnet-ids", model_ids)):
        if mapped is not None:
            inputs.append({"kind": "class-map", "path": name, "fingerprint": map_digest(mapped)})
    params = {
        "method": "diffguard",
        "label": detector_label(det, o.label) + (f"[first {o.limit}]" if o.limit else ""),
        "detector": det.ref or str(det.path),
        "benchmark": benchmark,
        "model": str(o.model),
        "preset": o.preset,
        "guidance": r.guidance,
        "steps": r.steps,
        "stop": r.stop,
        "max_inversion_steps": r.max_steps,
        "aes_psnr": o.aes_psnr if r.stop == "aes" else None,
        "aes_gmsd": o.aes_gmsd if r.stop == "aes" else None,
        "aes_dists": o.aes_dists if r.stop == "aes" else None,
        "aes_clamp": o.aes_clamp if r.stop == "aes" and (o.aes_dists or o.aes_gmsd) else None,
        "inversion_eps": o.inversion_eps,
        "clip_x0": o.clip_x0,
        "restart": o.restart,
        "geometry": o.geometry,
        "reference": o.reference,
        "classifier_scale": o.classifier_scale if r.guidance == "classifier" else None,
        "cutouts": o.cutouts if r.guidance == "classifier" else None,
        "blend": o.blend if r.guidance == "classifier" else None,
        "cfg_scale": o.cfg_scale if r.guidance == "cfg" else None,
        "cam": o.cam if r.guidance == "cfg" else None,
        "cam_cut": o.cam_cut if r.guidance == "cfg" and o.cam else None,
        "cam_resize": o.cam_resize if r.guidance == "cfg" and o.cam else None,
        "oracle": o.oracle,
        "limit": o.limit,
        "diffusion_batch": o.diffusion_batch,
        "dtype": dtype_name,
        "seed": o.seed,
        "scheduler": "DDIMScheduler",
        "eta": 0.0,
        "fit": "the classifier's resize and crop"
        if o.geometry == "classifier"
        else "crop to the model's square",
    }
    targets = _targets(r, o, params, inputs, out, base)
    syn_path, syn_params = out / "syntheses", {**params, "samples": o.save_syntheses}
    syn_out = None
    if o.save_syntheses:
        syn_out = check_output(syn_path, "syntheses", syn_params, inputs, o.overwrite)
    if all(t.existing is not None for t in targets) and (syn_out or not o.save_syntheses):
        return [t.existing for t in targets] + ([syn_out] if syn_out else [])

    # 3. data, model, shards
    if o.cache:
        writable_cache(FEATURES)
        writable_cache(INVERSIONS)
    loaded = {key: first(bench.load(key), o.limit) for key, _, _ in sets}
    items = plan_items(loaded, sets)
    oracle = oracle_labels(items, o.seed, labels) if o.oracle else None
    state = PartialState(cpu=device == "cpu")
    dev = state.device if device.startswith("cuda") else torch.device("cpu")
    model = load_detector(det.path, dev)
    revision = inputs[1]["fingerprint"] if spec.source == "hub" else None
    denoiser = load_denoiser(o.model, dev, dtype, revision=revision, spec=spec)
    run_params = {**params, "distances": r.distances, "combine_with": o.combine_with}

    writer, claims = open_sharded(
        state,
        out,
        o.overwrite,
        o.shard_size,
        kind="scores",
        keys=[it.key for it in items],
        params=run_params,
        inputs=inputs,
        key_column="key",
    )
    id_keys = [it.key for it in items if it.group == "id"][: o.save_syntheses]
    ood_keys = [it.key for it in items if it.group in ("near", "far")][: o.save_syntheses]
    inversions = None
    if o.cache:
        from oodkit.diffusion.inversions import InversionCache

        keys = ("steps", "max_inversion_steps", "aes_psnr", "aes_gmsd", "aes_dists", "dtype")
        keys += ("aes_clamp", "inversion_eps", "clip_x0", "geometry")
        recipe = {k: params[k] for k in keys} | {"model": inputs[1]["fingerprint"]}
        if params["aes_dists"] is not None:
            recipe["dists"] = next(i for i in inputs if i["kind"] == "dists-weights")["fingerprint"]
        inversions = InversionCache(json.dumps(recipe, sort_keys=True))
    scorer = Scorer(denoiser, model, r, o, bench.class_names, inversions, columns, model_ids)
    started = time.perf_counter()
    work = _work(
        scorer, config, items, loaded, o, oracle, set(id_keys + ood_keys), dev.type == "cuda"
    )
    with Progress(disable=o.quiet or not state.is_main_process) as progress:
        task = progress.add_task("diffguard", total=len(writer.pending()))
        stats = run_shards(work, writer, claims, lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - started
    state.wait_for_everyone()
    if not state.is_main_process:
        return []

    # 4. one artifact per target
    table = writer.table()
    id_rows = [j for j, it in enumerate(items) if it.group == "id"]
    pred = np.asarray(column(table, "pred"))
    acc = float(np.mean([pred[j] == items[j].label for j in id_rows])) if id_rows else None
    stops = np.asarray(column(table, "stop"))
    summary = {
        "inversion_steps": {
            "mean": float(stops.mean()),
            "min": int(stops.min()),
            "max": int(stops.max()),
        },
        "images_per_s_this_run": round(stats.samples / seconds, 3) if stats.samples else None,
    }
    base_scores = _baseline_scores(base, det, model, bench, loaded, items, o) if base else None
    _write(targets, table, items, o, inputs, acc, summary, base_scores)
    outputs = [t.existing for t in targets]
    if o.save_syntheses:
        outputs.append(syn_out or _syntheses(syn_path, syn_params, inputs, table, items))
    writer.discard()
    return outputs
