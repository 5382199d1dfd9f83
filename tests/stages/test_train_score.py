"""Detector training and scoring on digits: accuracy, pytorch-ood agreement, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from pytorch_ood.detector import EnergyBased, MaxLogit, MaxSoftmax
from safetensors.torch import load_file
from typer.testing import CliRunner

from oodkit.artifacts import load_artifact, write_artifact
from oodkit.cli import app
from oodkit.data.images import eval_transform
from oodkit.data.sources import get_benchmark
from oodkit.demo import DEMO_ARCH_KWARGS
from oodkit.models.detector import load_detector
from oodkit.outcome import paused
from oodkit.schemas import outlier_features
from oodkit.stages.score.run import score
from oodkit.stages.train_detector.run import TrainOptions, train_detector

runner = CliRunner()


@pytest.fixture(scope="module")
def outliers(tmp_path_factory) -> Path:
    """A stand-in outliers artifact: inverted ID training images paired with their sources."""
    train = get_benchmark("digits").load("id_train").select(range(120))
    out = tmp_path_factory.mktemp("outl") / "inverted"
    ds = datasets.Dataset.from_dict(
        {
            "image": [ImageOps.invert(im) for im in train["image"]],
            "sample_id": [f"inv/{s}" for s in train["sample_id"]],
            "source_id": train["sample_id"],
            "source_label": train["label"],
            "condition": ["invert"] * len(train),
            "id_condition": [str(y) for y in train["label"]],
            "ood_condition": ["invert"] * len(train),
            "t_start": [0] * len(train),
            "start_timestep": [-1] * len(train),
            "method": ["test"] * len(train),
            "seed": [0] * len(train),
            "ssim": [0.0] * len(train),
            "psnr": [0.0] * len(train),
        },
        features=outlier_features(),
    )
    return write_artifact(out, "outliers", {"method": "invert"}, dataset=ds).path


def test_ce_detector_reaches_97_percent(ce_detector: Path, tmp_path: Path) -> None:
    art = score(ce_detector, "digits", ["energy"], tmp_path / "s")[0]
    assert art.manifest.summary["id_accuracy"] >= 0.97
    manifest = load_artifact(ce_detector, kind="detector").manifest
    assert manifest.params["loss"] == "ce" and manifest.params["lr"] == 0.1
    assert manifest.summary["id_val_accuracy"] >= 0.95 and manifest.summary["final_loss"] < 0.2
    assert {"model.safetensors", "config.json", "train_log.json"} <= {
        p.name for p in ce_detector.iterdir()
    }


def _by_set(art) -> dict[str, np.ndarray]:
    table = art.dataset()
    out: dict[str, list] = {}
    for name, s in zip(table["dataset"], table["id_score"], strict=True):
        out.setdefault(name, []).append(s)
    return {k: np.asarray(v) for k, v in out.items()}


def test_scores_equal_pytorch_ood_on_the_trained_model(ce_detector: Path, tmp_path: Path) -> None:
    arts = score(ce_detector, "digits", "msp,energy,maxlogit,knn", tmp_path / "s", cache=False)
    got = {a.manifest.params["method"]: _by_set(a) for a in arts}
    model = load_detector(ce_detector)
    bench = get_benchmark("digits")
    transform = eval_transform(model.config)

    def batch(key: str) -> torch.Tensor:
        return torch.stack([transform(im) for im in bench.load(key)["image"]])

    logits_fn = lambda x: model(x)["logits"]  # noqa: E731
    with torch.no_grad():
        train_feats = model(batch("id_train"))["features"].double()
        for key, name in [
            ("id_test", "digits-0-4"),
            ("digits-5-9", "digits-5-9"),
            ("photo-patches", "photo-patches"),
        ]:
            x = batch(key)
            np.testing.assert_allclose(
                got["msp"][name], -MaxSoftmax(logits_fn).predict(x).numpy(), atol=1e-5
            )
            np.testing.assert_allclose(
                got["energy"][name], -EnergyBased(logits_fn).predict(x).numpy(), atol=1e-5
            )
            np.testing.assert_allclose(
                got["maxlogit"][name], -MaxLogit(logits_fn).predict(x).numpy(), atol=1e-5
            )
            f = model(x)["features"].double()
            n = lambda z: z / z.norm(dim=1, keepdim=True)  # noqa: E731
            kth = (torch.cdist(n(f), n(train_feats)) ** 2).sort(dim=1).values[:, 49]
            np.testing.assert_allclose(got["knn"][name], -kth.numpy(), atol=1e-5)


def test_cached_features_give_the_same_scores(
    ce_detector: Path, tmp_path: Path, monkeypatch
) -> None:
    from oodkit.scoring import features

    first = score(ce_detector, "digits", ["knn"], tmp_path / "a")[0]
    assert list(features.cache_root().glob("*.safetensors"))

    def no_network(*_args, **_kwargs):
        raise AssertionError("features were recomputed instead of read from the cache")

    monkeypatch.setattr(features, "extract", no_network)
    again = score(ce_detector, "digits", ["knn"], tmp_path / "b")[0]
    assert again.manifest.fingerprint == first.manifest.fingerprint
    with pytest.raises(AssertionError, match="recomputed"):
        score(ce_detector, "digits", ["knn"], tmp_path / "c", cache=False)


def test_a_method_records_only_the_reference_sets_it_needs(ce_detector: Path, tmp_path) -> None:
    """energy scored alone and then next to knn is the same artifact (the ID-train set knn
    needs is knn's input, not energy's): the second call reuses it."""
    alone = score(ce_detector, "digits", "energy", tmp_path / "s" / "energy", cache=False)[0]
    assert not any(i.get("path", "").endswith(":id_train") for i in alone.manifest.inputs)
    both = score(ce_detector, "digits", "knn,energy", tmp_path / "s", cache=False)
    again = next(a for a in both if a.manifest.params["method"] == "energy")
    assert again.manifest.fingerprint == alone.manifest.fingerprint
    knn = next(a for a in both if a.manifest.params["method"] == "knn")
    assert any(i.get("path", "").endswith(":id_train") for i in knn.manifest.inputs)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_pause_and_resume_gives_identical_weights(detector_options, tmp_path: Path) -> None:
    o = detector_options(loss="oe", epochs=3, batch_size=64)
    outl = ("digits:photo-patches-train",)
    whole = train_detector("digits", tmp_path / "whole", o, outliers=outl, quiet=True)
    out = tmp_path / "paused"
    stopped = train_detector("digits", out, o, outliers=outl, stop_after_epochs=1, quiet=True)
    assert stopped == paused(Path(f"{out}.partial")) and not stopped
    assert not out.exists() and (tmp_path / "paused.partial" / "checkpoint.pt").exists()
    result = runner.invoke(
        app,
        [
            "train",
            "detector",
            "--id",
            "digits",
            "--out",
            str(out),
            "--loss",
            "oe",
            "--outliers",
            outl[0],
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--augment",
            "crop",
            "--arch-kwargs",
            json.dumps(DEMO_ARCH_KWARGS),
            "--quiet",
        ],
    )
    assert result.exit_code == 2 and "--resume" in result.stderr
    assert (
        train_detector(
            "digits", out, o, outliers=outl, resume=True, stop_after_epochs=1, quiet=True
        )
        == stopped
    )
    resumed = train_detector("digits", out, o, outliers=outl, resume=True, quiet=True)
    a, b = _weights(whole.path), _weights(resumed.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.manifest.fingerprint == whole.manifest.fingerprint
    assert not (tmp_path / "paused.partial").exists()


KILL = """
import torch
torch.set_num_threads(2)  # same as the test process: CPU kernels sum in thread-dependent order
from oodkit.stages.train_detector.run import TrainOptions, train_detector
train_detector("digits", {out!r}, TrainOptions(**{opts!r}), quiet=True)
"""


def test_sigkill_then_resume_gives_identical_weights(tmp_path: Path) -> None:
    o = dict(epochs=4, batch_size=64, lr=0.1, augment="crop", arch_kwargs=DEMO_ARCH_KWARGS, seed=3)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL.format(out=str(out), opts=o)])
    ckpt = tmp_path / "killed.partial" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not out.exists()
    assert (tmp_path / "killed.lock").exists()  # stale: its kernel lock died with the process
    resumed = train_detector("digits", out, TrainOptions(**o), resume=True, quiet=True)
    assert not (tmp_path / "killed.lock").exists()
    whole = train_detector("digits", tmp_path / "whole", TrainOptions(**o), quiet=True)
    a, b = _weights(whole.path), _weights(resumed.path)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_writers_on_one_out_one_wins_with_an_uninterrupted_result(tmp_path: Path) -> None:
    """Two real ``oodkit train detector`` runs on one --out: the second gets one line naming
    the first, which finishes with the artifact an undisturbed run makes."""
    o = dict(epochs=20, batch_size=64, lr=0.1, augment="crop", arch_kwargs=DEMO_ARCH_KWARGS, seed=3)
    out = tmp_path / "det"
    script = Path(sys.executable).parent / "oodkit"
    args = [str(script), "train", "detector", "--id", "digits", "--quiet", "--out", str(out)]
    args += ["--epochs", "20", "--batch-size", "64", "--lr", "0.1", "--augment", "crop"]
    args += ["--seed", "3", "--arch-kwargs", json.dumps(DEMO_ARCH_KWARGS)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    first = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "det.lock").exists() and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=600) == 0, first.stderr.read()  # type: ignore[union-attr]
    first.stderr.close()  # type: ignore[union-attr]
    assert second.returncode == 2
    lines = second.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {out} is being written by another run (pid {first.pid} on ")
    assert "oodkit train detector" in second.stderr and "wait for it to finish" in second.stderr
    whole = train_detector("digits", tmp_path / "whole", TrainOptions(**o), quiet=True)
    assert load_artifact(out).manifest.fingerprint == whole.manifest.fingerprint
    assert not (tmp_path / "det.lock").exists() and not (tmp_path / "det.partial").exists()


def _club_state(partial: Path) -> dict[str, torch.Tensor]:
    return torch.load(partial / "checkpoint.pt", weights_only=True)["club"]


@pytest.mark.parametrize("club_steps", [0, 2])
def test_club_estimator_moves_only_by_its_own_optimizer(
    detector_options, tmp_path: Path, outliers: Path, club_steps: int
) -> None:
    o = detector_options(loss="sona", epochs=3, batch_size=32, club_steps=club_steps)
    out = tmp_path / "sona"
    partial = tmp_path / "sona.partial"
    train_detector("digits", out, o, outliers=[str(outliers)], stop_after_epochs=1, quiet=True)
    club1 = _club_state(partial)
    model1 = torch.load(partial / "checkpoint.pt", weights_only=True)["model"]
    train_detector(
        "digits", out, o, outliers=[str(outliers)], resume=True, stop_after_epochs=1, quiet=True
    )
    club2 = _club_state(partial)
    model2 = torch.load(partial / "checkpoint.pt", weights_only=True)["model"]
    assert any(
        not torch.equal(model1[k], model2[k]) for k in model1
    )  # the main step moved the model
    unchanged = all(torch.equal(club1[k], club2[k]) for k in club1)
    assert unchanged == (club_steps == 0)  # ... and the estimator only moves through its own steps


def test_sd_detector_and_sd_vote_score(detector_options, tmp_path: Path, outliers: Path) -> None:
    det = train_detector(
        "digits",
        tmp_path / "sd",
        detector_options(loss="sd", epochs=2),
        outliers=[str(outliers)],
        quiet=True,
    )
    config = json.loads((det.path / "config.json").read_text())
    assert config["heads"] == ["cls", "bin", "out"]
    assert {"bin.weight", "out.weight"} <= set(_weights(det.path))
    art = score(det.path, "digits", ["sd-vote"], tmp_path / "s", outliers=str(outliers))[0]
    assert art.manifest.params["k"] == 10 and art.manifest.params["alpha"] == 0.3
    assert np.isfinite(np.asarray(art.dataset()["id_score"])).all()


def test_energy_loss_trains(detector_options, tmp_path: Path) -> None:
    det = train_detector(
        "digits",
        tmp_path / "en",
        detector_options(loss="energy", epochs=1),
        outliers=["digits:photo-patches-train"],
        quiet=True,
    )
    assert np.isfinite(det.manifest.summary["final_loss"])


def _rgb_benchmark(tmp_path: Path, n_classes: int, mode: str, size: int) -> Path:
    for c in range(n_classes):
        d = tmp_path / "imgs" / f"c{c}"
        d.mkdir(parents=True)
        Image.new(mode, (size, size), 10 * c).save(d / "a.png")
    spec = {
        "id_train": "imgs",
        "id_test": "imgs",
        "ood": [{"name": "o", "group": "far", "data": "imgs/c0"}],
        "image_size": size,
        "channels": 1 if mode == "L" else 3,
    }
    (tmp_path / "bench.json").write_text(json.dumps(spec))
    return tmp_path / "bench.json"


def _cli(*args: str):
    return runner.invoke(app, list(args))


def test_bad_input_is_one_line_exit_2(
    ce_detector: Path, tmp_path: Path, outliers: Path, make_scores
) -> None:
    common = [
        "train",
        "detector",
        "--id",
        "digits",
        "--epochs",
        "1",
        "--arch-kwargs",
        json.dumps(DEMO_ARCH_KWARGS),
        "--quiet",
    ]
    wrong_kind = make_scores("scores", {"t": ("id", [1.0]), "o": ("far", [0.0])})
    cases = [
        (
            common + ["--out", str(tmp_path / "a"), "--loss", "oe", "--outliers", str(wrong_kind)],
            "is a scores artifact, expected outliers",
        ),
        (common + ["--out", str(tmp_path / "b"), "--loss", "oe"], "--loss oe needs --outliers"),
        (
            common + ["--out", str(tmp_path / "c"), "--outliers", str(outliers)],
            "--loss ce ignores outliers",
        ),
        (common + ["--out", str(tmp_path / "d"), "--loss", "nope"], "--loss must be one of"),
        (
            common + ["--out", str(tmp_path / "e"), "--arch", "no_such_net"],
            "unknown timm architecture",
        ),
        (
            common
            + ["--out", str(tmp_path / "f"), "--weights", str(tmp_path / "missing.safetensors")],
            "does not exist",
        ),
    ]
    empty = write_artifact(
        tmp_path / "empty",
        "outliers",
        {},
        dataset=datasets.Dataset.from_dict(
            {"image": [], "sample_id": []},
            features=datasets.Features(
                {"image": datasets.Image(), "sample_id": datasets.Value("string")}
            ),
        ),
    )
    cases.append(
        (
            common + ["--out", str(tmp_path / "g"), "--loss", "oe", "--outliers", str(empty.path)],
            "is empty",
        )
    )
    rgb = _rgb_benchmark(tmp_path / "rgb", 3, "RGB", 32)
    gray8 = _rgb_benchmark(tmp_path / "gray8", 8, "L", 16)
    score_cmd = ["score", "--detector", str(ce_detector), "--method", "energy"]
    cases += [
        (
            score_cmd + ["--benchmark", str(rgb), "--out", str(tmp_path / "h")],
            "takes 1-channel images but benchmark",
        ),
        (
            score_cmd + ["--benchmark", str(gray8), "--out", str(tmp_path / "i")],
            "the detector has 5 classes but the ID labels",
        ),
        (
            score_cmd
            + ["--benchmark", "digits", "--out", str(tmp_path / "j"), "--method", "sd-vote"],
            "sd-vote needs --outliers",
        ),
        (
            score_cmd[:-1] + ["wrong", "--benchmark", "digits", "--out", str(tmp_path / "k")],
            "--method must be one of msp, energy, maxlogit, knn, sd-vote, entropy,",
        ),
        (
            score_cmd
            + [
                "--benchmark",
                "digits",
                "--out",
                str(tmp_path / "l"),
                "--k",
                "100000",
                "--method",
                "knn",
            ],
            "--k 100000 must lie in 1..501",
        ),
    ]
    for args, message in cases:
        result = _cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and message in lines[0], (message, lines)
    assert not any((tmp_path / name).exists() for name in "abcdefghijkl")  # nothing written


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, torchrun) -> None:
    """torchrun, 2 CPU processes (GroupNorm: CPU BatchNorm is not synchronised): the global
    batch is split over the ranks and the weights match one process; the main rank reports
    the artifact once, the other says nothing (no false "paused" line)."""
    args = ["train", "detector", "--id", "digits", "--epochs", "2", "--batch-size", "64"]
    args += [
        "--arch-kwargs",
        '{"channels": [8, 16, 16, 16], "stem_width": 8, "norm_layer": "groupnorm1"}',
        "--lr",
        "0.05",
        "--device",
        "cpu",
    ]
    single = runner.invoke(app, [*args, "--quiet", "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--out", str(tmp_path / "two")])  # not quiet: both ranks speak
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert said.count("detector written to") == 1 and "paused" not in said, said[-3000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
