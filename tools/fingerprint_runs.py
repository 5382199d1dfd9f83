"""Behaviour check for refactors: run a fixed set of small CLI runs and print their fingerprints.

Every stage is run through the ``oodkit`` command line (whose options do not change in a
refactor) with fixed seeds, one CPU thread and a private feature cache, in a fresh folder.
The content fingerprint of each artifact's manifest (a hash of its table and files) and a
hash of its recorded parameters are printed as JSON. With ``--compare FILE`` the run is set
against an earlier one and a Markdown before / after table is printed; the exit code is 1 if
any fingerprint differs.

    python tools/fingerprint_runs.py --out /tmp/fp --compare tools/fingerprints-before.json

The baseline was taken with the code before the restructure of issue 9
(``git worktree add /tmp/old f4591ef``, then ``python tools/fingerprint_runs.py --code
/tmp/old --out /tmp/fp-old > tools/fingerprints-before.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ARCH = '{"channels": [8, 16, 32, 64], "stem_width": 8}'
CPU = ["--device", "cpu", "--quiet"]


def _detector(
    out: str, loss: str, source: str | None = "generate-sd-pixel", epochs: int = 2
) -> list[str]:
    """A small-backbone digits detector (outliers for losses that take them)."""
    outliers = ["--outliers", source] if source else []
    return [
        "train",
        "detector",
        "--id",
        "digits",
        "--out",
        out,
        "--loss",
        loss,
        "--epochs",
        str(epochs),
        "--batch-size",
        "64",
        "--augment",
        "crop",
        "--arch-kwargs",
        ARCH,
        *outliers,
        *CPU,
    ]


def _diffusion(out: str) -> list[str]:
    """30 steps of the tiny class-conditional model on digits."""
    return [
        "train",
        "diffusion",
        "--id",
        "digits",
        "--out",
        out,
        "--steps",
        "30",
        "--checkpoint-every",
        "15",
        "--batch-size",
        "16",
        *CPU,
    ]


# (artifact folder, CLI arguments); run in order, each in the work folder
RUNS: list[tuple[str, list[str]]] = [
    *[
        (
            f"generate-{m}-tiny-sd",
            [
                "generate",
                "--method",
                m,
                "--id",
                "bench/bench.json",
                "--model",
                "tiny-sd",
                "--out",
                f"generate-{m}-tiny-sd",
                "--steps",
                "10",
                "--batch-size",
                "4",
                "--ood-classes",
                "bench/ood.txt",
                "--save-masks",
                "2",
                *CPU,
            ],
        )
        for m in ("sona", "global", "reconstruct")
    ],
    ("diffusion", _diffusion("diffusion")),
    *[
        (
            f"generate-{m}-pixel",
            [
                "generate",
                "--method",
                m,
                "--id",
                "digits",
                "--model",
                "diffusion",
                "--out",
                f"generate-{m}-pixel",
                "--limit",
                "24",
                "--batch-size",
                "8",
                "--steps",
                "20",
                *(["--t-start", "100"] if m == "sd" else []),
                *CPU,
            ],
        )
        for m in ("sd", "sona")
    ],
    *[
        (
            f"pseudo-labels-{m}",
            [
                "pseudo-label",
                "--id",
                "digits",
                "-c",
                "5",
                "--method",
                m,
                "--out",
                f"pseudo-labels-{m}",
                "--pretext-epochs",
                "2",
                "--scan-epochs",
                "2",
                "--selflabel-epochs",
                "1",
                "--pretext-batch-size",
                "128",
                "--scan-batch-size",
                "128",
                "--num-heads",
                "2",
                "--arch-kwargs",
                ARCH,
                *CPU,
            ],
        )
        for m in ("scan", "kmeans")
    ],
    *[
        (f"detector-{loss}", _detector(f"detector-{loss}", loss, source))
        for loss, source in (
            ("ce", None),
            ("oe", "generate-sd-pixel"),
            ("sona", "generate-sona-pixel"),
            ("sd", "generate-sd-pixel"),
        )
    ],
    (
        "scores-ce/msp",
        [
            "score",
            "--detector",
            "detector-ce",
            "--benchmark",
            "digits",
            "--method",
            "msp,energy,maxlogit,knn",
            "--out",
            "scores-ce",
            "--no-cache",
            "--device",
            "cpu",
        ],
    ),
    (
        "scores-sd",
        [
            "score",
            "--detector",
            "detector-sd",
            "--benchmark",
            "digits",
            "--method",
            "sd-vote",
            "--outliers",
            "generate-sd-pixel",
            "--out",
            "scores-sd",
            "--no-cache",
            "--device",
            "cpu",
        ],
    ),
    (
        "metrics",
        ["eval", "scores-ce/energy", "scores-ce/knn", "scores-sd", "--out", "metrics", "--quiet"],
    ),
]
# paths the code before the restructure did not take in the runs above
RUNS += [
    ("detector-oe-resumed", [*_detector("detector-oe-resumed", "oe"), "--stop-after-epochs", "1"]),
    ("detector-oe-resumed", [*_detector("detector-oe-resumed", "oe"), "--resume"]),
    ("diffusion-resumed", [*_diffusion("diffusion-resumed"), "--stop-after-steps", "15"]),
    ("diffusion-resumed", [*_diffusion("diffusion-resumed"), "--resume"]),
    (
        "diffusion-labels",
        [
            "train",
            "diffusion",
            "--id",
            "digits",
            "--labels",
            "pseudo-labels-kmeans",
            "--out",
            "diffusion-labels",
            "--steps",
            "20",
            "--checkpoint-every",
            "10",
            "--batch-size",
            "16",
            "--flip",
            "--betas",
            "cosine",
            *CPU,
        ],
    ),
    (
        "generate-sd-labels",
        [
            "generate",
            "--method",
            "sd",
            "--id",
            "digits",
            "--labels",
            "pseudo-labels-kmeans",
            "--model",
            "diffusion-labels",
            "--out",
            "generate-sd-labels",
            "--limit",
            "16",
            "--batch-size",
            "8",
            "--steps",
            "20",
            "--t-start",
            "100",
            *CPU,
        ],
    ),
    (
        "detector-sd-labels",
        [
            *_detector("detector-sd-labels", "sd", "generate-sd-labels", epochs=1),
            "--labels",
            "pseudo-labels-kmeans",
        ],
    ),
    (
        "generate-sona-momentum",
        [
            "generate",
            "--method",
            "sona",
            "--id",
            "digits",
            "--model",
            "diffusion",
            "--out",
            "generate-sona-momentum",
            "--limit",
            "8",
            "--per-image",
            "2",
            "--momentum-scale",
            "0.3",
            "--warmup",
            "2",
            "--steps",
            "20",
            "--save-masks",
            "3",
            "--batch-size",
            "8",
            *CPU,
        ],
    ),
    (
        "generate-reconstruct-pixel",
        [
            "generate",
            "--method",
            "reconstruct",
            "--id",
            "digits",
            "--model",
            "diffusion",
            "--out",
            "generate-reconstruct-pixel",
            "--limit",
            "16",
            "--steps",
            "20",
            *CPU,
        ],
    ),
    (
        "detector-extra-weights",
        [
            *_detector("detector-extra-weights", "ce", None, epochs=1),
            "--extra-id",
            "generate-reconstruct-pixel",
            "--val",
            "digits:id_val",
            "--weights",
            "backbone.safetensors",
            "--no-nesterov",
            "--min-lr",
            "0.001",
        ],
    ),
    (
        "pseudo-labels-timm",
        [
            "pseudo-label",
            "--id",
            "digits",
            "-c",
            "5",
            "--features",
            "timm:resnet18",
            "--weights",
            "backbone.safetensors",
            "--out",
            "pseudo-labels-timm",
            "--scan-epochs",
            "1",
            "--selflabel-epochs",
            "1",
            "--scan-batch-size",
            "128",
            "--num-heads",
            "2",
            "--arch-kwargs",
            ARCH,
            *CPU,
        ],
    ),
    (
        "scores-knn5",
        [
            "score",
            "--detector",
            "detector-ce",
            "--benchmark",
            "digits?image_size=32",
            "--method",
            "knn",
            "--k",
            "5",
            "--resize",
            "--out",
            "scores-knn5",
            "--no-cache",
            "--device",
            "cpu",
        ],
    ),
    (
        "metrics-runs",
        [
            "eval",
            "scores-ce/energy",
            "scores-ce/knn",
            "scores-knn5",
            "--out",
            "metrics-runs",
            "--no-plots",
            "--quiet",
        ],
    ),
]
# artifacts written by a run above besides its first folder (the multi-method score run)
EXTRA = ["scores-ce/energy", "scores-ce/maxlogit", "scores-ce/knn"]


# runs `oodkit.cli` from the folder given as first argument, ahead of an editable install
BOOT = (
    "import sys, runpy; root = sys.argv.pop(1); sys.path.insert(0, root); "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "runpy.run_module('oodkit.cli', run_name='__main__', alter_sys=True)"
)


def use_code(root: Path) -> None:
    """Import ``oodkit`` from ``root`` in this process (ahead of an editable install)."""
    sys.path.insert(0, str(root))
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]


def _tiny_sd_builder():
    """The tiny offline Stable Diffusion builder, wherever this version of oodkit keeps it."""
    try:
        from oodkit.testing import build_tiny_stable_diffusion
    except ImportError:  # before the restructure of issue 9
        from oodkit.diffusion.tiny import build_tiny_stable_diffusion
    return build_tiny_stable_diffusion


def _prepare(work: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (work / "bench" / "data" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                work / "bench" / "data" / c / f"{i}.png"
            )
    spec = {
        "id_train": "data",
        "id_test": "data",
        "ood": [{"name": "o", "group": "far", "data": "data/cat"}],
        "class_names": ["cat", "dog"],
        "image_size": 16,
    }
    (work / "bench" / "bench.json").write_text(json.dumps(spec))
    (work / "bench" / "ood.txt").write_text("car\ntree\nhouse\n")
    _tiny_sd_builder()(work / "tiny-sd")
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", num_classes=0, in_chans=1, **json.loads(ARCH))
    save_file(backbone.state_dict(), str(work / "backbone.safetensors"))


def _record(work: Path, name: str) -> dict[str, str]:
    manifest = json.loads((work / name / "oodkit.json").read_text())
    params = json.dumps(manifest["params"], sort_keys=True).encode()
    inputs = json.dumps(manifest["inputs"]).encode()  # order matters: it decides reuse
    return {
        "fingerprint": manifest["fingerprint"],
        "params_sha256": hashlib.sha256(params).hexdigest(),
        "inputs_sha256": hashlib.sha256(inputs).hexdigest(),
    }


def run_all(work: Path, code: Path | None = None) -> dict[str, dict[str, str]]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OODKIT_CACHE": str(work / "cache"),
    }
    import torch

    torch.set_num_threads(1)
    _prepare(work)
    result: dict[str, dict[str, str]] = {}
    for name, args in RUNS:
        t0 = time.perf_counter()
        launch = ["-c", BOOT, str(code)] if code else ["-m", "oodkit.cli"]
        proc = subprocess.run(
            [sys.executable, *launch, *args],
            cwd=work,
            env=env,
            text=True,
            capture_output=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if (work / name / "oodkit.json").exists():  # a paused run writes no artifact yet
            result[name] = _record(work, name)
    for name in EXTRA:
        result[name] = _record(work, name)
    return result


def compare(before: dict, after: dict) -> tuple[str, bool]:
    lines = [
        "| artifact | fingerprint before | fingerprint after | params, inputs | same |",
        "|---|---|---|---|---|",
    ]
    same_all = True
    for name in before:
        b, a = before[name], after.get(name, {})
        same = b["fingerprint"] == a.get("fingerprint")
        params = "same" if b["params_sha256"] == a.get("params_sha256") else "differ"
        if "inputs_sha256" in b and b["inputs_sha256"] != a.get("inputs_sha256"):
            params += ", inputs differ"
        same_all &= same and params == "same"
        lines.append(
            f"| {name} | `{b['fingerprint'][:12]}` | `{a.get('fingerprint', '-')[:12]}` | "
            f"{params} | {'yes' if same else 'NO'} |"
        )
    return "\n".join(lines), same_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fingerprints"))
    parser.add_argument("--compare", type=Path, help="JSON printed by an earlier run")
    parser.add_argument("--code", type=Path, help="run the oodkit in this folder instead")
    args = parser.parse_args()
    if args.code:
        use_code(args.code.resolve())
    result = run_all(args.out, args.code.resolve() if args.code else None)
    print(json.dumps(result, indent=2))
    if args.compare:
        table, same = compare(json.loads(args.compare.read_text()), result)
        print(table, file=sys.stderr)
        sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
