"""The bad-input catalogue: every refusal is exit code 2, one line on stderr, no traceback, no
warning, and nothing new on disk.

Each row is a command line (``{name}`` fields are filled from the fixtures below), an optional
setup that plants the bad input, and a fragment of the one line expected. Rows run in process
through Typer's ``CliRunner`` (the same error handling as the console script); a few run
through the real console script, where third-party warnings and log lines would show.
New stages add their rows here.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from oodkit.artifacts import MANIFEST_NAME, write_artifact
from oodkit.cli import app
from oodkit.schemas import outlier_features

runner = CliRunner()
SCRIPT = Path(sys.executable).parent / "oodkit"
UNWRITABLE = "/proc/oodkit-nowhere"  # no process can create anything here, root included


@dataclass
class Case:
    id: str
    args: str
    message: str
    setup: Callable[[dict[str, Path]], None] | None = None
    env: dict[str, str] | None = None


def _bench(folder: Path, spec: dict | str, name: str = "bench.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = spec if isinstance(spec, str) else json.dumps(spec)
    (folder / name).write_text(text)
    return folder / name


def _images(folder: Path, classes: int, mode: str, size: int) -> Path:
    for c in range(classes):
        d = folder / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new(mode, (size, size), 20 * c + i).save(d / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory, ce_detector, class_model, tiny_sd, broken_scores) -> dict[str, Path]:
    """Valid and broken inputs shared by every row (the rows must never change them)."""
    from oodkit.testing import build_tiny_ddpm

    root = tmp_path_factory.mktemp("catalogue")
    good = write_artifact(
        root / "scores", "scores", {"method": "energy"}, dataset=broken_scores("")
    )
    for case in ("nan", "inf", "no-id", "no-ood", "empty"):
        write_artifact(
            root / f"scores-{case}", "scores", {"method": "x"}, dataset=broken_scores(case)
        )
    write_artifact(root / "no-shard", "scores", {"method": "x"}, dataset=broken_scores(""))
    for f in (root / "no-shard" / "data").glob("*.arrow"):
        f.unlink()
    write_artifact(root / "truncated", "scores", {"method": "x"}, dataset=broken_scores(""))
    arrow = next((root / "truncated" / "data").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:200])
    (root / "not-artifact").mkdir()
    for name, text in {
        "garbage": "{not json",
        "list": "[1, 2]",
        "future": None,
        "unknown-kind": None,
        "no-kind": '{"params": {}}',
    }.items():
        folder = root / f"manifest-{name}"
        folder.mkdir()
        manifest = json.loads((good.path / MANIFEST_NAME).read_text())
        if name == "future":  # a newer oodkit: newer version and a field this one lacks
            manifest["format_version"] = 99
            manifest["lineage"] = {"parents": []}
            text = json.dumps(manifest)
        elif name == "unknown-kind":
            manifest["kind"] = "weights"
            text = json.dumps(manifest)
        (folder / MANIFEST_NAME).write_text(text)
    images = _images(root / "imgs", 2, "L", 16)
    _images(root / "img30", 2, "L", 30)
    outliers = datasets.Dataset.from_dict(
        {
            "image": [Image.new("L", (16, 16), i) for i in range(2)],
            "sample_id": ["a", "b"],
            **{k: [None, None] for k in ("source_id", "condition", "id_condition")},
            **{k: [None, None] for k in ("ood_condition", "method")},
            **{k: [0, 0] for k in ("source_label", "t_start", "start_timestep", "seed")},
            **{k: [1.0, 1.0] for k in ("ssim", "psnr")},
        },
        features=outlier_features(),
    )
    write_artifact(root / "outliers", "outliers", {"method": "sd"}, dataset=outliers)
    write_artifact(root / "empty-outliers", "outliers", {}, dataset=outliers.select([]))
    (root / "garbage.safetensors").write_bytes(b"\x00" * 64)
    # an old-style checkpoint: tensors plus the training arguments (a pickled Namespace)
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, root / "pickled.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, root / "misfit.pt")
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), root / "w18.pth")  # a torchvision checkpoint
    corrupt = root / "corrupt-imgs" / "c0"
    corrupt.mkdir(parents=True)
    (corrupt / "0.png").write_bytes(b"not a png")
    (root / "empty-dir").mkdir()
    bench = root / "bench"
    _images(bench / "imgs", 2, "L", 16)
    rgb = _bench(
        root / "rgb",
        {
            "id_train": "imgs",
            "id_test": "imgs",
            "ood": [{"name": "o", "group": "far", "data": "imgs/c0"}],
            "image_size": 16,
        },
    )
    _images(root / "rgb" / "imgs", 2, "RGB", 16)
    ok = {"id_train": "imgs", "id_test": "imgs", "ood": [{"name": "o", "data": "imgs/c0"}]}
    benches = {
        "bad-json": "[1, 2",
        "missing": '{"id_train": "imgs"}',
        "no-ood": '{"id_train": "imgs", "id_test": "imgs", "ood": []}',
        "traversal": {**ok, "ood": [{"name": "../../evil", "data": "imgs/c0"}]},
        "group": {**ok, "ood": [{"name": "o", "group": "middle", "data": "imgs/c0"}]},
        "nowhere": {**ok, "ood": [{"name": "o", "data": "no-such-folder"}]},
        "list": "[]",
        "channels": {**ok, "channels": 2},
    }
    for name, spec in benches.items():
        _bench(bench, spec, f"{name}.json")
    _bench(bench, "id_train: !!python/object/apply:os.system ['true']\n", "tag.yaml")
    for name, classes, size in (("gray8", 8, 16), ("gray32", 5, 32)):
        _images(root / name / "imgs", classes, "L", size)
        _bench(root / name, {**ok, "image_size": size})
    other = broken_scores("").to_dict()
    other["dataset"] = ["test", "test", "other"]
    write_artifact(
        root / "scores-other-sets",
        "scores",
        {"method": "energy"},
        dataset=datasets.Dataset.from_dict(other, features=broken_scores("").features),
    )
    grids = {
        "grid": {"train detector": {"epochs": 1}},
        "grid-type": {"train detector": {"epochs": ["one", 2]}},
        "grid-empty-axis": {"train detector": {"beta": []}},
        "grid-unknown": {"generate": {"nope": 1}, "train detector": {"epochs": 1}},
        "grid-no-detector": {"generate": {"method": "sd"}},
        "grid-unread": {"train detector": {"loss": "ce", "beta": [0.5, 1.0]}},
    }
    recipes = {
        "recipes-no-score": {"ce": {"train detector": {"epochs": 1}}},
        "recipes-section": {"ce": {"score": "energy", "scroe": {}}},
        "recipes-vote": {"sd": {"score": "sd-vote", "train detector": {"loss": "sd"}}},
        "recipes-option": {"oe": {"score": "energy", "generate": {"method": "sd", "nope": 1}}},
        "recipes-method": {"oe": {"score": "energy", "generate": {"t_start": 300}}},
        "recipes-score": {"ce": {"score": "bogus"}},
        "recipes-name": {"../up": {"score": "energy"}},
        "recipes-loss": {"oe": {"score": "energy", "train detector": {"loss": "oe"}}},
        "recipes-unread": {"ce": {"score": "energy", "train detector": {"sd_lambda": 1}}},
    }
    for name, spec in {**grids, **recipes}.items():
        (root / f"{name}.json").write_text(json.dumps(spec))
    partial_det = root / "det-without-weights"
    write_artifact(partial_det, "detector", {"arch": "resnet18"})
    manifest = json.loads((ce_detector / MANIFEST_NAME).read_text())
    partial_det.joinpath(MANIFEST_NAME).write_text(json.dumps(manifest))
    for f in ce_detector.iterdir():
        if f.name != MANIFEST_NAME and not f.name.endswith(".safetensors"):
            (partial_det / f.name).write_bytes(f.read_bytes())
    return {
        "det": ce_detector,
        "model": class_model,
        "sd": tiny_sd,
        "ddpm": build_tiny_ddpm(root / "ddpm", image_size=16, channels=1),
        "small": build_tiny_ddpm(root / "small", image_size=8, channels=1),
        "root": root,
        "scores": good.path,
        "images": images,
        "outliers": root / "outliers",
        "bench": bench,
        "rgb": rgb,
        "nodet": partial_det,
    }


def _hold_lock(paths: dict[str, Path]) -> None:
    """Another process is writing {out}: its lock is held, its holder recorded."""
    script = (
        "import json, os, sys, time\n"
        "from filelock import FileLock\n"
        "def rec(fd):\n"
        "    os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'elsewhere', "
        "'started': 'now', 'command': 'oodkit eval other'}).encode())\n"
        "lock = FileLock(sys.argv[1], timeout=0, on_acquired=rec)\n"
        "lock.acquire(); print('held', flush=True); time.sleep(120)\n"
    )
    out = paths["out"]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(out.with_name(out.name + ".lock"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    paths["holder"] = proc  # type: ignore[assignment]


TRAIN = "train detector --id digits --epochs 1 --quiet --out {out}"
DIFF = "train diffusion --id digits --steps 2 --quiet --out {out}"
PSEUDO = "pseudo-label --id digits --method kmeans --num-clusters 5 --quiet --out {out}"
GEN_SD = "generate --method sd --id digits --model {model} --quiet --out {out}"
SCORE = "score --detector {det} --benchmark digits --method energy --quiet --out {out}"
DG = "score --detector {det} --benchmark digits --method diffguard --model {model} --quiet"
DG += " --out {out}"
EVAL = "eval --no-plots --quiet --out {out}"
SWEEP = "sweep --id digits --model {model} --quiet --out {out}"
IMP = "import detector --quiet --out {out}"
IMP_W = IMP + " --weights {root}/w18.pth"
IMP_IN = IMP_W + " torchvision:resnet18 --trained-on imagenet"
IMPD = "import diffusion --quiet --out {out}"

CASES = [
    # --- the command line itself ------------------------------------------------------------
    Case("unknown-command", "nonsense", "No such command 'nonsense'"),
    Case("missing-argument", "eval --out {out}", "Missing argument 'scores'"),
    Case("not-an-integer", f"{TRAIN} --epochs abc", "Input should be a valid integer"),
    Case("unknown-option", f"{TRAIN} --bogus", "No such option: --bogus"),
    Case("missing-value", "score --detector", "Option '--detector' requires an argument"),
    Case("info-nothing", "info", "give one of"),
    Case("info-two", "info {scores} --methods", "give one of"),
    Case("info-unknown-benchmark", "info --benchmark mnist", "unknown benchmark 'mnist'"),
    Case("info-missing", "info {root}/nope", "no such directory"),
    # --- artifacts as inputs ----------------------------------------------------------------
    Case("eval-missing", f"{EVAL} {{root}}/nope", "no such directory"),
    Case("eval-unicode-missing", f"{EVAL} {{root}}/naïve-données", "naïve-données: no such"),
    Case("eval-not-artifact", f"{EVAL} {{root}}/not-artifact", "oodkit.json is missing"),
    Case("eval-manifest-garbage", f"{EVAL} {{root}}/manifest-garbage", "is corrupt"),
    Case("eval-manifest-list", f"{EVAL} {{root}}/manifest-list", "is corrupt: not a JSON object"),
    Case("eval-manifest-no-kind", f"{EVAL} {{root}}/manifest-no-kind", "is corrupt: missing"),
    Case("eval-future-version", f"{EVAL} {{root}}/manifest-future", "upgrade oodkit"),
    Case("eval-unknown-kind", f"{EVAL} {{root}}/manifest-unknown-kind", "unknown kind 'weights'"),
    Case("eval-wrong-kind", f"{EVAL} {{det}}", "is a detector artifact, expected scores"),
    Case("eval-nan", f"{EVAL} {{root}}/scores-nan", "1 NaN value"),
    Case("eval-inf", f"{EVAL} {{root}}/scores-inf", "1 infinite value"),
    Case("eval-empty", f"{EVAL} {{root}}/scores-empty", "is empty"),
    Case("eval-no-id", f"{EVAL} {{root}}/scores-no-id", "ID set is empty"),
    Case("eval-no-ood", f"{EVAL} {{root}}/scores-no-ood", "OOD set is empty"),
    Case(
        "eval-different-sets",
        f"{EVAL} {{scores}} {{root}}/scores-other-sets",
        "cover different OOD sets",
    ),
    Case("eval-no-shard", f"{EVAL} {{root}}/no-shard", "missing"),
    Case("eval-truncated", f"{EVAL} {{root}}/truncated", "oodkit verify"),
    Case(
        "eval-out-is-file",
        "eval --no-plots --out {root}/garbage.safetensors {scores}",
        "not a directory",
    ),
    Case(
        "eval-out-foreign",
        "eval --no-plots --out {root}/imgs {scores}",
        "is not an oodkit artifact",
    ),
    Case("eval-out-other", "eval --no-plots --out {root}/outliers {scores}", "--overwrite"),
    Case("eval-out-unwritable", f"eval --no-plots --out {UNWRITABLE}/m {{scores}}", "cannot write"),
    Case("eval-locked", f"{EVAL} {{scores}}", "being written by another run (pid", _hold_lock),
    # --- train detector ---------------------------------------------------------------------
    Case("train-loss", f"{TRAIN} --loss nope", "--loss must be one of"),
    Case("train-oe-no-outliers", f"{TRAIN} --loss oe", "--loss oe needs --outliers"),
    Case("train-ce-outliers", f"{TRAIN} --outliers {{outliers}}", "--loss ce ignores outliers"),
    Case("train-outliers-kind", f"{TRAIN} --loss oe --outliers {{scores}}", "expected outliers"),
    Case(
        "train-outliers-empty",
        f"{TRAIN} --loss oe --outliers {{root}}/empty-outliers",
        "is empty",
    ),
    Case("train-outliers-missing", f"{TRAIN} --loss oe --outliers {{root}}/nope", "nope"),
    Case("train-arch", f"{TRAIN} --arch no_such_net", "unknown timm architecture"),
    Case("train-arch-kwargs-key", f"{TRAIN} --arch-kwargs '{{{{\"nope\": 1}}}}'", "--arch-kwargs"),
    Case("train-arch-kwargs-json", f"{TRAIN} --arch-kwargs 'not json'", "must be a JSON object"),
    Case("train-arch-kwargs-list", f"{TRAIN} --arch-kwargs '[1]'", "must be a JSON object"),
    Case("train-weights-missing", f"{TRAIN} --weights {{root}}/nope.safetensors", "does not exist"),
    Case("train-weights-garbage", f"{TRAIN} --weights {{root}}/garbage.safetensors", "cannot read"),
    Case(
        "train-weights-pickle",
        f"{TRAIN} --weights {{root}}/pickled.pt",
        "is a pickle that needs argparse.Namespace",
    ),
    Case("train-weights-misfit", f"{TRAIN} --weights {{root}}/misfit.pt", "do not fit resnet18"),
    Case("train-epochs-0", f"{TRAIN} --epochs 0", "--epochs must be positive, got 0"),
    Case("train-batch-0", f"{TRAIN} --batch-size 0", "--batch-size must be positive, got 0"),
    Case("train-outlier-batch-0", f"{TRAIN} --outlier-batch-size 0", "must be positive"),
    Case(
        "train-image-size-0", f"{TRAIN} --image-size 0", "--image-size must lie in [1, 9459], got 0"
    ),
    Case("train-club-steps", f"{TRAIN} --club-steps -1", "--club-steps must not be negative"),
    Case("train-workers-negative", f"{TRAIN} --num-workers -1", "must not be negative"),
    Case("train-stop-after-0", f"{TRAIN} --stop-after-epochs 0", "must be positive"),
    Case("train-cuda", f"{TRAIN} --device cuda", "no CUDA device"),
    Case("train-device", f"{TRAIN} --device tpu", "--device"),
    Case("train-augment", f"{TRAIN} --augment bogus", "--augment must be one of"),
    Case("train-id-missing", "train detector --id {root}/nope --out {out}", "unknown dataset"),
    Case("train-id-empty", "train detector --id {root}/empty-dir --out {out}", "no image files"),
    Case("train-id-corrupt", "train detector --id {root}/corrupt-imgs --out {out}", "0.png"),
    Case("train-id-hub", "train detector --id hub:someone/data --out {out}", "hub:someone/data"),
    Case("train-val-missing", f"{TRAIN} --val {{root}}/nope", "unknown dataset reference"),
    Case("train-labels-kind", f"{TRAIN} --labels {{scores}}", "expected pseudo-labels"),
    Case("train-lock", TRAIN, "being written by another run (pid", _hold_lock),
    # --- train diffusion --------------------------------------------------------------------
    Case("diffusion-steps-0", f"{DIFF} --steps 0", "--steps must be positive, got 0"),
    Case("diffusion-batch-0", f"{DIFF} --batch-size 0", "--batch-size must be positive"),
    Case("diffusion-every-0", f"{DIFF} --checkpoint-every 0", "must be positive"),
    Case("diffusion-uncond", f"{DIFF} --p-uncond 1.5", "--p-uncond"),
    Case(
        "diffusion-size",
        "train diffusion --id {root}/img30 --steps 2 --out {out}",
        "the tiny UNet needs an image size divisible by 4, got 30px",
    ),
    Case("diffusion-cuda", f"{DIFF} --device cuda", "no CUDA device"),
    Case("diffusion-id", "train diffusion --id mnist --out {out}", "unknown dataset reference"),
    # --- pseudo-label -----------------------------------------------------------------------
    Case("pseudo-method", f"{PSEUDO} --method bogus", "--method must be one of"),
    Case("pseudo-clusters-0", f"{PSEUDO} --num-clusters 0", "--num-clusters must be"),
    Case("pseudo-clusters-1", f"{PSEUDO} --num-clusters 1", "--num-clusters must be"),
    Case("pseudo-epochs-0", f"{PSEUDO} --scan-epochs 0", "--scan-epochs must be positive"),
    Case("pseudo-arch", f"{PSEUDO} --arch no_such_net", "unknown timm architecture"),
    Case("pseudo-arch-kwargs", f"{PSEUDO} --arch-kwargs '{{{{\"nope\": 1}}}}'", "do not fit"),
    Case("pseudo-cuda", f"{PSEUDO} --device cuda", "no CUDA device"),
    Case(
        "pseudo-empty",
        "pseudo-label --id {root}/empty-dir --num-clusters 2 --out {out}",
        "no image files",
    ),
    # --- generate ---------------------------------------------------------------------------
    Case("gen-method", f"{GEN_SD} --method bogus", "--method must be one of"),
    Case(
        "gen-no-method",
        "generate --id digits --model {model} --out {out}",
        "missing option --method (on the command line or in --config)",
    ),
    Case(
        "gen-model-missing",
        "generate --method sd --id digits --model {root}/nope --out {out}",
        "nope",
    ),
    Case(
        "gen-model-kind", "generate --method sd --id digits --model {scores} --out {out}", "scores"
    ),
    Case(
        "gen-model-hub",
        "generate --method sd --id digits --model someone/model --out {out}",
        "someone/model",
    ),
    Case("gen-steps-0", f"{GEN_SD} --steps 0", "--steps must be positive, got 0"),
    Case("gen-limit-0", f"{GEN_SD} --limit 0", "--limit must be positive, got 0"),
    Case("gen-per-image-0", f"{GEN_SD} --per-image 0", "--per-image must be positive"),
    Case("gen-batch-0", f"{GEN_SD} --batch-size 0", "--batch-size must be positive"),
    Case("gen-shard-0", f"{GEN_SD} --shard-size 0", "--shard-size must be positive"),
    Case("gen-t-start", f"{GEN_SD} --t-start 99", "not on the 100-step DDIM grid"),
    Case("gen-dtype", f"{GEN_SD} --dtype fp8", "--dtype must be one of"),
    Case("gen-resize", f"{GEN_SD} --resize stretch", "--resize must be one of"),
    Case("gen-ood-condition", f"{GEN_SD} --ood-condition bogus", "--ood-condition must be one"),
    Case("gen-ood-condition-sd", f"{GEN_SD} --ood-condition away", "applies to sona and global"),
    Case("gen-text-model", "generate --method sd --id digits --model {sd} --out {out}", "prompts"),
    Case(
        "gen-judge-text-model",
        "generate --method sona --id digits --model {sd} --judge model --out {out}",
        "--judge model needs a class-conditional model",
    ),
    Case("gen-cuda", f"{GEN_SD} --device cuda", "no CUDA device"),
    Case("gen-judge-kind", f"{GEN_SD} --judge {{scores}}", "expected detector"),
    Case("gen-judge-missing", f"{GEN_SD} --judge {{root}}/nope", "no such directory"),
    # --- score ------------------------------------------------------------------------------
    Case("score-k-0", f"{SCORE} --method knn --k 0", "--k must be positive, got 0"),
    Case("score-batch-0", f"{SCORE} --batch-size 0", "--batch-size must be positive, got 0"),
    Case("score-limit-0", f"{SCORE} --limit 0", "--limit must be positive, got 0"),
    Case("score-temperature", f"{SCORE} --temperature 0", "--temperature must be positive"),
    Case("score-method", f"{SCORE} --method wrong", "--method must be one of"),
    Case("score-sd-vote", f"{SCORE} --method sd-vote", "sd-vote needs --outliers"),
    Case(
        "score-detector-missing",
        "score --detector {root}/nope -b digits --method energy --out {out}",
        "no such directory",
    ),
    Case(
        "score-detector-kind",
        "score --detector {scores} -b digits --method energy --out {out}",
        "expected detector",
    ),
    Case(
        "score-detector-files",
        "score --detector {nodet} -b digits --method energy --out {out}",
        "is missing",
    ),
    Case("score-bench-unknown", f"{SCORE} -b mnist", "unknown benchmark 'mnist'"),
    Case("score-bench-file-missing", f"{SCORE} -b {{root}}/nope.json", "does not exist"),
    Case("score-empty-label", f"{SCORE} --label ' '", "--label must not be empty"),
    Case("score-bench-json", f"{SCORE} -b {{bench}}/bad-json.json", "cannot parse"),
    Case("score-bench-list", f"{SCORE} -b {{bench}}/list.json", "holds one mapping"),
    Case("score-bench-yaml-tag", f"{SCORE} -b {{bench}}/tag.yaml", "cannot parse"),
    Case("score-bench-fields", f"{SCORE} -b {{bench}}/missing.json", "missing field"),
    Case("score-bench-no-ood", f"{SCORE} -b {{bench}}/no-ood.json", "non-empty list"),
    Case("score-bench-traversal", f"{SCORE} -b {{bench}}/traversal.json", "set name"),
    Case("score-bench-group", f"{SCORE} -b {{bench}}/group.json", "group must be one of"),
    Case("score-bench-nowhere", f"{SCORE} -b {{bench}}/nowhere.json", "no-such-folder"),
    Case("score-bench-channels", f"{SCORE} -b {{bench}}/channels.json", "channels"),
    Case(
        "score-bench-classes",
        f"{SCORE} -b {{root}}/gray8/bench.json",
        "the detector has 5 classes but the ID labels",
    ),
    Case(
        "score-bench-size",
        f"{SCORE} -b {{root}}/gray32/bench.json",
        "the detector takes 16px images but benchmark",
    ),
    Case("score-bench-rgb", f"{SCORE} -b {{rgb}}", "takes 1-channel images but benchmark"),
    Case(
        "score-cache-unwritable",
        SCORE,
        "cannot write",
        env={"OODKIT_CACHE": f"{UNWRITABLE}/cache"},
    ),
    Case("score-lock", SCORE, "being written by another run (pid", _hold_lock),
    Case(
        "dg-cfg-uncond",
        "score --detector {det} -b digits --method diffguard --model {ddpm} "
        "--guidance cfg --out {out}",
        "this model is unconditional",
    ),
    Case(
        "dg-size",
        "score --detector {det} -b digits --method diffguard --model {small} --out {out}",
        "need detector ≤ model",
    ),
    Case("dg-distance", f"{DG} --distance ssim,dist", "unknown distance 'dist'"),
    Case(
        "dg-dists-weights", f"{DG} --distance dists --perceptual-weights {{root}}", "local weights"
    ),
    Case("dg-steps-0", f"{DG} --steps 0", "--steps must be positive"),
    Case("dg-cutouts-0", f"{DG} --cutouts 0", "--cutouts must be positive"),
    Case("dg-batch-0", f"{DG} --diffusion-batch 0", "--diffusion-batch must be positive"),
    Case("dg-stop", f"{DG} --stop deep", "--stop must be aes or a fraction"),
    # --- sweep ------------------------------------------------------------------------------
    Case("sweep-grid-missing", f"{SWEEP} --grid {{root}}/nope.yaml", "--grid"),
    Case("sweep-grid-type", f"{SWEEP} --grid {{root}}/grid-type.json", "must be an integer"),
    Case("sweep-grid-empty", f"{SWEEP} --grid {{root}}/grid-empty-axis.json", "empty list"),
    Case("sweep-grid-unknown", f"{SWEEP} --grid {{root}}/grid-unknown.json", "unknown option"),
    Case("sweep-grid-sections", f"{SWEEP} --grid {{root}}/grid-no-detector.json", "section"),
    Case("sweep-no-validation", f"{SWEEP} --grid {{root}}/grid.json --id {{rgb}}", "no validation"),
    Case("sweep-select", f"{SWEEP} --grid {{root}}/grid.json --select best", "--select must be"),
    Case("sweep-seeds-0", f"{SWEEP} --grid {{root}}/grid.json --seeds 0", "must be positive"),
    # --- push / verify / demo ---------------------------------------------------------------
    Case("push-repo-id", "push {scores} --repo-id no-owner", "OWNER/NAME"),
    Case("push-offline", "push {scores} --repo-id me/scores", "HF_HUB_OFFLINE is set"),
    Case("push-model-offline", "push {det} --repo-id me/det", "HF_HUB_OFFLINE is set"),
    Case("push-license", "push {scores} --repo-id me/s --license free", "--license must be"),
    Case("push-missing", "push {root}/nope --repo-id me/s", "no such directory"),
    Case("push-no-data", "push {root}/not-artifact --repo-id me/s", "oodkit.json is missing"),
    Case("verify-missing", "verify {root}/nope", "no such directory"),
    Case("verify-truncated", "verify {root}/truncated", "has 200 bytes, the manifest records"),
    Case("verify-not-artifact", "verify {root}/not-artifact", "oodkit.json is missing"),
    Case("demo-seeds-0", "demo --seeds 0 --out {out}", "--seeds must be positive"),
    Case("demo-epochs-0", "demo --epochs 0 --out {out}", "--epochs must be positive"),
    Case("demo-limit-0", "demo --limit 0 --out {out}", "--limit must be positive"),
    Case("demo-recipes-missing", "demo --recipes {root}/nope.yaml --out {out}", "does not exist"),
    Case(
        "demo-no-score", "demo --recipes {root}/recipes-no-score.json --out {out}", "score: METHOD"
    ),
    Case(
        "demo-section", "demo --recipes {root}/recipes-section.json --out {out}", "unknown: scroe"
    ),
    Case("demo-vote", "demo --recipes {root}/recipes-vote.json --out {out}", "needs a generate"),
    Case("demo-option", "demo --recipes {root}/recipes-option.json --out {out}", "unknown option"),
    Case("demo-method", "demo --recipes {root}/recipes-method.json --out {out}", "needs a method"),
    Case("demo-score", "demo --recipes {root}/recipes-score.json --out {out}", "score must be one"),
    Case("demo-name", "demo --recipes {root}/recipes-name.json --out {out}", "not a plain folder"),
    Case("demo-loss", "demo --recipes {root}/recipes-loss.json --out {out}", "loss oe needs a gen"),
    Case("import-source", f"{IMP} keras:resnet50", "expected torchvision:NAME"),
    Case("import-openood-arch", f"{IMP} openood:resnet34", "unknown OpenOOD architecture"),
    Case("import-openood-weights", f"{IMP} openood:resnet18_32x32", "pass --weights FILE"),
    Case("import-tv-unnamed", f"{IMP} torchvision:resnet18", "name its weights"),
    Case("import-tv-enum", f"{IMP} torchvision:resnet18:IMAGENET9K", "no torchvision weights"),
    Case(
        "import-tv-offline",
        f"{IMP} torchvision:resnet18:IMAGENET1K_V1",
        "resnet18-f37072fd.pth as",
        env={"TORCH_HOME": UNWRITABLE},
    ),
    Case("import-tv-arch", f"{IMP_W} torchvision:resnet999", "unknown torchvision model"),
    Case("import-no-prep", f"{IMP_W} torchvision:resnet18", "does not say how its inputs"),
    Case("import-misfit", f"{IMP_W} torchvision:resnet50 --trained-on imagenet", "does not fit"),
    Case("import-trained-on", f"{IMP_W} torchvision:resnet18 --trained-on mnist", "--trained-on"),
    Case("import-classes", f"{IMP_W} torchvision:resnet18 --trained-on cifar10", "names 10"),
    Case("import-mean", f"{IMP_IN} --mean 0.5,0.5", "--mean takes 3 numbers"),
    Case("import-std", f"{IMP_IN} --std 0.5,0,0.5", "--std values must be positive"),
    Case("import-crop", f"{IMP_IN} --crop 300", "crop 300 is larger than resize 256"),
    Case("import-filter", f"{IMP_IN} --interpolation lanczos", "--interpolation must be"),
    Case("import-missing", f"{IMP} torchvision:resnet18 --weights {{root}}/no.pth", "not exist"),
    Case("import-pickle", f"{IMP} timm:resnet18 --weights {{root}}/pickled.pt", "Namespace"),
    Case("import-timm-offline", f"{IMP} timm:resnet18", "not in the Hugging Face cache"),
    Case("import-timm-arch", f"{IMP_W} timm:resnet999", "unknown timm model"),
    Case("import-ptood-key", f"{IMP} pytorch-ood:resnet-18/imagenet200/ce", "Unknown model"),
    Case(
        "import-ptood-ambiguous", f"{IMP} pytorch-ood:resnet-18/imagenet200/crossentropy", "ambig"
    ),
    Case(
        "import-ptood-offline",
        f"{IMP} pytorch-ood:resnet-18/imagenet200/crossentropy/s1",
        "huggingface.co/kkirchheim",
        env={"TORCH_HOME": UNWRITABLE},
    ),
    Case("import-diffusion-source", f"{IMPD} ddpm:{{root}}/w18.pth", "expected adm:FILE"),
    Case("import-adm-preset", f"{IMPD} adm:{{root}}/w18.pth", "no ADM preset 'w18'"),
    Case("import-adm-misfit", f"{IMPD} adm:{{root}}/w18.pth --preset lsun_cat", "lacks time_embed"),
    Case("import-adm-flags", f"{IMPD} adm:{{root}}/w18.pth --flags '{{{{\"x\": 1}}}}'", "--flags"),
    Case(
        "import-adm-both",
        f"{IMPD} adm:{{root}}/w18.pth --preset lsun_cat --flags '{{{{\"image_size\": 64}}}}'",
        "not both",
    ),
    Case("import-adm-missing", f"{IMPD} adm:{{root}}/lsun_cat.pt", "does not exist"),
    Case("import-ldm-preset", f"{IMPD} ldm:{{root}}/w18.pth", "no LDM preset 'w18'"),
    Case(
        "import-ldm-foreign",
        f"{IMPD} ldm:{{root}}/w18.pth --preset cin256-v2",
        "is not a class-conditional LDM checkpoint",
    ),
]


# --- issue 22: wrong results, leaks and deep failures, each class refused at its root -------


def _tmp(paths: dict[str, Path]) -> Path:
    return paths["out"].parent


def _noise(folder: Path, seed: int, classes: int = 2, n: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = folder / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(d / f"{i}.png")
    return folder


def _image_bench(paths: dict[str, Path], train: str = "id") -> Path:
    t = _tmp(paths)
    _noise(t / "id", 0)
    _noise(t / "ood", 1)
    if train != "id":
        _noise(t / train, 2)
    spec = {"id_train": train, "id_test": "id", "ood": [{"name": "o", "data": "ood"}]}
    paths["b"] = _bench(t, {**spec, "image_size": 16})
    return paths["b"]


def _scored_then_rewritten(paths: dict[str, Path]) -> None:
    from oodkit.stages.score.run import score

    bench = _image_bench(paths)
    score(paths["det"], str(bench), "energy", paths["out"], quiet=True)
    _noise(_tmp(paths) / "ood", 9)  # same file names, new pixels


def _knn_then_train_rewritten(paths: dict[str, Path]) -> None:
    from oodkit.stages.score.run import score

    bench = _image_bench(paths, train="train")
    score(paths["det"], str(bench), "knn", paths["out"], quiet=True, k=2)
    _noise(_tmp(paths) / "train", 8)


def _trained_then_rewritten(paths: dict[str, Path]) -> None:
    from oodkit.stages.train_detector.run import train_detector

    paths["ids"] = _noise(_tmp(paths) / "ids", 0)
    train_detector(str(paths["ids"]), paths["out"], epochs=1, batch_size=2, quiet=True)
    _noise(paths["ids"], 5)


def _deep_images(paths: dict[str, Path], values: np.ndarray, name: str) -> None:
    t = _tmp(paths)
    for folder in ("id/c0", "id/c1", "ood/c0"):
        (t / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(values).save(t / folder / name)
    spec = {"id_train": "id", "id_test": "id", "ood": [{"name": "o", "data": "ood"}]}
    paths["b"] = _bench(t, {**spec, "image_size": 16, "channels": 1})
    paths["ids"] = t / "id"


def _hot_floats(paths: dict[str, Path]) -> None:
    _deep_images(paths, np.full((16, 16), 1.5, np.float32), "x.tif")


def _negative_ints(paths: dict[str, Path]) -> None:
    _deep_images(paths, np.full((16, 16), -7, np.int32), "x.tif")


def _repeated_ids(paths: dict[str, Path]) -> None:
    from oodkit.schemas import image_features

    rows = {
        "image": [Image.new("L", (16, 16), 10 * i) for i in range(6)],
        "label": [0, 1, 0, 1, 0, 1],
        "sample_id": ["same"] * 6,
    }
    t = _tmp(paths)
    datasets.Dataset.from_dict(rows, features=image_features()).save_to_disk(t / "dup")
    paths["dup"] = t / "dup"
    spec = {"id_train": "dup", "id_test": "dup", "ood": [{"name": "o", "data": "dup"}]}
    paths["b"] = _bench(t, {**spec, "image_size": 16})


def _repeated_labels(paths: dict[str, Path]) -> None:
    from oodkit.schemas import pseudo_labels_dataset

    ids = ["digits/train/0000000"] * 4
    table = pseudo_labels_dataset(ids, np.array([0, 1, 2, 3]), np.ones(4))
    paths["dup"] = _tmp(paths) / "labels"
    write_artifact(paths["dup"], "pseudo-labels", {"method": "kmeans"}, dataset=table)


def _scores_twin(paths: dict[str, Path]) -> None:
    import shutil

    paths["copy"] = _tmp(paths) / "copy"
    shutil.copytree(paths["scores"], paths["copy"])


def _two_runs(paths: dict[str, Path], **other: object) -> None:
    from oodkit.schemas import SetScores, write_scores

    for name, extra in (("r0", {"seed": 0}), ("r1", {"seed": 1, **other})):
        rng = np.random.default_rng(int(name[1]))  # distinct scores, whatever the seed
        sets = [
            SetScores("test", "id", ["a", "b", "c"], rng.normal(1, 1, 3)),
            SetScores("o", "far", ["d", "e"], rng.normal(0, 1, 2)),
        ]
        write_scores(_tmp(paths) / name, sets, {"method": "energy", "benchmark": "b", **extra})
        paths[name] = _tmp(paths) / name


def _linked(paths: dict[str, Path]) -> None:
    import shutil

    t = _tmp(paths)
    (t / "secret.txt").write_text("outside the artifact")
    shutil.copytree(paths["scores"], t / "linked")
    (t / "linked" / "notes.txt").symlink_to(t / "secret.txt")
    paths["linked"] = t / "linked"


def _linked_arrow(paths: dict[str, Path]) -> None:
    import shutil

    t = _tmp(paths)
    shutil.copytree(paths["scores"], t / "linked")
    arrow = next((t / "linked" / "data").glob("*.arrow"))
    shutil.move(arrow, t / "elsewhere.arrow")
    arrow.symlink_to(t / "elsewhere.arrow")
    paths["linked"] = t / "linked"


def _edited_manifest(change: Callable[[dict], None]) -> Callable[[dict[str, Path]], None]:
    def setup(paths: dict[str, Path]) -> None:
        import shutil

        paths["edited"] = _tmp(paths) / "edited"
        shutil.copytree(paths["scores"], paths["edited"])
        manifest = json.loads((paths["edited"] / MANIFEST_NAME).read_text())
        change(manifest)
        (paths["edited"] / MANIFEST_NAME).write_text(json.dumps(manifest))

    return setup


def _config(text: str, name: str = "c.yaml") -> Callable[[dict[str, Path]], None]:
    def setup(paths: dict[str, Path]) -> None:
        paths["cfg"] = _tmp(paths) / name
        paths["cfg"].write_text(text)

    return setup


ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 8)
)


def _bomb_bench(paths: dict[str, Path]) -> None:
    paths["b"] = _tmp(paths) / "bench.yaml"
    paths["b"].write_text(ALIAS_BOMB + "id_train: *a7\nid_test: x\nood: [x]\n")


def _fifo(paths: dict[str, Path]) -> None:
    import os

    bench = _image_bench(paths)
    os.mkfifo(bench.parent / "ood" / "c0" / "z.png")


def _fifo_id(paths: dict[str, Path]) -> None:
    import os

    paths["ids"] = _noise(_tmp(paths) / "ids", 0)
    os.mkfifo(paths["ids"] / "c1" / "z.png")


def _string_scores(paths: dict[str, Path]) -> None:
    table = datasets.Dataset.from_dict(
        {"sample_id": ["a", "b"], "dataset": ["t", "o"], "group": ["id", "far"]}
        | {"id_score": ["high", "low"]}
    )
    paths["strings"] = _tmp(paths) / "strings"
    write_artifact(paths["strings"], "scores", {"method": "x"}, dataset=table)


def _inside_set(paths: dict[str, Path]) -> None:
    bench = _image_bench(paths)
    paths["inside"] = bench.parent / "ood" / "c0" / "scores"


def _bench_value(key: str, value: str) -> Callable[[dict[str, Path]], None]:
    def setup(paths: dict[str, Path]) -> None:
        bench = _image_bench(paths)
        text = bench.read_text().replace('"image_size": 16', f'"{key}": {value}')
        bench.write_text(text)

    return setup


def _fifo_names(paths: dict[str, Path]) -> None:
    import os

    paths["names"] = _tmp(paths) / "ood.txt"
    os.mkfifo(paths["names"])


def _huge_header(paths: dict[str, Path]) -> None:
    """A 100-byte PNG whose header claims 200,000 × 200,000 pixels."""
    import struct
    import zlib

    bench = _image_bench(paths)
    png = (bench.parent / "ood" / "c0" / "0.png").read_bytes()
    ihdr = b"IHDR" + struct.pack(">II", 200_000, 200_000) + png[24:29]
    patched = png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]
    (bench.parent / "ood" / "c0" / "0.png").write_bytes(patched)


def _paused_then_damaged(paths: dict[str, Path]) -> None:
    from oodkit.stages.train_detector.run import train_detector

    paths["ids"] = _noise(_tmp(paths) / "ids", 0)
    train_detector(
        str(paths["ids"]), paths["out"], epochs=2, batch_size=2, stop_after_epochs=1, quiet=True
    )
    ckpt = paths["out"].with_name("out.partial") / "checkpoint.pt"
    ckpt.write_bytes(b"\0" * ckpt.stat().st_size)


def _damaged_state(paths: dict[str, Path]) -> None:
    partial = paths["out"].with_name("out.partial")
    partial.mkdir()
    (partial / "partial.json").write_text('{"kind": "detec')


def _damaged_weights(paths: dict[str, Path]) -> None:
    import shutil

    paths["bad"] = _tmp(paths) / "det"
    shutil.copytree(paths["det"], paths["bad"])
    weights = paths["bad"] / "model.safetensors"
    weights.write_bytes(b"\xff" * weights.stat().st_size)


ISSUE22 = [
    # A1 identity by content: a changed input is a different input, in caches and manifests
    Case("score-benchmark-rewritten", f"{SCORE} -b {{b}}", ":o changed", _scored_then_rewritten),
    Case(
        "score-knn-train-rewritten",
        "score --detector {det} -b {b} --method knn --k 2 --quiet --out {out}",
        ":id_train changed",
        _knn_then_train_rewritten,
    ),
    Case(
        "train-id-rewritten",
        "train detector --id {ids} --epochs 1 --batch-size 2 --quiet --out {out}",
        "different inputs",
        _trained_then_rewritten,
    ),
    # A2 high bit depth: scaled by range, refused outside it
    Case("score-float-tiff", f"{SCORE} -b {{b}}", "F image with values outside 0..1", _hot_floats),
    Case(
        "score-int32-negative", f"{SCORE} -b {{b}}", "I image with values outside", _negative_ints
    ),
    Case(
        "train-float-tiff",
        "train detector --id {ids} --epochs 1 --batch-size 2 --quiet --out {out}",
        "values outside 0..1",
        _hot_floats,
    ),
    # A3 repeated sample ids
    Case("pseudo-repeated-ids", f"{PSEUDO} --id {{dup}}", "'same' is not unique", _repeated_ids),
    Case("train-labels-repeated", f"{TRAIN} --labels {{dup}}", "is not unique", _repeated_labels),
    Case(
        "gen-repeated-ids",
        "generate --method sd --id {dup} --model {model} --quiet --out {out}",
        "is not unique",
        _repeated_ids,
    ),
    Case("score-repeated-ids", f"{SCORE} -b {{b}}", "'same' is not unique", _repeated_ids),
    # A4 eval averages seeds only
    Case("eval-same-twice", f"{EVAL} {{scores}} {{scores}}", "hold the same scores"),
    Case("eval-copy", f"{EVAL} {{scores}} {{copy}}", "hold the same scores", _scores_twin),
    Case(
        "eval-two-benchmarks",
        f"{EVAL} {{r0}} {{r1}}",
        "differ in benchmark",
        lambda p: _two_runs(p, benchmark="other"),
    ),
    Case("eval-same-seed", f"{EVAL} {{r0}} {{r1}}", "share seed 0", lambda p: _two_runs(p, seed=0)),
    # A5 --out inside an input
    Case("eval-out-in-input", "eval --no-plots -q --out {scores}/m {scores}", "lies inside"),
    Case(
        "score-out-in-detector",
        "score --detector {det} -b digits --method energy -q --out {det}/s",
        "inside",
    ),
    Case(
        "train-out-in-id", "train detector --id {images} --epochs 1 -q --out {images}/d", "inside"
    ),
    Case("eval-out-is-input", "eval -q --overwrite --out {scores} {scores}", "is the input"),
    # A6 non-finite numbers
    Case("train-lr-nan", f"{TRAIN} --lr nan", "--lr must be a finite number, got nan"),
    Case("score-temperature-inf", f"{SCORE} --temperature inf", "must be a finite number"),
    Case("gen-lam-nan", f"{GEN_SD} --lam nan", "--lam must be a finite number"),
    Case("diffusion-ema-nan", f"{DIFF} --ema-decay nan", "--ema-decay must be a finite"),
    Case("dg-cfg-scale-inf", f"{DG} --cfg-scale -inf", "--cfg-scale must be a finite"),
    Case("pseudo-threshold-nan", f"{PSEUDO} --threshold nan", "--threshold must be a finite"),
    Case("config-nan", f"{TRAIN} --config {{cfg}}", "--lr must be a finite", _config("lr: .nan\n")),
    # B1 links inside artifacts
    Case("verify-symlink", "verify {linked}", "notes.txt is a symbolic link", _linked),
    Case("push-symlink", "push {linked} --repo-id me/s", "notes.txt is a symbolic link", _linked),
    Case("eval-symlinked-arrow", f"{EVAL} {{linked}}", "not a regular file inside", _linked_arrow),
    Case(
        "eval-manifest-climbs",
        f"{EVAL} {{edited}}",
        "lists a file outside it",
        _edited_manifest(lambda m: m["files"].update({"../../etc/passwd": 1})),
    ),
    # B2 config files bounded
    Case(
        "config-alias-bomb",
        f"{TRAIN} --config {{cfg}}",
        "expands to more than",
        _config(ALIAS_BOMB + "epochs: *a7\n"),
    ),
    Case(
        "config-self-alias",
        f"{TRAIN} --config {{cfg}}",
        "refers to itself",
        _config("epochs: &x [*x]\n"),
    ),
    Case(
        "config-too-large",
        f"{TRAIN} --config {{cfg}}",
        "larger than 1 MiB",
        _config("epochs: 1\n" + "# padding\n" * 120_000),
    ),
    Case("benchmark-alias-bomb", f"{SCORE} -b {{b}}", "expands to more than", _bomb_bench),
    Case(
        "config-long-value",
        f"{TRAIN} --config {{cfg}}",
        "must be an integer, got [",
        _config("epochs: [" + ", ".join(["9" * 50] * 2000) + "]\n"),
    ),
    # B3 RANK alone does not switch the lock off
    Case(
        "eval-rank-env",
        f"{EVAL} {{scores}}",
        "is being written by another run",
        _hold_lock,
        env={"RANK": "1", "WORLD_SIZE": "2"},
    ),
    Case("train-rank-env", TRAIN, "is being written by another run", _hold_lock, env={"RANK": "2"}),
    Case(
        "score-rank-env",
        SCORE,
        "is being written by another run",
        _hold_lock,
        env={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"},
    ),
    # B4 special files, bombs, what verify covers
    Case("score-fifo", f"{SCORE} -b {{b}}", "z.png is not a regular file", _fifo),
    Case(
        "train-fifo-id",
        "train detector --id {ids} --epochs 1 -q --out {out}",
        "z.png is not a regular file",
        _fifo_id,
    ),
    Case("score-bomb-header", f"{SCORE} -b {{b}}", "could be decompression bomb", _huge_header),
    Case(
        "verify-edited-manifest",
        "verify {edited}",
        "manifest was changed",
        _edited_manifest(lambda m: m["params"].update(label="other")),
    ),
    # C1 the full domain before anything is created
    Case("train-momentum-0", f"{TRAIN} --momentum 0", "--nesterov needs --momentum > 0"),
    Case("train-min-lr", f"{TRAIN} --lr 0.01 --min-lr 0.1", "must not exceed --lr"),
    Case("train-momentum-1", f"{TRAIN} --momentum 1", "--momentum must lie in [0, 1)"),
    Case("train-seed-negative", f"{TRAIN} --seed -1", "--seed must lie in [0, "),
    Case("gen-seed-huge", f"{GEN_SD} --seed {2**64}", "--seed must lie in [0, "),
    Case("pseudo-threshold-1", f"{PSEUDO} --threshold 1", "--threshold must lie in [0, 1)"),
    Case("train-lr-diverges", f"{TRAIN} --lr 1e12", "training diverged: the mean loss of epoch 1"),
    Case("diffusion-lr-diverges", f"{DIFF} --steps 3 --lr 1e30", "training diverged"),
    Case("gen-steps-model", f"{GEN_SD} --steps 5000", "exceeds the model's 1000 training"),
    Case("dg-steps-model", f"{DG} --steps 5000", "--steps 5000 exceeds the model's 1000"),
    Case("gen-size-huge", f"{GEN_SD} --size 100000", "--size must lie in [1, 9459]"),
    Case("train-size-huge", f"{TRAIN} --image-size 50000", "--image-size must lie in [1, 9459]"),
    Case(
        "score-out-in-benchmark-set",
        f"{SCORE} -b {{b}} --out {{inside}}",
        "lies inside",
        _inside_set,
    ),
    Case(
        "benchmark-size-nan",
        f"{SCORE} -b {{b}}",
        "NaN is not a finite number",
        _bench_value("image_size", "NaN"),
    ),
    Case(
        "benchmark-size-text",
        f"{SCORE} -b {{b}}",
        "image_size must be an integer",
        _bench_value("image_size", '"16"'),
    ),
    Case(
        "benchmark-ood-val-text",
        f"{SCORE} -b {{b}}",
        "'ood_val' must be a list",
        _bench_value("ood_val", '"ood"'),
    ),
    Case(
        "train-arch-kwargs-nan",
        f"{TRAIN} --arch-kwargs '{{{{\"drop_rate\": NaN}}}}'",
        "NaN is not a finite number",
    ),
    Case(
        "gen-ood-classes-fifo",
        "generate --method sona --id digits --model {sd} --ood-classes {names} -q --out {out}",
        "is not a regular file",
        _fifo_names,
    ),
    Case("pseudo-flip-maybe", f"{PSEUDO} --flip maybe", "--flip must be one of auto, yes, no"),
    Case(
        "config-betas",
        f"{DIFF} --config {{cfg}}",
        "--betas must be one of linear, cosine",
        _config("betas: quadratic\n"),
    ),
    Case("dg-trust-nan", f"{DG} --trust-below nan", "--trust-below must be a finite"),
    # C3 damaged files oodkit wrote itself
    Case(
        "train-damaged-checkpoint",
        "train detector --id {ids} --epochs 2 --batch-size 2 --resume -q --out {out}",
        "checkpoint.pt is damaged",
        _paused_then_damaged,
    ),
    Case("train-damaged-state", TRAIN, "damaged state file", _damaged_state),
    Case(
        "score-damaged-weights",
        "score --detector {bad} -b digits --method energy -q --out {out}",
        "model.safetensors cannot be loaded",
        _damaged_weights,
    ),
    Case("eval-column-type", f"{EVAL} {{strings}}", "column id_score holds string", _string_scores),
    Case(
        "eval-manifest-type",
        f"{EVAL} {{edited}}",
        "params is not a dict",
        _edited_manifest(lambda m: m.update(params=["x"])),
    ),
    # C4 misspelled config sections
    Case(
        "config-section-evl",
        f"{EVAL} --config {{cfg}} {{scores}}",
        "unknown section 'evl'",
        _config("eval:\n  plots: false\nevl:\n  plots: true\n"),
    ),
    Case(
        "config-section-detecor",
        f"{TRAIN} --config {{cfg}}",
        "unknown section 'train detecor'",
        _config("train detecor:\n  epochs: 1\ngenerate:\n  steps: 2\n"),
    ),
    Case(
        "config-section-value",
        f"{TRAIN} --config {{cfg}}",
        "must be a mapping of options",
        _config("train detector: 5\ngenerate:\n  steps: 2\n"),
    ),
    Case(
        "sweep-section-typo",
        f"{SWEEP} --grid {{cfg}}",
        "unknown section 'trian detector'",
        _config('{"trian detector": {"epochs": 1}, "score": {"method": "energy"}}', "g.json"),
    ),
    # C6 output names checked first
    Case("eval-out-dot", "eval -q --out . {scores}", "--out . must name a folder"),
    Case("eval-out-empty", "eval -q --out '' {scores}", "must name a folder"),
    Case("train-out-dotdot", "train detector --id digits -q --out ..", "must name a folder"),
    Case("eval-out-long", f"eval -q --out {'n' * 250} {{scores}}", "bytes long; at most"),
]
CASES += ISSUE22

ISSUE23 = [
    # options belong to the methods that declare them (oodkit.methods)
    Case("score-k-for-energy", f"{SCORE} --k 5", "--k is an option of knn, sd-vote, nnguide, not"),
    Case("score-cfg-for-energy", f"{SCORE} --cfg-scale 3", "--cfg-scale is an option of diffguard"),
    Case(
        "score-eps-for-msp",
        f"{SCORE} --method msp --odin-eps 0.01",
        "--odin-eps is an option of odin",
    ),
    Case(
        "score-k-for-diffguard",
        f"{SCORE} --method diffguard --model {{root}}/m --k 3",
        "--k is an option of knn",
    ),
    Case(
        "score-two-methods-one-unread",
        f"{SCORE} --method vim,knn --dice-p 50",
        "of dice, not of --method vim,knn",
    ),
    # the pytorch-ood methods' domains and fits
    Case(
        "score-vim-dim",
        f"{SCORE} --method vim --vim-dim 4096",
        "--vim-dim 4096 must be below the detector's feature dimension",
    ),
    Case(
        "score-percentile",
        f"{SCORE} --method react --percentile 100",
        "--percentile must lie in (0, 100)",
    ),
    Case(
        "score-ash-variant",
        f"{SCORE} --method ash --ash-variant ash-x",
        "--ash-variant must be one of ash-b, ash-p, ash-s",
    ),
    Case("score-dice-p", f"{SCORE} --method dice --dice-p 100", "--dice-p must lie in [0, 100)"),
    Case("score-gen-m", f"{SCORE} --method gen --gen-m 0", "--gen-m must be positive"),
    Case(
        "score-openmax-tail",
        f"{SCORE} --method openmax --openmax-tailsize 1",
        "--openmax-tailsize must be ≥ 2",
    ),
    Case(
        "score-odin-eps", f"{SCORE} --method odin --odin-eps -1", "--odin-eps must not be negative"
    ),
    Case("score-nnguide-k", f"{SCORE} --method nnguide --k 100000", "--k 100000 must lie in 1.."),
    Case("score-ash-prunes-all", f"{SCORE} --method ash --percentile 99.99", "prunes all"),
    Case(
        "score-second-method-refused",  # the first method's artifact is not left behind
        f"{SCORE} --method energy,vim --vim-dim 4096",
        "--vim-dim 4096 must be below",
    ),
]
CASES += ISSUE23

OE = f"{TRAIN} --loss oe --outliers digits:photo-patches-train"
ISSUE24 = [
    # generate: --t-start auto / --scale auto need a target and a judge, one at a time
    Case("gen-t-start-word", f"{GEN_SD} --t-start soon", "--t-start must be an integer or auto"),
    Case(
        "gen-t-start-word-config",
        f"{GEN_SD} --config {{cfg}}",
        "--t-start must be an integer or auto",
        _config("t_start: later\n"),
    ),
    Case("gen-scale-word", f"{GEN_SD} --scale big", "--scale must be a number or auto"),
    Case(
        "gen-target-shift-alone",
        f"{GEN_SD} --target-shift 0.9",
        "--target-shift applies with --t-start auto or --scale auto",
    ),
    Case("gen-auto-no-judge", f"{GEN_SD} --t-start auto --target-shift 0.9", "needs --judge"),
    Case("gen-auto-no-target", f"{GEN_SD} --t-start auto --judge model", "needs --target-shift"),
    Case(
        "gen-scale-auto-sd",
        f"{GEN_SD} --scale auto --target-shift 0.5 --judge model",
        "--scale does not apply to --method sd",
    ),
    Case(
        "gen-target-shift-range",
        f"{GEN_SD} --t-start auto --judge model --target-shift 1.5",
        "--target-shift must lie in (0, 1]",
    ),
    Case("gen-probe-size", f"{GEN_SD} --probe-size 0", "--probe-size must be positive"),
    Case(
        "gen-probe-size-alone",
        f"{GEN_SD} --probe-size 32",
        "--probe-size applies with --t-start auto or --scale auto",
    ),
    # train detector: outlier filters and weights
    Case("train-filter-rule", f"{OE} --outlier-filter lefty", "'lefty' is not a rule"),
    Case("train-filter-number", f"{OE} --outlier-filter ssim<high", "is not a rule"),
    Case(
        "train-filter-ce",
        f"{TRAIN} --outlier-filter left",
        "--outlier-filter is an option of oe, energy, sona, sd, not of --loss ce",
    ),
    Case(
        "train-weight-ce",
        f"{TRAIN} --outlier-weight dissimilarity",
        "--outlier-weight is an option of oe, energy, sona, sd, not of --loss ce",
    ),
    # a loss option the loss does not read (was silently ignored)
    Case("train-beta-ce", f"{TRAIN} --beta 1", "--beta is an option of oe, sona, not of --loss ce"),
    Case("train-club-oe", f"{OE} --club-weight 0.5", "--club-weight is an option of sona, not"),
    Case("train-outlier-batch-ce", f"{TRAIN} --outlier-batch-size 8", "not of --loss ce"),
    Case(
        "train-margin-config",
        f"{OE} --config {{cfg}}",
        "--m-in is an option of energy, not of --loss oe",
        _config("m_in: -20\n"),
    ),
    Case(
        "sweep-grid-unread",
        f"{SWEEP} --grid {{root}}/grid-unread.json",
        "--beta is an option of oe, sona, not of --loss ce",
    ),
    Case(
        "demo-recipe-unread",
        "demo --recipes {root}/recipes-unread.json --out {out}",
        "recipe 'ce': --sd-lambda is an option of sd, not of --loss ce",
    ),
    Case("train-filter-no-judge", f"{OE} --outlier-filter left", "holds no judge verdicts"),
    Case("train-filter-no-ssim", f"{OE} --outlier-filter ssim<0.5", "has no ssim column"),
    Case("train-weight-no-ssim", f"{OE} --outlier-weight dissimilarity", "has no ssim column"),
    Case(
        "train-weight-choice",
        f"{OE} --outlier-weight heavy",
        "--outlier-weight must be one of uniform, dissimilarity",
    ),
    # sweep: the significance level of "beats its baseline"
    Case("sweep-alpha", f"{SWEEP} --grid {{root}}/nope.yaml --alpha 1", "--alpha must lie in"),
]
CASES += ISSUE24


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots``; files with their size and modification time (a folder's
    own time changes when a lock file comes and goes)."""
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (0, 0)
    return out


