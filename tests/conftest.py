"""Shared fixtures. Tests never reach the network: the Hub is forced offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from oodkit.artifacts import write_artifact  # noqa: E402
from oodkit.schemas import SetScores, write_scores  # noqa: E402


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "threads(n): torch CPU threads for the tests of a module")


@pytest.fixture(autouse=True)
def _threads(request) -> None:
    """Explicit torch CPU threads for every test (2 unless a module marks ``threads(n)``)."""
    import torch

    marker = request.node.get_closest_marker("threads")
    torch.set_num_threads(marker.args[0] if marker else 2)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny, randomly initialised Stable Diffusion folder (built from configs, offline)."""
    from oodkit.testing import build_tiny_stable_diffusion

    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="session")
def class_model(tmp_path_factory) -> Path:
    """A randomly initialised tiny class-conditional model artifact (5 digit classes)."""
    import torch
    from diffusers import DDIMScheduler

    from oodkit.diffusion.unets import build_unet

    torch.manual_seed(0)
    unet = build_unet("tiny", 16, 1, 5)
    info = {"num_classes": 5, "null_class": 5, "channels": 1, "image_size": 16, "class_names": None}

    def files(folder: Path) -> None:
        unet.save_pretrained(str(folder / "unet"))
        DDIMScheduler(clip_sample=False).save_pretrained(str(folder / "scheduler"))
        (folder / "oodkit_model.json").write_text(json.dumps(info))

    return write_artifact(
        tmp_path_factory.mktemp("cm") / "model", "diffusion-model", {}, write_files=files
    ).path


@pytest.fixture(scope="session")
def detector_options():
    """``TrainOptions`` of the small digits detector (the demo's recipe), with overrides."""
    from oodkit.demo import DEMO_ARCH_KWARGS
    from oodkit.stages.train_detector.options import TrainOptions

    base = dict(epochs=15, batch_size=32, lr=0.1, augment="crop", arch_kwargs=DEMO_ARCH_KWARGS)

    def make(**kw):
        return TrainOptions(**{**base, "seed": 0, **kw})

    return make


@pytest.fixture(scope="session")
def ce_detector(tmp_path_factory, detector_options) -> Path:
    """A small ce detector trained on digits (2 threads, seed 0; ~97 % ID accuracy)."""
    import torch

    from oodkit.stages.train_detector.run import train_detector

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("det") / "ce"
    train_detector("digits", out, detector_options(), quiet=True)
    return out


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory) -> None:
    """Tests never read or fill the user's feature cache."""
    os.environ["OODKIT_CACHE"] = str(tmp_path_factory.mktemp("oodkit-cache"))


@pytest.fixture(scope="session")
def perceptual_weights(tmp_path_factory) -> Path:
    """Random perceptual weights under the real file names (``oodkit.testing``)."""
    from oodkit.testing.tiny_models import write_random_perceptual_weights

    return write_random_perceptual_weights(tmp_path_factory.mktemp("perceptual-weights"))


def scores_table(case: str = ""):
    """A tiny scores table (ID rows i0, i1 in set ``test``, near row o0 in set ``ood``) broken
    as ``case`` says: nan, inf, no-id, no-ood, empty or missing-column ("" = intact)."""
    import datasets

    cols = {
        "sample_id": ["i0", "i1", "o0"],
        "dataset": ["test", "test", "ood"],
        "group": ["id", "id", "near"],
        "id_score": [1.0, 2.0, 0.5],
    }
    if case == "nan":
        cols["id_score"][1] = float("nan")
    elif case == "inf":
        cols["id_score"][2] = float("inf")
    elif case == "no-id":
        cols["group"] = ["near"] * 3
    elif case == "no-ood":
        cols["group"] = ["id"] * 3
    elif case == "empty":
        cols = {k: v[:0] for k, v in cols.items()}
    elif case == "missing-column":
        del cols["id_score"]
    features = {k: datasets.Value("float64" if k == "id_score" else "string") for k in cols}
    return datasets.Dataset.from_dict(cols, features=datasets.Features(features))


@pytest.fixture(scope="session")
def broken_scores():
    """``scores_table`` for tests (conftest helpers are reached through fixtures)."""
    return scores_table


@pytest.fixture
def make_scores(tmp_path: Path):
    """Write a scores artifact from {dataset: (group, scores)} plus optional ID preds/labels."""

    def make(
        name: str,
        sets: dict[str, tuple[str, Sequence[float]]],
        method: str = "energy",
        pred: Sequence[int] | None = None,
        label: Sequence[int] | None = None,
        seed: int = 0,
    ) -> Path:
        items = []
        for ds_name, (group, scores) in sets.items():
            ids = [f"{ds_name}/{i}" for i in range(len(scores))]
            items.append(
                SetScores(
                    ds_name,
                    group,
                    ids,
                    np.asarray(scores, dtype=float),
                    pred if group == "id" else None,
                    label if group == "id" else None,
                )
            )
        out = tmp_path / name
        write_scores(out, items, {"method": method, "seed": seed})
        return out

    return make


@pytest.fixture
def gloo_ranks():
    """Run a Python ``script`` (with ``args``) as ranks 0 and 1 of a real gloo process group
    on this host; returns each rank's (return code, stdout, stderr)."""
    import socket

    def run(script: str, *args: str) -> list[tuple[int, str, str]]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
        env |= {"MASTER_PORT": str(port), "WORLD_SIZE": "2"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, *args],
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in range(2)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]

    return run


@pytest.fixture
def torchrun():
    """Run ``oodkit ARGS`` in two CPU processes, as ``accelerate launch --multi_gpu`` does.

    torchrun, because ``accelerate launch --cpu --num_processes 2`` starts one process only;
    Accelerator picks up the process group from the environment torchrun sets.
    """

    def run(args: Sequence[str]) -> subprocess.CompletedProcess:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        return subprocess.run(
            [*launch, "-m", "oodkit.cli", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    return run


@pytest.fixture
def interrupt_shards(monkeypatch):
    """``arm(n)``: the shard writer dies (KeyboardInterrupt) after ``n`` shards; ``arm``
    returns a function that restores it, as a kill and a restart would."""
    from oodkit.artifacts import ShardedWriter

    original = ShardedWriter.write_shard

    def arm(n: int):
        count = {"n": 0}

        def dying(self, keys, rows):
            if count["n"] == n:
                raise KeyboardInterrupt
            count["n"] += 1
            return original(self, keys, rows)

        monkeypatch.setattr(ShardedWriter, "write_shard", dying)
        return lambda: monkeypatch.setattr(ShardedWriter, "write_shard", original)

    return arm
