"""DiffGuard's work: the samples of a run, and one canonical batch — prediction, inversion,
guided and unguided synthesis, every distance — as sharded-run work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from oodkit.artifacts import column
from oodkit.data.images import fit_square, tensor_to_pil
from oodkit.scoring.options import ScoreOptions
from oodkit.stages.diffguard.recipe import (
    RESTARTS,
    Recipe,
)


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
            gmsd = measure("gmsd")  # needs [0, 1] inputs: clamped whatever --aes-clamp says
            pixel.append((o.aes_gmsd, lambda a, b: 1 + gmsd(a.clamp(0, 1), b.clamp(0, 1))))
        if aes and o.aes_dists is not None:  # StopRule clamps (or not) itself
            dists = self.measures.get("dists") or measure("dists", o.perceptual_weights, dev)
            pixel.append((o.aes_dists, lambda a, b: dists(a, b, clamp=False)))
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


def sharded_work(
    scorer: Scorer, config, items, loaded, o: ScoreOptions, oracle, keep: set, cuda: bool
):
    """DiffGuard as sharded-run work: batches in item order, cut into shards; inputs as the
    geometry gives them (the model's square, or the classifier's resize and crop)."""
    from oodkit.data.images import eval_view
    from oodkit.data.tables import image_mode, to_mode
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
            return torch.stack([view(to_mode(im, mode)) for im in images])
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
