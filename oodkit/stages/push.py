"""Push an artifact to the Hugging Face Hub as one commit with a card built from its manifest.

Tables (outliers, pseudo-labels, scores, syntheses, metrics) go to a dataset repo as Parquet
shards with their images embedded, the layout ``Dataset.push_to_hub`` writes, plus the
manifest, previews and plots; detectors and diffusion models go to a model repo with every
file of the artifact (safetensors weights only). The card keeps the ``datasets`` metadata
(``dataset_info``, ``configs``) and adds license, task and size categories, column
descriptions and how the artifact was made. ``hub:OWNER/NAME`` loads a pushed model back.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from oodkit.artifacts import DATA_DIR, Artifact, artifact_files, load_artifact
from oodkit.errors import OodkitError, first_line
from oodkit.hub import PREFIX, check_license, check_repo_id, client, offline, parse_ref
from oodkit.schemas import COLUMN_DOCS, MethodParams

MODEL_KINDS = ("detector", "diffusion-model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SHARD_BYTES = 500 << 20  # push_to_hub's default max_shard_size
SIZE_BINS = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
WHAT = {
    "outliers": "Synthetic outliers generated from in-distribution images by a diffusion model",
    "pseudo-labels": "Cluster assignments (pseudo-labels) of an unlabelled in-distribution set",
    "scores": "Per-sample OOD scores (higher = in-distribution) of a benchmark's sets",
    "syntheses": "DiffGuard inputs with their unguided and guided re-syntheses",
    "metrics": "OOD-detection metrics (AUROC, AUPR, FPR@95) per OOD set",
    "detector": "An image classifier trained for out-of-distribution detection",
    "diffusion-model": "A class-conditional pixel diffusion model (diffusers UNet2DModel)",
}


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bin of a row count."""
    return next((name for limit, name in SIZE_BINS if rows < limit), "n>1B")


def _repo_type(art: Artifact) -> str:
    return "model" if art.kind in MODEL_KINDS else "dataset"


def _provenance(art: Artifact) -> list[str]:
    """How it was made: command, seeds, inputs (Hub inputs as links), fingerprints."""
    m = art.manifest
    lines = [
        "## How it was made",
        "",
        f"Made by oodkit {m.oodkit_version} on {m.created} with:",
        "",
        "```",
        m.command,
        "```",
        "",
    ]
    seeds = {k: v for k, v in m.params.items() if "seed" in k}
    if seeds:
        lines += [f"- seeds: {', '.join(f'{k} = {v}' for k, v in seeds.items())}"]
    lines += [
        f"- content fingerprint: `{m.fingerprint}`",
        f"- format version: {m.format_version}",
    ]
    if m.inputs:
        lines += ["", "### Inputs", ""]
        for i in m.inputs:
            lines.append(
                f"- {i.get('kind')}: {_link(str(i.get('path')))} "
                f"(fingerprint / revision `{i.get('fingerprint')}`)"
            )
    lines += ["", "### Parameters", "", "```json", json.dumps(m.params, indent=2), "```"]
    if m.summary:
        lines += ["", "### Summary", "", "```json", json.dumps(m.summary, indent=2), "```"]
    return lines


def _link(path: str) -> str:
    """A Hub reference as a link; a local path as code."""
    if path.startswith(PREFIX):
        repo, rev = parse_ref(path)
        url = f"https://huggingface.co/{repo}" + (f"/tree/{rev}" if rev else "")
        return f"[{path}]({url})"
    if "/" in path and not path.startswith((".", "/", "~")) and not Path(path).exists():
        return f"[{path}](https://huggingface.co/{path})"  # a Hub model id
    return f"`{path}`"


def _columns(features: Any) -> list[str]:
    lines = ["## Columns", "", "| column | type | description |", "|---|---|---|"]
    for name, feature in features.items():
        kind = type(feature).__name__ if not hasattr(feature, "dtype") else feature.dtype
        lines.append(f"| `{name}` | {kind} | {COLUMN_DOCS.get(name, '')} |")
    return lines


def _header(art: Artifact, license: str | None, rows: int | None) -> dict[str, Any]:
    method = MethodParams.read(art.manifest.params).method
    tags = ["oodkit", art.kind, "out-of-distribution-detection"]
    tags += [str(method)] if isinstance(method, str) else []
    data: dict[str, Any] = {"tags": tags, "license": license}
    if art.kind in MODEL_KINDS:
        data["library_name"] = "diffusers" if art.kind == "diffusion-model" else "timm"
        data["pipeline_tag"] = (
            "image-classification" if art.kind == "detector" else "unconditional-image-generation"
        )
    else:
        data["task_categories"] = ["image-classification"]
        data["size_categories"] = [size_category(rows or 0)]
        data["pretty_name"] = f"oodkit {art.kind}"
    return {k: v for k, v in data.items() if v is not None}


