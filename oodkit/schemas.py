"""Artifact contracts in one place: the columns of every tabular kind and typed readers / writers.

Stages write and read tables only through this module, and tests build fixtures with it, so a
column is named once. Columns may be added, never renamed (docs/artifacts.md):

- images (any dataset oodkit reads): ``image``, ``label`` (−1 unknown), ``sample_id``;
- pseudo-labels: ``sample_id``, ``cluster``, ``confidence``;
- outliers: ``image``, ``sample_id``, ``source_id``, ``source_label``, ``condition``,
  ``t_start``, ``method``, ``seed``, plus ``id_condition`` / ``ood_condition`` (both prompts
  or classes; null when there is none), ``start_timestep`` (the training timestep noised to,
  −1 for VAE round trips; ``t_start`` counts the DDIM steps run) and ``ssim`` / ``psnr`` to
  the source;
- scores: ``sample_id``, ``dataset``, ``group`` (id | near | far), ``id_score`` (higher =
  in-distribution), ``pred`` (−1 if none), ``label`` (−1 for OOD).

An outliers artifact made with a judge also holds ``judged.npz``: the judge's verdict on each
row, in table order (``read_judged``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from oodkit.artifacts import Artifact, column, load_artifact, write_artifact
from oodkit.errors import OodkitError
from oodkit.metrics import accuracy, as_scores

if TYPE_CHECKING:
    import datasets

OOD_GROUPS = ("near", "far")
SCORE_COLUMNS = ("sample_id", "dataset", "group", "id_score")  # required to evaluate


def _features(columns: Mapping[str, str]) -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            name: datasets.Image() if dtype == "image" else datasets.Value(dtype)
            for name, dtype in columns.items()
        }
    )


IMAGE_COLUMNS = {"image": "image", "label": "int64", "sample_id": "string"}
PSEUDO_LABEL_COLUMNS = {"sample_id": "string", "cluster": "int64", "confidence": "float64"}
OUTLIER_COLUMNS = {
    "image": "image",
    "sample_id": "string",
    "source_id": "string",
    "source_label": "int64",
    "condition": "string",
    "id_condition": "string",
    "ood_condition": "string",
    "t_start": "int64",
    "start_timestep": "int64",
    "method": "string",
    "seed": "int64",
    "ssim": "float64",
    "psnr": "float64",
}
SCORE_TABLE_COLUMNS = {
    "sample_id": "string",
    "dataset": "string",
    "group": "string",
    "id_score": "float64",
    "pred": "int64",
    "label": "int64",
}


# What each column means, for dataset cards and ``oodkit info``.
COLUMN_DOCS = {
    "image": "the image",
    "label": "class index of the image (-1: unknown, or an OOD sample)",
    "sample_id": "stable id of the row (the key of resumable shards)",
    "cluster": "pseudo-class assigned by clustering",
    "confidence": "the clustering head's probability of the assigned cluster",
    "source_id": "sample_id of the ID image the outlier was generated from",
    "source_label": "class index of that source image",
    "condition": "the condition the outlier was guided toward (class or prompt)",
    "id_condition": "the source's ID condition (class or prompt); null when there is none",
    "ood_condition": "the OOD condition used by guidance; null when there is none",
    "t_start": "DDIM steps run from the partially noised source",
    "start_timestep": "training timestep the source was noised to (-1: VAE round trip)",
    "method": "generation method",
    "seed": "per-sample seed of every random choice",
    "ssim": "SSIM of the outlier to its source",
    "psnr": "PSNR (dB) of the outlier to its source",
    "dataset": "benchmark set the sample belongs to",
    "group": "id, near or far",
    "id_score": "OOD score, higher = more in-distribution",
    "pred": "the detector's predicted class (-1: none)",
    "input": "the scored input image",
    "unguided": "re-synthesis from the inverted latent without guidance",
    "guided": "re-synthesis guided toward the predicted class",
}


def image_features() -> datasets.Features:
    """The canonical schema of an image dataset."""
    return _features(IMAGE_COLUMNS)


def outlier_features() -> datasets.Features:
    """The schema of an outliers artifact's table."""
    return _features(OUTLIER_COLUMNS)


# --- pseudo-labels ---------------------------------------------------------------------------


