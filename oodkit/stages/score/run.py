"""``oodkit score``: a detector × a benchmark × registered score methods → scores artifacts.

Pipeline: resolve the detector, benchmark and methods → check each output → extract features
and logits once per set (cached) → fit each method once (on the reference sets its
registration names) → score every set from the shared outputs → write one scores artifact
per method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oodkit.artifacts import Artifact, check_output, column, load_artifact
from oodkit.devices import resolve_device
from oodkit.errors import OodkitError
from oodkit.hashing import writable_cache
from oodkit.locks import writes_output
from oodkit.methods import SCORE, Method
from oodkit.options import with_overrides
from oodkit.outcome import Pending
from oodkit.schemas import DetectorParams, ScoresSummary, SetScores, write_scores
from oodkit.scoring.common import (
    SetData,
    check_fit,
    detector_label,
    first,
    map_digest,
    set_inputs,
)
from oodkit.scoring.features import FEATURES
from oodkit.scoring.fitting import FIT_SETS, Scoring, fit_set
from oodkit.scoring.options import ScoreOptions


@dataclass
class _Target:
    method: Method
    path: Path
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    existing: Artifact | None


def _targets(methods, det, benchmark: str, out, o: ScoreOptions, inputs_of) -> list[_Target]:
    """Output folder, recorded parameters and inputs per method; finished outputs are found
    here."""
    det_label = detector_label(det, o.label)
    targets = []
    for m in methods:
        params = {
            "method": m.name,
            "label": f"{det_label}+{m.name}" + (f"[first {o.limit}]" if o.limit else ""),
            "detector": det.ref or str(det.path),
            "benchmark": benchmark,
            **o.for_method(m),
            "seed": DetectorParams.read(det.manifest.params).seed,
            **({"limit": o.limit} if o.limit else {}),
        }
        path = Path(out) if len(methods) == 1 else Path(out) / m.name
        inputs = inputs_of(m)
        existing = check_output(path, "scores", params, inputs, o.overwrite)
        targets.append(_Target(m, path, params, inputs, existing))
    return targets


def _check_labels(det, bench, config, id_labels: torch.Tensor) -> None:
    if (
        not DetectorParams.read(det.manifest.params).clusters
        and len(id_labels)
        and int(id_labels.max()) >= config.num_classes
    ):
        raise OodkitError(
            f"the detector has {config.num_classes} classes but the ID labels of {bench.name} "
            f"go up to {int(id_labels.max())}"
        )


def _rows(sets, loaded, feats, scores, clusters: bool) -> list[SetScores]:
    """One ``SetScores`` per benchmark set; a detector of pseudo-labels predicts no labels."""
    rows = []
    for key, spec in sets:
        ds = loaded[key]
        pred = None if clusters else feats[key]["logits"].argmax(1).numpy()
        rows.append(
            SetScores(
                spec.name,
                spec.group,
                column(ds, "sample_id"),
                scores[key].numpy(),
                pred,
                column(ds, "label") if spec.group == "id" else None,
            )
        )
    return rows


@writes_output
def score(
    detector: str | Path,
    benchmark: str,
    methods: str | Sequence[str],
    out: str | Path,
    options: ScoreOptions | None = None,
    **overrides: Any,
) -> list[Artifact] | Pending:
    """Score the benchmark's ID test set and every OOD test set with each method.

    With one method ``out`` is the scores artifact; with several, ``out/<method>``. Every
    set's features and logits are computed once (and cached) for all methods; each method
    is fitted once. ``diffguard`` runs alone and writes one artifact per distance (its own
    stage, ``oodkit.stages.diffguard``, reached through the method registry). Keyword
    arguments override fields of ``options``.
    """
    from oodkit.data.sources import get_benchmark, load_artifact_or_dataset
    from oodkit.models.detector import load_detector
    from oodkit.models.imported import class_map

    o = with_overrides(ScoreOptions, options, overrides)
    chosen = SCORE.parse(methods)
    o.check(chosen)
    if any("model" in m.needs for m in chosen):
        if len(chosen) > 1:
            raise OodkitError(
                "--method diffguard runs alone: score post-hoc methods in another call"
            )
        return chosen[0].load()(detector, benchmark, out, o)
    det = load_artifact(detector, kind="detector")
    bench = get_benchmark(benchmark, data_root=o.data_root)
    model = load_detector(det.path, resolve_device(o.device))
    check_fit(model.config, bench, o.resize)
    needs = {n for m in chosen for n in m.needs}
    needs_outliers = [m.name for m in chosen if "outliers" in m.needs]
    if needs_outliers and not o.outliers:
        raise OodkitError(
            f"--method {needs_outliers[0]} needs --outliers (the detector's training outliers)"
        )
    inputs = [det.as_input()]
    columns = class_map(model.config, bench.class_names, bench.class_ids)
    if columns is not None:
        digest = map_digest(columns)
        inputs.append({"kind": "class-map", "path": "wordnet-ids", "fingerprint": digest})
    sets = [("id_test", bench.id_test)] + [(s.name, s) for s in bench.ood]
    loaded = {key: first(bench.load(key), o.limit) for key, _ in sets}
    inputs += set_inputs(benchmark, bench, loaded)
    # the reference sets: each method records (and is fitted on) the ones it needs
    refs_data = {key: fit_set(bench, key) for key in FIT_SETS if key in needs}
    ref_inputs = {k: set_inputs(benchmark, bench, {k: ds})[0] for k, ds in refs_data.items()}
    if o.outliers:
        refs_data["outliers"], ref_inputs["outliers"] = load_artifact_or_dataset(
            o.outliers, o.data_root, model.config.in_chans, "--outliers", "outliers"
        )

    def inputs_of(m: Method) -> list[dict[str, Any]]:
        return inputs + [entry for k, entry in ref_inputs.items() if k in m.needs]

    targets = _targets(chosen, det, benchmark, out, o, inputs_of)
    todo = [t for t in targets if t.existing is None]
    if not todo:
        return [t.existing for t in targets]
    needs = {n for t in todo for n in t.method.needs}  # finished methods need nothing more
    pool = len(refs_data["id_train"]) if "id_train" in refs_data else None
    for t in todo:  # before any network pass
        k = t.params.get("k")
        if k is not None and pool is not None and not 1 <= k <= pool:
            raise OodkitError(f"--k {k} must lie in 1..{pool} (ID training samples)")
    if o.cache:
        writable_cache(FEATURES)
    run = Scoring(model, det.manifest.fingerprint, columns, o.batch_size, o.num_workers, o.cache)
    id_labels = torch.tensor(loaded["id_test"]["label"])
    _check_labels(det, bench, model.config, id_labels)
    feats = {key: run.outputs(ds) for key, ds in loaded.items()}
    clusters = DetectorParams.read(det.manifest.params).clusters
    labels = "predicted" if clusters else "true"  # a detector of clusters has its own classes
    refs = {
        key: run.outputs(ds, labels if key in FIT_SETS else None)
        for key, ds in refs_data.items()
        if key in needs
    }
    acc = (
        None
        if clusters
        else float((feats["id_test"]["logits"].argmax(1) == id_labels).float().mean())
    )
    # every method fitted before any is written: a fit that refuses leaves nothing behind
    scorers = [t.method.load()(run.fit(t.method, t.params, refs)) for t in todo]
    for t, scorer in zip(todo, scorers, strict=True):
        scores = {key: scorer(SetData(f, run.batches(loaded[key]))) for key, f in feats.items()}
        t.existing = write_scores(
            t.path,
            _rows(sets, loaded, feats, scores, clusters),
            t.params,
            t.inputs,
            summary=ScoresSummary(id_accuracy=acc).as_dict(),
        )
    return [t.existing for t in targets]
