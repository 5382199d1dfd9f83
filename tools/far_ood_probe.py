"""Why do the digits detectors rank photo patches as in-distribution? Train one detector and
print, per set (ID test, near, far): pixel statistics, feature and logit norms, mean energy /
MSP, and the AUROC of energy and MSP — plus how well single pixel statistics alone separate
the far set. docs/methods.md §9 reports its output.

    OMP_NUM_THREADS=2 python tools/far_ood_probe.py --seed 0
    OMP_NUM_THREADS=2 python tools/far_ood_probe.py --seed 0 \
        --arch-kwargs '{"norm_layer": "groupnorm1"}'
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from oodkit.data.images import eval_transform
from oodkit.data.sources import get_benchmark
from oodkit.demo import DEMO_ARCH_KWARGS
from oodkit.models.detector import load_detector
from oodkit.stages.train_detector.run import TrainOptions, train_detector


def _probe(model, bench, name: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    ds = bench.load(name)
    t = eval_transform(model.config)
    x = torch.stack([t(im) for im in ds["image"]])
    raw = np.stack([np.asarray(im, dtype=np.float32).ravel() / 255 for im in ds["image"]])
    with torch.no_grad():
        out = model(x)
    logits = out["logits"]
    energy = torch.logsumexp(logits, 1).numpy()
    msp = torch.softmax(logits, 1).max(1).values.numpy()
    stats = {
        "n": len(ds),
        "pixel_mean": float(raw.mean()),
        "pixel_std_within_image": float(raw.std(1).mean()),
        "dark_fraction": float((raw < 0.1).mean()),
        "feature_norm": float(out["features"].norm(dim=1).mean()) if "features" in out else None,
        "logit_norm": float(logits.norm(dim=1).mean()),
        "energy_mean": float(energy.mean()),
        "msp_mean": float(msp.mean()),
    }
    return stats, energy, msp, raw


def _auroc(id_values: np.ndarray, ood_values: np.ndarray) -> float:
    """AUROC with OOD positive for a score where higher = more OOD."""
    y = np.r_[np.zeros(len(id_values)), np.ones(len(ood_values))]
    return float(roc_auc_score(y, np.r_[id_values, ood_values]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--arch-kwargs", default="{}", help="JSON merged into the demo's")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    kwargs = {**DEMO_ARCH_KWARGS, **json.loads(args.arch_kwargs)}
    opts = TrainOptions(epochs=args.epochs, batch_size=32, lr=0.1, augment="crop")
    opts.arch_kwargs, opts.seed = kwargs, args.seed
    with tempfile.TemporaryDirectory() as tmp:
        det = train_detector("digits", Path(tmp) / "det", opts, quiet=True)
        model = load_detector(det.path)
    bench = get_benchmark("digits")
    sets = {n: _probe(model, bench, n) for n in ("id_test", "digits-5-9", "photo-patches")}
    report = {"seed": args.seed, "arch_kwargs": kwargs, "sets": {n: s[0] for n, s in sets.items()}}
    _, e_id, m_id, raw_id = sets["id_test"]
    for name in ("digits-5-9", "photo-patches"):
        _, e, m, _ = sets[name]
        report[f"auroc_{name}"] = {"energy": _auroc(-e_id, -e), "msp": _auroc(-m_id, -m)}
    raw_far = sets["photo-patches"][3]
    report["pixel_stat_auroc_far"] = {  # the statistic itself as the OOD score
        "mean": _auroc(raw_id.mean(1), raw_far.mean(1)),
        "low_contrast (−std)": _auroc(-raw_id.std(1), -raw_far.std(1)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