def refused(args: list[str], roots: list[Path], env: dict[str, str] | None = None) -> str:
    """Run ``oodkit ARGS`` in process; assert the promise; return the one line."""
    before = _tree(*roots)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in result.output
    assert [str(w.message) for w in caught] == []
    assert _tree(*roots) == before
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_one_line(case: Case, env, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = {**env, "out": tmp_path / "out"}
    if case.setup is not None:
        case.setup(paths)
    try:
        args = shlex.split(case.args.format(**{k: str(v) for k, v in paths.items()}))
        line = refused(args, [tmp_path, env["root"]], case.env)
    finally:
        holder = paths.get("holder")
        if holder is not None:
            holder.kill()  # type: ignore[attr-defined]
            holder.wait()  # type: ignore[attr-defined]
            holder.stdout.close()  # type: ignore[attr-defined]
    assert case.message in line, line


def test_the_catalogue_is_large_and_covers_every_stage() -> None:
    assert len(CASES) >= 90
    commands = {shlex.split(c.args)[0] for c in CASES}
    assert {"train", "pseudo-label", "generate", "score", "eval", "info", "push"} <= commands
    assert {"verify", "demo", "sweep", "import"} <= commands


CONSOLE_CASES = [
    ("pickle-weights", f"{TRAIN} --weights {{root}}/pickled.pt", "needs argparse.Namespace"),
    ("yaml-python-tag", f"{SCORE} -b {{bench}}/tag.yaml", "cannot parse"),
    (
        "hub-id-offline",
        "generate --method sd --id digits --model someone/model --out {out}",
        "someone/model",
    ),
    ("manifest-list", f"{EVAL} {{root}}/manifest-list", "not a JSON object"),
    ("unwritable-out", f"eval --out {UNWRITABLE}/m {{scores}}", "cannot write"),
    ("usage", f"{TRAIN} --epochs abc", "Input should be a valid integer"),
]


@pytest.mark.parametrize(
    ("name", "args", "message"), CONSOLE_CASES, ids=[c[0] for c in CONSOLE_CASES]
)
def test_the_console_script_prints_one_line(name, args, message, env, tmp_path) -> None:
    """Through the installed script: third-party warnings and log lines would show here."""
    paths = {**env, "out": tmp_path / "out"}
    argv = shlex.split(args.format(**{k: str(v) for k, v in paths.items()}))
    before = _tree(tmp_path, env["root"])
    proc = subprocess.run(
        [str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert _tree(tmp_path, env["root"]) == before


def test_debug_keeps_the_traceback_and_the_warnings(env, tmp_path) -> None:
    proc = subprocess.run(
        [str(SCRIPT), "--debug", *shlex.split(TRAIN.format(out=tmp_path / "o"))]
        + ["--weights", str(env["root"] / "pickled.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "OodkitError" in proc.stderr
    assert np.all([not p.name.startswith("o") for p in tmp_path.iterdir()])


FULL_DISK = {
    "torch.save": "basic_ios::clear: iostream error",
    "safetensors": 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })',  # noqa: E501
}


def test_a_full_disk_inside_torch_save_is_one_line_and_removes_the_new_partial(
    env, tmp_path, monkeypatch
) -> None:
    """train diffusion's first checkpoint meets a full disk inside ``torch.save`` (what
    libstdc++ streams say): the ENOSPC line, and the partial folder the run made is gone."""

    def full(*args, **kwargs):
        raise RuntimeError(FULL_DISK["torch.save"])

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.chdir(tmp_path)
    line = refused(shlex.split(DIFF.format(out=tmp_path / "out")), [tmp_path, env["root"]])
    assert "No space left on device" in line


def test_a_full_disk_inside_safetensors_is_one_line(env, tmp_path, monkeypatch) -> None:
    import safetensors.torch

    def full(*args, **kwargs):
        raise RuntimeError(FULL_DISK["safetensors"])

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.chdir(tmp_path)
    args = IMP_IN.format(root=env["root"], out=tmp_path / "out")
    assert "No space left on device" in refused(shlex.split(args), [tmp_path, env["root"]])


def test_the_next_run_removes_temporaries_a_dead_run_left(env, tmp_path) -> None:
    """A SIGTERM or a crash in the middle of an artifact write leaves ``<out>.tmp-*`` (and
    ``<out>.old-*`` while replacing one); the next run on that output removes them, and only
    them."""
    for name in ("m.tmp-abcd1234", "m.old-x_y9z8w7"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "junk.arrow").write_bytes(b"\0" * 1000)
    (tmp_path / "m.tmp-keep").mkdir()  # not a name oodkit makes
    result = runner.invoke(app, ["eval", "-q", "--out", str(tmp_path / "m"), str(env["scores"])])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.tmp-keep"]
