"""Shared fixtures. Tests never reach the network: the Hub is forced offline."""

from __future__ import annotations

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

from oodkit.schemas import SetScores, write_scores  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory) -> None:
    """Tests never read or fill the user's feature cache."""
    os.environ["OODKIT_CACHE"] = str(tmp_path_factory.mktemp("oodkit-cache"))


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
