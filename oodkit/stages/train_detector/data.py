"""What a detector trains on: the labelled ID table (plus ID-labelled extras), the outlier
table its loss needs (paired with sources for sona, labelled for sd) and a validation table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oodkit.artifacts import column
from oodkit.data.images import ImageTable, PairedOutliers, eval_transform, train_transform
from oodkit.data.sources import IdData, dataset_input, load_artifact_or_dataset, resolve_id
from oodkit.data.tables import image_mode
from oodkit.errors import OodkitError
from oodkit.methods import DETECTOR_LOSS
from oodkit.models.detector import DetectorConfig
from oodkit.schemas import PseudoLabels, read_pseudo_labels
from oodkit.stages.train_detector.options import TrainOptions
from oodkit.stages.train_detector.outlier_filter import (
    diagnostics_of,
    keep_mask,
    parse_filter,
    weights_of,
)


@dataclass
class TrainingData:
    """Everything the loop reads, and what the manifest records about it."""

    id_table: ImageTable
    outliers: ImageTable | None
    outlier_weights: np.ndarray | None  # drawing weights (None: uniform), --outlier-weight
    outlier_counts: dict[str, list[int]]  # per --outliers reference: [kept, total]
    kept_diagnostics: dict[str, dict[str, Any]]  # per filtered reference: its kept rows'
    val: ImageTable | None
    num_classes: int
    class_names: list[str] | None
    channels: int
    image_size: int
    inputs: list[dict[str, Any]]
    refs: dict[str, Any]


@dataclass
class _Labels:
    y: np.ndarray
    num_classes: int
    class_names: list[str] | None
    pseudo: PseudoLabels | None

    def of_generated(self, ds, what: str) -> np.ndarray:
        """ỹ of generated samples: the source's cluster, else their stored label."""
        if self.pseudo is not None and "source_id" in ds.column_names:
            unknown = [s for s in column(ds, "source_id") if s not in self.pseudo.cluster_of]
            if unknown:
                raise OodkitError(f"{what}: source {unknown[0]!r} has no pseudo-label")
            return self.pseudo.labels_for(column(ds, "source_id"))
        col = "source_label" if "source_label" in ds.column_names else "label"
        return np.asarray(ds[col], dtype=np.int64)


def _plain_images(ds):
    import datasets

    return ds.select_columns(["image"]).cast_column("image", datasets.Image())


def _id_labels(id_ref: str, idd: IdData, labels: str | None) -> _Labels:
    """Ground-truth labels, or the clusters of a pseudo-labels artifact."""
    if labels is not None:
        pseudo = read_pseudo_labels(labels)
        y = pseudo.labels_for(column(idd.train, "sample_id"))
        return _Labels(y, int(y.max()) + 1, None, pseudo)
    y = np.asarray(column(idd.train, "label"), dtype=np.int64)
    if (y < 0).any():
        raise OodkitError(f"{id_ref}: {int((y < 0).sum())} ID samples have no label; pass --labels")
    num_classes = len(idd.class_names) if idd.class_names else int(y.max()) + 1
    if y.max() >= num_classes:
        raise OodkitError(f"{id_ref}: label {int(y.max())} exceeds the {num_classes} classes")
    return _Labels(y, num_classes, idd.class_names, None)


def _filtered(ref: str, ds, o: TrainOptions) -> tuple[Any, np.ndarray | None, list[int], Any]:
    """One outlier set's rows that ``--outlier-filter`` keeps, their ``--outlier-weight``
    weights (None: uniform), [kept, total] and the kept rows' diagnostics (None: no filter)."""
    from oodkit.artifacts import MANIFEST_NAME
    from oodkit.schemas import read_judged

    rules = parse_filter(o.outlier_filter)
    total, diagnostics = len(ds), None
    if rules:
        folder = Path(ref)
        artifact = folder.is_dir() and (folder / MANIFEST_NAME).is_file()
        judged = read_judged(folder, column(ds, "sample_id")) if artifact else None
        kept = np.flatnonzero(keep_mask(rules, ds, judged, ref))
        if not len(kept):
            raise OodkitError(f"--outlier-filter {o.outlier_filter} keeps no outlier of {ref}")
        diagnostics = diagnostics_of(ds, judged, kept)
        ds = ds.select(kept)
    return ds, weights_of(o.outlier_weight, ds, ref), [len(ds), total], diagnostics


