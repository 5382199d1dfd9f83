"""``oodkit push`` against a stub of the Hub client that records every call and keeps the
committed files, and ``hub:OWNER/NAME`` loading back from it (no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard, ModelCard
from PIL import Image
from typer.testing import CliRunner

from oodkit.artifacts import load_artifact, verify_artifact, write_artifact
from oodkit.cli import app
from oodkit.diffusion.denoisers import describe_model, load_denoiser, model_input
from oodkit.schemas import outlier_features
from oodkit.stages.push import size_category

runner = CliRunner()


class StubHub:
    """The parts of ``HfApi`` and ``snapshot_download`` that oodkit uses, in a folder."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls, self.commits = root, [], []

    def api(self) -> object:
        hub = self

        class Api:
            def create_repo(self, repo_id, *, repo_type=None, private=False, exist_ok=False):
                hub.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))

            def list_repo_files(self, repo_id, *, repo_type=None):
                folder = hub.latest(repo_id, repo_type)
                if folder is None:
                    return []
                return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]

            def create_commit(self, repo_id, *, operations, commit_message, repo_type=None):
                files, deleted = {}, []
                for op in operations:
                    if not hasattr(op, "path_or_fileobj"):
                        deleted.append(op.path_in_repo)
                        continue
                    src = op.path_or_fileobj
                    if isinstance(src, (str, Path)):
                        data = Path(src).read_bytes()
                    elif isinstance(src, bytes):
                        data = src
                    else:
                        data = src.read()
                    files[op.path_in_repo] = data
                sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
                folder = hub.root / (repo_type or "model") / repo_id / sha
                for rel, data in files.items():
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    (folder / rel).write_bytes(data)
                hub.calls.append(("create_commit", repo_id, repo_type, commit_message))
                hub.commits.append(
                    SimpleNamespace(repo=repo_id, type=repo_type, files=files, deleted=deleted)
                )
                return SimpleNamespace(oid=sha)

        return Api

    def latest(self, repo_id: str, repo_type: str | None) -> Path | None:
        repo = self.root / (repo_type or "model") / repo_id
        shas = sorted(repo.iterdir(), key=lambda p: p.stat().st_mtime) if repo.exists() else []
        return shas[-1] if shas else None

    def snapshot_download(self, repo_id, *, revision=None, repo_type=None, **kwargs):
        folder = self.latest(repo_id, repo_type)
        if folder is None:
            raise FileNotFoundError(f"404 Client Error: {repo_id} not found")
        return str(folder.parent / revision) if revision else str(folder)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> StubHub:
    import huggingface_hub

    stub = StubHub(tmp_path / "hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", stub.api())
    monkeypatch.setattr(huggingface_hub, "snapshot_download", stub.snapshot_download)
    return stub


def _outliers(tmp_path: Path) -> Path:
    rows = 3
    table = datasets.Dataset.from_dict(
        {
            "image": [Image.new("L", (8, 8), 40 * i) for i in range(rows)],
            "sample_id": [f"s{i}" for i in range(rows)],
            "source_id": [f"src{i}" for i in range(rows)],
            "source_label": [i for i in range(rows)],
            "condition": ["3"] * rows,
            "id_condition": ["0"] * rows,
            "ood_condition": [None] * rows,
            "t_start": [10] * rows,
            "start_timestep": [100] * rows,
            "method": ["sd"] * rows,
            "seed": [7, 8, 9],
            "ssim": [0.5] * rows,
            "psnr": [20.0] * rows,
        },
        features=outlier_features(),
    )

    def preview(folder: Path) -> None:
        Image.new("L", (16, 16)).save(folder / "preview.png")

    inputs = [{"kind": "hub-model", "path": "someone/ddpm", "fingerprint": "a" * 40}]
    return write_artifact(
        tmp_path / "outliers",
        "outliers",
        {"method": "sd", "seed": 7},
        inputs,
        dataset=table,
        write_files=preview,
    ).path


def test_a_table_is_one_commit_with_parquet_card_manifest_and_preview(hub, tmp_path) -> None:
    art = load_artifact(_outliers(tmp_path))
    result = runner.invoke(
        app, ["push", str(art.path), "--repo-id", "me/outliers", "--license", "cc-by-4.0"]
    )
    assert result.exit_code == 0, result.output
    assert "https://huggingface.co/datasets/me/outliers" in result.output
    assert [c[0] for c in hub.calls] == ["create_repo", "create_commit"]
    assert hub.calls[0] == ("create_repo", "me/outliers", "dataset", False, True)
    (commit,) = hub.commits
    assert sorted(commit.files) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "oodkit.json",
        "preview.png",
    ]
    assert json.loads(commit.files["oodkit.json"]) == json.loads(
        (art.path / "oodkit.json").read_text()
    )
    # the Parquet shard holds the table with its images embedded (readable without the artifact)
    (snapshot,) = (hub.root / "dataset" / "me" / "outliers").iterdir()
    pushed = datasets.Dataset.from_parquet(str(snapshot / "data/train-00000-of-00001.parquet"))
    local = art.dataset()
    assert pushed.column_names == local.column_names and pushed["seed"] == local["seed"]
    assert [np.asarray(im).tolist() for im in pushed["image"]] == [
        np.asarray(im).tolist() for im in local["image"]
    ]
    # the card: datasets' metadata kept, license, categories, columns and provenance added
    card = DatasetCard(commit.files["README.md"].decode())
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"
    assert data["task_categories"] == ["image-classification"]
    assert data["size_categories"] == ["n<1K"]
    assert {"oodkit", "outliers", "sd"} <= set(data["tags"])
    assert [f["name"] for f in data["dataset_info"]["features"]] == local.column_names
    assert data["dataset_info"]["splits"][0]["num_examples"] == 3
    assert data["configs"][0]["data_files"][0]["path"] == "data/train-*"
    for text in (
        "| `ssim` |",
        "SSIM of the outlier to its source",
        art.manifest.command,
        "seed = 7",
        "[someone/ddpm](https://huggingface.co/someone/ddpm)",
        art.manifest.fingerprint,
    ):
        assert text in card.text, text
    assert verify_artifact(art.path)  # the push left the artifact intact (no cache files)
    assert commit.deleted == []