def build_card(art: Artifact, license: str | None = None) -> str:
    """The README.md: Hub metadata (YAML) and a body from the manifest."""
    from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

    ds = art.dataset() if art.kind not in MODEL_KINDS and art.has_data else None
    rows = len(ds) if ds is not None else None
    header = _header(art, license, rows)
    body = [f"# oodkit {art.kind}", "", WHAT.get(art.kind, "") + "."]
    body += ["", f"License: {license}" if license else "License: not stated."]
    if ds is not None:
        body += ["", f"{rows} rows.", ""] + _columns(ds.features)
    body += [""] + _provenance(art)
    text = "\n".join(body) + "\n"
    if art.kind in MODEL_KINDS:
        return str(ModelCard(f"---\n{ModelCardData(**header).to_yaml()}\n---\n\n{text}"))
    data = DatasetCardData(**header)
    if ds is not None:
        _datasets_metadata(ds, data)
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{text}"))


def _datasets_metadata(ds: Any, data: Any) -> None:
    """``dataset_info`` and ``configs``, as ``push_to_hub`` writes them, into ``data``."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs

    info = DatasetInfo(features=ds.features)
    info.splits = SplitDict()
    info.splits.add(SplitInfo(name="train", num_bytes=ds.data.nbytes, num_examples=len(ds)))
    info.dataset_size = ds.data.nbytes
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    configs = {"default": {"data_files": [{"split": "train", "path": f"{DATA_DIR}/train-*"}]}}
    MetadataConfigs(configs).to_dataset_card_data(data)


@contextmanager
def _parquet_shards(ds: Any) -> Iterator[list[tuple[str, Path]]]:
    """The table as Parquet shards ``data/train-{i:05d}-of-{n:05d}.parquet`` (the layout
    ``push_to_hub`` writes) with images embedded."""
    from datasets.table import embed_table_storage

    n = max(1, math.ceil(ds.data.nbytes / SHARD_BYTES))
    with tempfile.TemporaryDirectory(prefix="oodkit-push-") as tmp:
        out = []
        for i in range(n):
            shard = ds.shard(num_shards=n, index=i, contiguous=True)
            # in memory: a map on a memory-mapped artifact would add cache files to it
            shard = shard.with_format("arrow").map(
                embed_table_storage, batched=True, batch_size=1000, keep_in_memory=True
            )
            path = Path(tmp) / f"train-{i:05d}-of-{n:05d}.parquet"
            shard.with_format(None).to_parquet(str(path), batch_size=1000)
            out.append((f"{DATA_DIR}/{path.name}", path))
        yield out


def _artifact_files(art: Artifact, skip_data: bool) -> list[tuple[str, Path]]:
    files = []
    for f in artifact_files(art.path):
        rel = f.relative_to(art.path).as_posix()
        if skip_data and rel.split("/")[0] == DATA_DIR:
            continue
        if rel == "README.md":
            continue
        if f.suffix.lower() in PICKLE_SUFFIXES:
            raise OodkitError(
                f"{f} is a pickle file: oodkit pushes safetensors weights only; "
                "convert it or remove it from the artifact"
            )
        files.append((rel, f))
    return files


def push_artifact(
    path: str | Path, repo_id: str, *, private: bool = False, license: str | None = None
) -> str:
    """Push ``path`` to ``repo_id`` in one commit; return the repo's URL."""
    check_repo_id(repo_id)
    check_license(license)
    art = load_artifact(path)
    repo_type = _repo_type(art)
    if repo_type == "dataset" and not art.has_data:
        raise OodkitError(f"{art.path} ({art.kind}) has no tabular data to push")
    files = _artifact_files(art, skip_data=repo_type == "dataset")
    if offline():
        raise OodkitError(
            "cannot push: HF_HUB_OFFLINE is set (the Hugging Face Hub is not reachable)"
        )
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    card = build_card(art, license)
    with _parquet_shards(art.dataset()) if repo_type == "dataset" else nullcontext([]) as shards:
        ops = [CommitOperationAdd(path_in_repo=r, path_or_fileobj=str(f)) for r, f in shards]
        ops += [CommitOperationAdd(path_in_repo=r, path_or_fileobj=str(f)) for r, f in files]
        ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        try:
            api = client()
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            ops += [
                CommitOperationDelete(path_in_repo=f)
                for f in stale_files(api.list_repo_files(repo_id, repo_type=repo_type), ops)
            ]
            api.create_commit(
                repo_id,
                operations=ops,
                commit_message=f"oodkit push: {art.kind} {art.manifest.fingerprint[:12]}",
                repo_type=repo_type,
            )
        except Exception as exc:  # noqa: BLE001 - network, auth and HTTP errors come in many types
            raise OodkitError(
                f"cannot push to {repo_id}: {first_line(exc, with_type=True)}"
            ) from None
    prefix = "" if repo_type == "model" else "datasets/"
    return f"https://huggingface.co/{prefix}{repo_id}"


def stale_files(existing: list[str], ops: list[Any]) -> list[str]:
    """Files of an earlier push that this one does not rewrite (old shards, old weights): the
    commit deletes them, so a re-push never mixes old and new rows. The Hub's own
    ``.gitattributes`` stays."""
    new = {op.path_in_repo for op in ops}
    return sorted(f for f in existing if f not in new and f != ".gitattributes")