def _outlier_part(ref, ds, o: TrainOptions, needs, labels: _Labels, row_of) -> tuple:
    """(images, labels, source rows or None) of one outlier set, checked against the loss."""
    sources = None
    if "source_id" in needs:
        if "source_id" not in ds.column_names:
            raise OodkitError(f"--outliers {ref} has no source_id, which --loss {o.loss} pairs on")
        unknown = [s for s in column(ds, "source_id") if s not in row_of]
        if unknown:
            raise OodkitError(f"--outliers {ref}: source {unknown[0]!r} is not in the ID set")
        sources = np.array([row_of[s] for s in column(ds, "source_id")], dtype=np.int64)
    if "source_label" in needs:
        if "source_label" not in ds.column_names and not (
            labels.pseudo is not None and "source_id" in ds.column_names
        ):
            raise OodkitError(f"--outliers {ref} has no source_label, which --loss {o.loss} needs")
        lab = labels.of_generated(ds, ref)
    else:
        lab = np.full(len(ds), -1, dtype=np.int64)
    return _plain_images(ds), lab, sources


def _outlier_table(o, idd, labels, t_train, mode, inputs, counts, diagnostics) -> tuple:
    """The outliers of the loss (None for losses without; sona pairs them with sources) and
    their drawing weights (None: uniform); ``counts`` gets [kept, total] per reference, and
    ``diagnostics`` the kept rows' diagnostics per filtered reference."""
    import datasets

    needs = DETECTOR_LOSS.get(o.loss).needs
    if "outliers" not in needs:
        if o.outliers:
            users = DETECTOR_LOSS.help(DETECTOR_LOSS.needing("outliers"))
            raise OodkitError(f"--loss {o.loss} ignores outliers: use {users}")
        return None, None
    if not o.outliers:
        raise OodkitError(f"--loss {o.loss} needs --outliers")
    row_of = {sid: i for i, sid in enumerate(column(idd.train, "sample_id"))}
    parts, weights = [], []
    for ref in o.outliers:
        ds, inp = load_artifact_or_dataset(ref, o.data_root, idd.channels, "--outliers", "outliers")
        inputs.append(inp)
        ds, w, counts[ref], kept = _filtered(ref, ds, o)
        if kept is not None:
            diagnostics[ref] = kept
        weights.append(w)
        parts.append(_outlier_part(ref, ds, o, needs, labels, row_of))
    images, labs, sources = zip(*parts, strict=True)
    table = ImageTable(
        datasets.concatenate_datasets(list(images)), t_train, np.concatenate(labs), mode
    )
    drawn = None if weights[0] is None else np.concatenate(weights)
    if "source_id" not in needs:
        return table, drawn
    id_sources = ImageTable(_plain_images(idd.train), t_train, labels.y, mode)
    return PairedOutliers(table, id_sources, np.concatenate(sources)), drawn


def prepare_data(id_ref: str, o: TrainOptions) -> TrainingData:
    """Resolve the ID set, labels, extra ID images, outliers and validation set."""
    import datasets

    idd = resolve_id(id_ref, data_root=o.data_root, image_size=o.image_size, val=o.val)
    inputs: list[dict[str, Any]] = [dataset_input(id_ref, idd.train)]
    labels = _id_labels(id_ref, idd, o.labels)
    if labels.pseudo is not None:
        inputs.append(labels.pseudo.artifact.as_input())
    if labels.num_classes < 2:
        raise OodkitError("training a classifier needs at least 2 classes")
    tables, label_parts = [_plain_images(idd.train)], [labels.y]
    for ref in o.extra_id:
        ds, inp = load_artifact_or_dataset(ref, o.data_root, idd.channels, "--extra-id", "outliers")
        lab = labels.of_generated(ds, ref)
        if (lab < 0).any() or lab.max() >= labels.num_classes:
            raise OodkitError(f"--extra-id {ref}: labels must lie in 0..{labels.num_classes - 1}")
        tables.append(_plain_images(ds))
        label_parts.append(lab)
        inputs.append(inp)
    mode = image_mode(idd.channels)
    config = DetectorConfig.for_data(
        o.arch, labels.num_classes, idd.channels, idd.image_size, heads=["cls"]
    )
    t_train, t_eval = train_transform(config, o.augment), eval_transform(config)
    id_table = ImageTable(
        datasets.concatenate_datasets(tables), t_train, np.concatenate(label_parts), mode
    )
    counts: dict[str, list[int]] = {}
    kept: dict[str, dict[str, Any]] = {}
    out_table, weights = _outlier_table(o, idd, labels, t_train, mode, inputs, counts, kept)
    val_table = None
    if idd.val is not None and o.labels is None:  # its accuracies are the detector's summary
        inputs.append(dataset_input(o.val or f"{id_ref}:id_val", idd.val))
        val_table = ImageTable(idd.val, t_eval, np.asarray(column(idd.val, "label")), mode)
    refs = {
        "id": id_ref,
        "benchmark": idd.benchmark,
        "labels": o.labels,
        "outliers": list(o.outliers),
        "extra_id": list(o.extra_id),
        "val": o.val,
    }
    return TrainingData(
        id_table,
        out_table,
        weights,
        counts,
        kept,
        val_table,
        labels.num_classes,
        labels.class_names,
        idd.channels,
        idd.image_size,
        inputs,
        refs,
    )
