"""ImageNet-shaped DiffGuard dry runs on the CPU, end to end through the command line.

Builds, with random weights in the papers' own layouts and real shapes:

- an ADM ``256x256_diffusion_uncond`` checkpoint (every key and shape of
  ``tests/data/adm_256_uncond_shapes.json``) and a CompVis ``cin256-v2`` checkpoint
  (``tests/data/ldm_cin256_v2_shapes.json``, a Lightning ``.ckpt``), converted with
  ``oodkit import diffusion``;
- a torchvision ResNet-50 (1000 ImageNet classes) imported with ``oodkit import detector``;
- random DISTS / VGG16 weights under piq's file names;
- an OpenOOD v1.5 ImageNet-200 data root with ``--images`` random 320×280 JPEGs per list;

then runs ``oodkit score --method diffguard --preset gdm`` and ``--preset ldm`` (the
classifier mapped to ImageNet-200 by WordNet id, the LDM guided through the same map) with
``--steps`` DDIM steps, each in its own process under ``/usr/bin/time -v``, and prints JSON:
wall seconds and peak resident memory per stage. Not a speed benchmark of the methods (2
steps; random weights): it shows the real shapes run end to end and what they cost here.

    python benchmarks/dry_run_diffguard_imagenet.py --root /tmp/dg-dry
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent.parent / "tests" / "data"
SETS = {
    "train_imagenet200": "images_largescale",
    "val_imagenet200": "images_largescale",
    "test_imagenet200": "images_largescale",
    "test_ssb_hard": "images_largescale",
    "test_ninco": "images_largescale",
    "test_inaturalist": "images_largescale",
    "test_openimage_o": "images_largescale",
    "test_textures": "images_classic",
}


def _random_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def _checkpoints(root: Path) -> tuple[Path, Path, Path]:
    from torchvision.models import resnet50

    adm = root / "ckpt" / "256x256_diffusion_uncond.pt"
    ldm = root / "ckpt" / "cin256-v2" / "model.ckpt"
    cls = root / "ckpt" / "resnet50.pt"
    ldm.parent.mkdir(parents=True, exist_ok=True)
    if not adm.is_file():
        shapes = json.loads((DATA / "adm_256_uncond_shapes.json").read_text())
        torch.save(_random_state(shapes, 0), adm)
    if not ldm.is_file():
        shapes = json.loads((DATA / "ldm_cin256_v2_shapes.json").read_text())
        state = _random_state(shapes, 1)
        betas = np.linspace(0.0015**0.5, 0.0195**0.5, 1000) ** 2
        state["betas"] = torch.tensor(betas, dtype=torch.float32)
        state["alphas_cumprod"] = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
        torch.save({"state_dict": state}, ldm)
    if not cls.is_file():
        net = resnet50()
        g = torch.Generator().manual_seed(2)
        state = {
            k: v if k.endswith("num_batches_tracked") else torch.randn(v.shape, generator=g) * 0.02
            for k, v in net.state_dict().items()
        }
        state.update({k: v.abs() + 0.5 for k, v in state.items() if k.endswith("running_var")})
        torch.save(state, cls)
    return adm, ldm, cls


def _data_root(root: Path, images: int) -> Path:
    from PIL import Image

    data = root / "openood"
    lists = data / "benchmark_imglist" / "imagenet200"
    if lists.is_dir():
        return data
    rng = np.random.default_rng(0)
    lists.mkdir(parents=True)
    for name, folder in SETS.items():
        lines = []
        for i in range(images):
            rel = f"{name}/{i}.jpg"
            (data / folder / name).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (280, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / folder / rel, quality=90)
            label = (i * 37) % 200 if "imagenet200" in name else -1
            lines.append(f"{rel} {label}")
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return data


def _run(name: str, args: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """One oodkit command under /usr/bin/time -v: wall seconds and peak RSS (GiB)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "oodkit.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{name} failed ({done.returncode})")
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    h, m, s = (float(v) if v else 0.0 for v in wall.groups())
    return {
        "stage": name,
        "wall_s": round(h * 3600 + m * 60 + s, 1),
        "peak_rss_gib": round(int(rss.group(1)) / 2**20, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--images", type=int, default=1, help="images per OpenOOD list")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    adm, ldm, cls = _checkpoints(a.root)
    data = _data_root(a.root, a.images)
    from oodkit.testing.tiny_models import write_random_perceptual_weights

    weights = write_random_perceptual_weights(a.root / "perceptual")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(a.threads),
        "HF_HUB_OFFLINE": "1",
        "OODKIT_CACHE": str(a.root / "cache"),
    }
    m = a.root / "models"
    rows = [
        _run("import ADM 256 uncond", ["import", "diffusion", f"adm:{adm}", "--quiet",
             "--overwrite", "--out", str(m / "adm")], env),
        _run("import LDM cin256-v2", ["import", "diffusion", f"ldm:{ldm}", "--quiet",
             "--overwrite", "--out", str(m / "ldm")], env),
        _run("import ResNet-50", ["import", "detector", "torchvision:resnet50", "--weights",
             str(cls), "--trained-on", "imagenet", "--quiet", "--overwrite",
             "--out", str(m / "resnet50")], env),
    ]  # fmt: skip
    common = ["score", "--method", "diffguard", "--detector", str(m / "resnet50"),
              "-b", "imagenet200", "--data-root", str(data), "--steps", str(a.steps),
              "--perceptual-weights", str(weights), "--no-cache", "--quiet", "--overwrite",
              "--diffusion-batch", "8", "--save-syntheses", "1"]  # fmt: skip
    for preset in ("gdm", "ldm"):
        model = m / ("adm" if preset == "gdm" else "ldm")
        out = a.root / f"scores-{preset}"
        row = _run(f"score --preset {preset}", [*common, "--preset", preset,
                   "--model", str(model), "--out", str(out)], env)  # fmt: skip
        manifest = json.loads((out / "dists" / "oodkit.json").read_text())
        row["images"] = a.images * 6  # ImageNet-200 test + 5 OOD test sets
        row["inversion_steps"] = manifest["summary"]["inversion_steps"]
        row["params"] = {k: manifest["params"][k] for k in (
            "guidance", "steps", "stop", "max_inversion_steps", "inversion_eps", "clip_x0",
            "restart", "geometry", "reference", "distance")}  # fmt: skip
        rows.append(row)
    print(json.dumps({"threads": a.threads, "steps": a.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