def pseudo_labels_dataset(
    sample_ids: Sequence[str], cluster: np.ndarray, confidence: np.ndarray
) -> datasets.Dataset:
    """The pseudo-labels table."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "sample_id": list(sample_ids),
            "cluster": np.asarray(cluster).astype(np.int64).tolist(),
            "confidence": np.asarray(confidence).astype(np.float64).tolist(),
        },
        features=_features(PSEUDO_LABEL_COLUMNS),
    )


JUDGED_FILE = "judged.npz"  # an outliers artifact's per-row judge verdicts (generate --judge)


@dataclass
class Judged:
    """The judge's verdict on each outlier, in table order: its class, and whether the
    outlier left its source class / reached its target (1 yes, 0 no, −1 unknown)."""

    sample_id: np.ndarray
    judge_label: np.ndarray
    left_source: np.ndarray
    reached_target: np.ndarray

    def save(self, folder: Path) -> None:
        arrays = {k: getattr(self, k) for k in ("judge_label", "left_source", "reached_target")}
        np.savez(folder / JUDGED_FILE, sample_id=self.sample_id.astype(str), **arrays)


def read_judged(folder: Path, sample_ids: Sequence[str]) -> Judged | None:
    """An outliers artifact's judge verdicts (None: made without a judge), checked against
    its table's ``sample_ids``; read without pickles."""
    path = Path(folder) / JUDGED_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        judged = Judged(
            *(z[k] for k in ("sample_id", "judge_label", "left_source", "reached_target"))
        )
    if judged.sample_id.tolist() != list(sample_ids):
        raise OodkitError(f"{path} does not match the rows of its table")
    return judged


@dataclass
class PseudoLabels:
    """A pseudo-labels artifact as a map from sample id to cluster."""

    artifact: Artifact
    cluster_of: dict[str, int]

    def labels_for(self, sample_ids: Sequence[str], what: str = "ID sample") -> np.ndarray:
        """Clusters of ``sample_ids``; a sample without one is refused."""
        missing = [s for s in sample_ids if s not in self.cluster_of]
        if missing:
            raise OodkitError(f"{self.artifact.path} has no cluster for {what} {missing[0]!r}")
        return np.array([self.cluster_of[s] for s in sample_ids], dtype=np.int64)


def check_unique(ids: Sequence[str], where: str) -> None:
    """Sample ids are keys (of shards, of joins with labels and sources): refuse repeats."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            repeats = len(ids) - len(set(ids))
            raise OodkitError(
                f"{where}: sample id {i!r} is not unique ({repeats} repeated ids); ids are keys"
            )
        seen.add(i)


# the columns of each tabular kind, and those it cannot be read without
KIND_COLUMNS = {
    "pseudo-labels": (PSEUDO_LABEL_COLUMNS, ("sample_id", "cluster")),
    "outliers": (OUTLIER_COLUMNS, ("image", "sample_id")),
    "scores": (SCORE_TABLE_COLUMNS, SCORE_COLUMNS),
}


def table_of(art: Artifact) -> datasets.Dataset:
    """An artifact's table with its columns checked against its kind's schema: a column of
    another type (a damaged or hand-edited artifact) is one line, not a crash downstream."""
    import datasets

    ds = art.dataset()
    if art.kind not in KIND_COLUMNS:
        return ds
    columns, required = KIND_COLUMNS[art.kind]
    missing = [c for c in required if c not in ds.features]
    if missing:
        raise OodkitError(f"{art.path}: {art.kind} artifact lacks column(s) {', '.join(missing)}")
    for name, dtype in columns.items():
        feature = ds.features.get(name)
        if feature is None:
            continue
        ok = (
            isinstance(feature, datasets.Image)
            if dtype == "image"
            else isinstance(feature, datasets.Value) and feature.dtype == dtype
        )
        if not ok:
            got = getattr(feature, "dtype", type(feature).__name__)
            raise OodkitError(
                f"{art.path}: column {name} holds {got}, a {art.kind} artifact holds {dtype} "
                f"there (run oodkit verify {art.path})"
            )
    return ds


def read_pseudo_labels(path: str | Path) -> PseudoLabels:
    """Load a pseudo-labels artifact."""
    art = load_artifact(path, kind="pseudo-labels")
    table = table_of(art)
    ids = column(table, "sample_id")
    check_unique(ids, str(art.path))
    return PseudoLabels(art, dict(zip(ids, column(table, "cluster"), strict=True)))


# --- scores ----------------------------------------------------------------------------------
@dataclass
class SetScores:
    """Scores of one benchmark set."""

    dataset: str
    group: str  # id | near | far
    sample_ids: Sequence[str]
    id_score: np.ndarray | Sequence[float]
    pred: np.ndarray | Sequence[int] | None = None
    label: np.ndarray | Sequence[int] | None = None


def scores_features() -> datasets.Features:
    """The schema of a scores artifact's table."""
    return _features(SCORE_TABLE_COLUMNS)


