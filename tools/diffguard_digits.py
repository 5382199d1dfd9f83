"""DiffGuard on digits, 3 detector seeds: each distance, both guidance paths, oracle, and the
combination with energy, next to energy on the same samples (docs/diffguard.md, Results).

    OMP_NUM_THREADS=2 python tools/diffguard_digits.py --out runs/diffguard-digits
    OMP_NUM_THREADS=2 python tools/diffguard_digits.py --out runs/diffguard-digits \
        --variants cfg-nocam --distances logits-l1,ssim --no-combine
    OMP_NUM_THREADS=2 python tools/diffguard_digits.py --out runs/diffguard-digits \
        --variants cfg,classifier,cfg-input,classifier-official

Trains the demo's diffusion model and ``ce`` detectors (resumable), scores the first
``--limit`` samples of each test set, evaluates, and prints one JSON line per run label.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from oodkit.demo import DIFFGUARD_DEMO, DemoOptions, _detector_options
from oodkit.stages.evaluate.run import evaluate
from oodkit.stages.score.run import score
from oodkit.stages.train_detector.run import train_detector
from oodkit.stages.train_diffusion.run import DiffusionOptions, train_diffusion

DISTANCES = "logits-l1,ssim,psnr,gmsd,l2"
VARIANTS = {
    **DIFFGUARD_DEMO,
    "cfg-nocam": {"guidance": "cfg", "cam": False},
    # the official recipes' switches that apply to a 16-px pixel model without DISTS weights
    "cfg-input": {"guidance": "cfg", "reference": "input"},  # ldm: compared with the input
    "classifier-official": {  # gdm: ε at the source timestep, x̂₀ clipped, official restart
        "guidance": "classifier",
        "steps": 25,
        "inversion_eps": "source",
        "clip_x0": True,
        "restart": "official",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/diffguard-digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--variants", default=",".join(DIFFGUARD_DEMO), help=f"of {', '.join(VARIANTS)}"
    )
    ap.add_argument("--distances", default=DISTANCES)
    ap.add_argument("--no-combine", action="store_true", help="skip the +energy rows")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    o = DemoOptions(seeds=a.seeds, quiet=True)
    model = train_diffusion(
        "digits",
        out / "diffusion",
        DiffusionOptions(steps=o.diffusion_steps),
        resume=True,
        quiet=True,
    )
    runs = []
    for seed in range(a.seeds):
        det = train_detector(
            "digits",
            out / f"detector-ce-seed{seed}",
            _detector_options(o, "ce", seed),
            resume=True,
            quiet=True,
        )
        energy = score(det.path, "digits", ["energy"], out / f"energy-seed{seed}", limit=a.limit)[0]
        runs.append(energy.path)
        for name in a.variants.split(","):
            kw = VARIANTS[name]
            for oracle in (False, True):
                arts = score(
                    det.path,
                    "digits",
                    ["diffguard"],
                    out / f"diffguard-{name}{'-oracle' if oracle else ''}-seed{seed}",
                    model=str(model.path),
                    distance=a.distances,
                    limit=a.limit,
                    combine_with=None if oracle or a.no_combine else str(energy.path),
                    oracle=oracle,
                    diffusion_batch=32,
                    quiet=True,
                    **kw,
                )
                runs += [x.path for x in arts]
                print(
                    json.dumps(
                        {
                            "done": f"{name} oracle={oracle} seed={seed}",
                            "images_per_s": arts[0].manifest.summary["images_per_s_this_run"],
                            "inversion_steps": arts[0].manifest.summary["inversion_steps"],
                        }
                    ),
                    flush=True,
                )
    art, blocks = evaluate(runs, out / "metrics", overwrite=True)
    for b in blocks:
        print(json.dumps(b, default=str), flush=True)


if __name__ == "__main__":
    main()
