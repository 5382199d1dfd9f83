"""Recipes that train real models on digits and check the result (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oodkit.demo import DEMO_ARCH_KWARGS as SMALL
from oodkit.diffusion.denoisers import load_denoiser
from oodkit.diffusion.quality import recognition_rate
from oodkit.models.detector import load_detector
from oodkit.stages.pseudo_label.run import PseudoLabelOptions, pseudo_label
from oodkit.stages.score.run import score
from oodkit.stages.train_detector.run import TrainOptions, train_detector
from oodkit.stages.train_diffusion.run import DiffusionOptions, train_diffusion


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2])
def test_scan_clusters_digits(tmp_path: Path, seed: int) -> None:
    """ID classes 0–4 with labels hidden: SCAN ≥ 0.85 accuracy and ≥ k-means on its features.

    Seeds 0 and 2 of docs/pseudolabel.md's table (2 is the weakest); seed 1 is left out to
    keep the suite under 25 minutes (3 minutes a seed).
    """
    o = PseudoLabelOptions(
        method="scan",
        num_clusters=5,
        arch_kwargs=SMALL,
        pretext_epochs=60,
        scan_epochs=60,
        scan_lr=1e-3,
        selflabel_epochs=10,
        selflabel_lr=1e-4,
        num_heads=10,
        seed=seed,
    )
    art = pseudo_label("digits", tmp_path / "pl", o, quiet=True)
    s = art.manifest.summary
    print("SCAN", {k: s[k] for k in ("accuracy", "nmi", "ari")}, "k-means", s["kmeans"])
    assert s["accuracy"] >= 0.85 and s["accuracy"] >= s["kmeans"]["accuracy"]
    table = art.dataset()
    assert set(table["cluster"]) == set(range(5)) and len(table) == 501
    assert all(0 < c <= 1 for c in table["confidence"])
    assert {p.name for p in art.path.iterdir()} >= {"pretext.safetensors", "clustering.safetensors"}


@pytest.mark.slow
def test_class_conditional_samples_are_recognised(tmp_path: Path) -> None:
    """A separately trained classifier recognises ≥ 80 % of CFG samples as their class."""
    model = train_diffusion(
        "digits", tmp_path / "dm", DiffusionOptions(steps=500, checkpoint_every=250), quiet=True
    )
    for name in (
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "oodkit_model.json",
        "samples.png",
    ):
        assert (model.path / name).exists(), name
    classifier = train_detector(
        "digits",
        tmp_path / "clf",
        TrainOptions(epochs=10, batch_size=32, augment="crop", arch_kwargs=SMALL, seed=5),
        quiet=True,
    )
    rate = recognition_rate(
        load_denoiser(model.path), load_detector(classifier.path), per_class=40, steps=20, scale=2.0
    )
    print(f"recognition rate after 500 steps: {rate:.3f}")
    assert rate >= 0.8


@pytest.mark.slow
def test_oe_with_held_out_photos_does_not_lower_near_ood_auroc_beyond_seed_noise(
    ce_detector: Path, detector_options, tmp_path: Path
) -> None:
    """3 seeds each of ce and oe (outliers: the photo-patch pool, disjoint from the test
    patches); the mean near-OOD energy AUROC of oe must not fall more than 0.02 below ce's.

    Measured with per-sample augmentation seeds (issue 10): ce 0.971 / 0.968 / 0.949, oe
    0.943 / 0.942 / 0.978 — a per-seed spread of up to 0.035, so a strict ``oe ≥ ce`` on 3
    seeds tests the seeds, not the method (with the former per-process augmentation stream
    oe was above ce). A real harm (e.g. oe at 0.90) still fails."""
    from oodkit.stages.evaluate.run import evaluate

    near = {"ce": [], "oe": []}
    for seed in range(3):
        for loss in ("ce", "oe"):
            if loss == "ce" and seed == 0:
                det = ce_detector  # the module fixture is exactly this run
            else:
                outl = ["digits:photo-patches-train"] if loss == "oe" else []
                det = train_detector(
                    "digits",
                    tmp_path / f"{loss}{seed}",
                    detector_options(loss=loss, seed=seed),
                    outliers=outl,
                    quiet=True,
                ).path
            art = score(det, "digits", ["energy"], tmp_path / f"s-{loss}{seed}")[0]
            _, blocks = evaluate([art.path], tmp_path / f"m-{loss}{seed}", plots=False)
            near[loss].append(blocks[0]["groups"]["near"]["auroc"])
    print("near-OOD energy AUROC per seed:", near)
    assert np.mean(near["oe"]) >= np.mean(near["ce"]) - 0.02