def scores_dataset(sets: Sequence[SetScores]) -> datasets.Dataset:
    """Rows of all sets in the canonical scores schema; OOD rows get label -1."""
    import datasets

    cols: dict[str, list[Any]] = {k: [] for k in scores_features()}
    for s in sets:
        n = len(s.sample_ids)
        scores = np.asarray(s.id_score, dtype=np.float64).reshape(-1)
        if scores.size != n:
            raise ValueError(f"{s.dataset}: {scores.size} scores for {n} samples")
        pred = np.full(n, -1) if s.pred is None else np.asarray(s.pred).reshape(-1)
        label = (
            np.full(n, -1)
            if s.label is None or s.group != "id"
            else np.asarray(s.label).reshape(-1)
        )
        cols["sample_id"] += list(s.sample_ids)
        cols["dataset"] += [s.dataset] * n
        cols["group"] += [s.group] * n
        cols["id_score"] += scores.tolist()
        cols["pred"] += pred.astype(np.int64).tolist()
        cols["label"] += label.astype(np.int64).tolist()
    return datasets.Dataset.from_dict(cols, features=scores_features())


def write_scores(
    out: str | Path,
    sets: Sequence[SetScores],
    params: Mapping[str, Any],
    inputs: Sequence[Mapping[str, Any]] = (),
    summary: Mapping[str, Any] | None = None,
) -> Artifact:
    """Write a scores artifact; ``params['method']`` (and optional ``label``) name the method."""
    return write_artifact(
        out, "scores", params, inputs, dataset=scores_dataset(sets), summary=summary
    )


@dataclass
class ScoreRun:
    """One scores artifact as arrays: the ID test scores and each OOD set's scores."""

    path: Path
    label: str
    id_scores: np.ndarray
    ood: dict[str, tuple[str, np.ndarray]]  # dataset -> (group, id_scores)
    id_accuracy: float | None


def run_label(art: Artifact) -> str:
    """Runs that share a label (seeds of one method) are averaged together."""
    params = ScoresParams.read(art.manifest.params)
    return str(params.label or params.method or "scores")


def read_scores(path: str | Path) -> ScoreRun:
    """Load and validate one scores artifact."""
    art = load_artifact(path, kind="scores")
    ds = table_of(art)
    table = ds.data.table
    group = np.asarray(table.column("group").to_pylist(), dtype=object)
    dataset = np.asarray(table.column("dataset").to_pylist(), dtype=object)
    score = table.column("id_score").to_numpy().astype(np.float64)
    bad_groups = set(group.tolist()) - {"id", *OOD_GROUPS}
    if bad_groups:
        raise OodkitError(f"{art.path}: unknown group(s) {sorted(bad_groups)} (id, near, far)")
    is_id = group == "id"
    try:
        id_scores = as_scores(score[is_id], f"{art.path}: ID set")
    except ValueError as exc:
        raise OodkitError(str(exc)) from None
    ood: dict[str, tuple[str, np.ndarray]] = {}
    for name in dict.fromkeys(dataset[~is_id].tolist()):
        rows = (dataset == name) & ~is_id
        groups = set(group[rows].tolist())
        if len(groups) != 1:
            raise OodkitError(f"{art.path}: dataset {name!r} is tagged with several groups")
        try:
            ood[name] = (groups.pop(), as_scores(score[rows], f"{art.path}: OOD set {name!r}"))
        except ValueError as exc:
            raise OodkitError(str(exc)) from None
    if not ood:
        raise OodkitError(f"{art.path}: OOD set is empty (no rows with group near or far)")
    id_acc = None
    if "pred" in ds.column_names and "label" in ds.column_names:
        pred = table.column("pred").to_numpy()[is_id]
        label = table.column("label").to_numpy()[is_id]
        known = (pred >= 0) & (label >= 0)
        if known.any():
            id_acc = accuracy(pred[known], label[known])
    return ScoreRun(art.path, run_label(art), id_scores, ood, id_acc)


