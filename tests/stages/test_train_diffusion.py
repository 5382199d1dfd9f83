"""Class-conditional diffusion training on digits: recognisable samples, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from oodkit.cli import app
from oodkit.outcome import paused
from oodkit.stages.train_diffusion.run import DiffusionOptions, train_diffusion

runner = CliRunner()


def _unet(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))


def test_pause_and_resume_reach_the_same_weights(tmp_path: Path) -> None:
    opts = DiffusionOptions(steps=30, checkpoint_every=10, batch_size=16)
    whole = train_diffusion("digits", tmp_path / "whole", opts, quiet=True)
    stopped = train_diffusion("digits", tmp_path / "r", opts, stop_after_steps=10, quiet=True)
    assert stopped == paused(tmp_path / "r.partial")
    assert (tmp_path / "r.partial" / "samples-step0000010.png").exists()
    refused = runner.invoke(
        app,
        [
            "train",
            "diffusion",
            "--id",
            "digits",
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "30",
            "--checkpoint-every",
            "10",
            "--batch-size",
            "16",
            "--quiet",
        ],
    )
    assert refused.exit_code == 2 and "--resume" in refused.stderr
    resumed = train_diffusion("digits", tmp_path / "r", opts, resume=True, quiet=True)
    a, b = _unet(whole.path), _unet(resumed.path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.manifest.fingerprint == whole.manifest.fingerprint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "--preset must be one of"),
        (["--betas", "quadratic"], "--betas must be one of"),
        (["--p-uncond", "1.5"], "--p-uncond must lie in"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["train", "diffusion", "--id", "digits", "--out", str(tmp_path / "x"), *args]
    )
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, torchrun) -> None:
    """torchrun, 2 CPU processes: the global batch is split, the weights match one process."""
    import json

    args = ["train", "diffusion", "--id", "digits", "--steps", "12", "--batch-size", "32"]
    args += ["--checkpoint-every", "6", "--quiet"]
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [json.loads((tmp_path / d / "train_log.json").read_text()) for d in ("one", "two")]
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-4)
    a, b = _unet(tmp_path / "one"), _unet(tmp_path / "two")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    odd = torchrun([*args[:-1], "--batch-size", "33", "--quiet", "--out", str(tmp_path / "x")])
    assert "error: --batch-size 33 does not split over 2 processes" in odd.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