def test_size_categories_follow_the_hub_bins() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 50_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]


def test_a_detector_pushes_as_a_model_and_scores_identically_from_the_hub(
    hub, ce_detector, tmp_path
) -> None:
    result = runner.invoke(app, ["push", str(ce_detector), "--repo-id", "me/det"])
    assert result.exit_code == 0, result.output
    assert "https://huggingface.co/me/det" in result.output
    (commit,) = hub.commits
    assert commit.type == "model"
    assert {"README.md", "oodkit.json", "config.json", "model.safetensors"} <= set(commit.files)
    assert not [f for f in commit.files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    card = ModelCard(commit.files["README.md"].decode())
    assert card.data.pipeline_tag == "image-classification"
    assert "license" not in card.data.to_dict() and "License: not stated." in card.text

    args = ["score", "-b", "digits", "--method", "energy", "--limit", "30", "--quiet"]
    local = runner.invoke(
        app, [*args, "--detector", str(ce_detector), "--out", str(tmp_path / "a")]
    )
    remote = runner.invoke(app, [*args, "--detector", "hub:me/det", "--out", str(tmp_path / "b")])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    a, b = load_artifact(tmp_path / "a"), load_artifact(tmp_path / "b")
    assert a.dataset()["id_score"] == b.dataset()["id_score"]
    (det_input,) = [i for i in b.manifest.inputs if i["kind"] == "detector"]
    assert det_input["path"].startswith("hub:me/det@") and len(det_input["path"]) == 51
    assert det_input["fingerprint"] == load_artifact(ce_detector).manifest.fingerprint
    assert b.manifest.params["detector"] == det_input["path"]  # no local cache path recorded
    assert verify_artifact("hub:me/det").ref == det_input["path"]  # card and all, intact


def test_a_second_push_deletes_what_the_first_left(hub, tmp_path) -> None:
    old = hub.root / "dataset" / "me" / "outliers" / ("0" * 40)
    for rel in ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"):
        (old / rel).parent.mkdir(parents=True, exist_ok=True)
        (old / rel).write_bytes(b"old rows")
    (old / ".gitattributes").write_text("*.parquet filter=lfs\n")
    art = _outliers(tmp_path)
    result = runner.invoke(app, ["push", str(art), "--repo-id", "me/outliers"])
    assert result.exit_code == 0, result.output
    (commit,) = hub.commits
    assert commit.deleted == [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    ]
    assert "data/train-00000-of-00001.parquet" in commit.files


def test_a_diffusion_model_pushes_and_loads_back_by_hub_reference(hub, class_model) -> None:
    result = runner.invoke(app, ["push", str(class_model), "--repo-id", "me/ddpm"])
    assert result.exit_code == 0, result.output
    (commit,) = hub.commits
    assert "unet/diffusion_pytorch_model.safetensors" in commit.files
    spec = describe_model("hub:me/ddpm")
    assert spec.kind == "class" and spec.image_size == 16
    entry = model_input("hub:me/ddpm", spec)
    assert entry["path"].startswith("hub:me/ddpm@")
    assert entry["fingerprint"] == load_artifact(class_model).manifest.fingerprint
    ours, theirs = load_denoiser("hub:me/ddpm", spec=spec), load_denoiser(str(class_model))
    a, b = ours.unet.state_dict(), theirs.unet.state_dict()
    assert all((a[k] == b[k]).all() for k in a)


def test_pickle_files_are_never_pushed(hub, tmp_path) -> None:
    def files(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"pickle")

    write_artifact(tmp_path / "det", "detector", {}, write_files=files)
    result = runner.invoke(app, ["push", str(tmp_path / "det"), "--repo-id", "me/det"])
    assert result.exit_code == 2 and "pickle file" in result.stderr and not hub.calls


def test_a_hub_failure_is_one_line(hub, make_scores, monkeypatch) -> None:
    import huggingface_hub

    class Refusing:
        def create_repo(self, *args, **kwargs):
            raise OSError("401 Client Error: Unauthorized for url\nmore lines\nof detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    scores = make_scores("s", {"test": ("id", [1.0]), "far": ("far", [0.0])})
    result = runner.invoke(app, ["push", str(scores), "--repo-id", "me/s"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: cannot push to me/s: OSError: 401 Client Error: Unauthorized for url"
    ]
    missing = runner.invoke(
        app,
        ["score", "--detector", "hub:me/nothing", "-b", "digits", "--method", "msp", "--out", "x"],
    )
    assert missing.exit_code == 2 and "cannot fetch hub:me/nothing" in missing.stderr