# --- typed manifest sections ------------------------------------------------------------------
# A stage writes its summary through its record and every other module reads another stage's
# params or summary through these records, never by string key. Reading is lenient: a field
# an older artifact lacks reads as None, fields a record does not name are left alone.

R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    """A typed manifest section (``params`` or ``summary``)."""

    @classmethod
    def read(cls: type[R], values: Mapping[str, Any] | None) -> R:
        values = values or {}
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})

    def as_dict(self, given: bool = False) -> dict[str, Any]:
        """The section as recorded; ``given``: only the fields that hold a value."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if v is not None} if given else values


@dataclass(frozen=True)
class DetectorParams(Record):
    """What other stages read of a detector's recipe: its training loss or import source, its
    pseudo-labels (a detector of clusters) and seed."""

    loss: str | None = None
    source: str | None = None
    labels: str | None = None
    seed: int | None = None

    @property
    def clusters(self) -> bool:
        """Trained on pseudo-labels: its classes are clusters, not the data's classes."""
        return self.labels is not None


@dataclass(frozen=True)
class TrainedDetectorSummary(Record):
    final_loss: float | None = None
    id_val_accuracy: float | None = None
    epochs: int | None = None
    seconds: float | None = None
    images_per_s: float | None = None
    num_parameters: int | None = None
    num_classes: int | None = None
    outliers_kept: dict[str, list[int]] | None = None  # per --outliers: [kept, total]
    # per filtered --outliers: mean_ssim, left_source, reached_target of the kept rows
    kept_diagnostics: dict[str, dict[str, float | None]] | None = None


@dataclass(frozen=True)
class ImportedDetectorSummary(Record):
    num_classes: int | None = None
    feature_dim: int | None = None
    parameters: int | None = None


@dataclass(frozen=True)
class TrainedDiffusionSummary(Record):
    final_loss: float | None = None
    steps: int | None = None
    seconds_this_run: float | None = None
    num_parameters: int | None = None


@dataclass(frozen=True)
class ImportedDiffusionParams(Record):
    source: str | None = None
    preset: str | None = None


@dataclass(frozen=True)
class ImportedDiffusionSummary(Record):
    parameters: int | None = None
    image_size: int | None = None
    learned_sigma: bool | None = None  # ADM
    classes: int | None = None  # LDM


@dataclass(frozen=True)
class OutliersSummary(Record):
    """What other modules read of an outliers artifact's summary (the generate stage writes
    more: ranks, the per-start-step table's contents, the judge's shift figures)."""

    count: int | None = None
    mean_ssim: float | None = None
    mean_psnr: float | None = None
    by_start_step: dict[str, Any] | None = None
    judge: str | None = None
    left_source: float | None = None
    reached_target: float | None = None
    auto: dict[str, Any] | None = None  # --t-start auto / --scale auto: the probe's search


@dataclass(frozen=True)
class PseudoLabelSummary(Record):
    """Clustering figures against the ground truth (None without one): the final clusters
    (accuracy, NMI, ARI), k-means on the same features, SCAN before self-labelling."""

    num_clusters: int | None = None
    samples: int | None = None
    accuracy: float | None = None
    nmi: float | None = None
    ari: float | None = None
    kmeans: dict[str, float] | None = None
    before_self_label: dict[str, float] | None = None
    neighbor_purity: float | None = None
    best_head: int | None = None
    seconds_this_run: float | None = None


@dataclass(frozen=True)
class MethodParams(Record):
    """The method a recipe names (scores, outliers, pseudo-labels), for cards and tags."""

    method: str | None = None


@dataclass(frozen=True)
class ScoresParams(Record):
    """What other modules read of a scores artifact's recipe."""

    method: str | None = None
    label: str | None = None
    detector: str | None = None
    benchmark: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class ScoresSummary(Record):
    id_accuracy: float | None = None


@dataclass(frozen=True)
class DiffGuardSummary(ScoresSummary):
    inversion_steps: dict[str, float] | None = None  # mean / min / max inversion depth
    images_per_s_this_run: float | None = None


@dataclass(frozen=True)
class MetricsSummary(Record):
    auroc: dict[str, dict[str, Any]] | None = None  # method → group → AUROC
    below_chance: list[dict[str, Any]] | None = None
