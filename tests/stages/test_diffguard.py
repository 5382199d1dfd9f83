"""``oodkit score --method diffguard`` end to end on digits with the tiny class-conditional model
and the small ce detector: distances, combination, resume, two processes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from oodkit.artifacts import ShardedWriter, load_artifact
from oodkit.cli import app
from oodkit.diffusion import denoisers
from oodkit.stages.score.run import score

runner = CliRunner()
pytestmark = pytest.mark.threads(2)

LIMIT = 6  # samples per test set: 24 with ID validation


def _dg(det, model, out, **kw):
    opts = {"model": str(model), "limit": LIMIT, "steps": 6, "quiet": True, **kw}
    return score(det, "digits", "diffguard", out, **opts)


def _scores(path) -> np.ndarray:
    return np.asarray(load_artifact(path).dataset()["id_score"])


def test_each_distance_is_its_reference_call_on_the_syntheses(
    ce_detector, class_model, tmp_path, perceptual_weights
):
    """One pass, one artifact per distance; each equals the similarity of the engine's
    syntheses (run again here) with the input."""
    from oodkit.data.images import fit_square
    from oodkit.data.sources import get_benchmark
    from oodkit.diffusion.diffguard import (
        Classifier,
        Guidance,
        Inversion,
        StopRule,
        diffguard_batch,
    )
    from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
    from oodkit.models.detector import load_detector
    from oodkit.similarity import logits_l1, measure

    names = ["logits-l1", "ssim", "psnr", "gmsd", "l2", "dists", "lpips"]
    arts = _dg(
        ce_detector, class_model, tmp_path / "dg", guidance="cfg", reference="input",
        distance=",".join(names), diffusion_batch=4, perceptual_weights=str(perceptual_weights),
    )  # fmt: skip
    assert [a.path.name for a in arts] == names
    bench = get_benchmark("digits")
    ds = bench.load("id_test").select(range(4))
    images = fit_square(ds["image"], 16, 1)[0]
    det = load_detector(ce_detector)
    den = denoisers.load_denoiser(str(class_model))
    c = Classifier(det)
    sampler = DDIMSampler(ddim_scheduler(den.scheduler_config), 6)
    labels = c.logits(images).argmax(1)
    syn = diffguard_batch(
        den, sampler, c, images, labels, labels.tolist(),
        [f"digits-0-4/{s}" for s in ds["sample_id"]],
        Inversion(StopRule(6)), Guidance("cfg"), False,
    )  # fmt: skip
    for art in arts:
        d = art.path.name
        got = _scores(art.path)[:4]
        ref = (
            logits_l1(c.logits(syn.guided), c.logits(images))
            if d == "logits-l1"
            else measure(d, perceptual_weights)(syn.guided, images)
        )
        assert np.allclose(got, ref.detach().numpy(), rtol=1e-4, atol=1e-4), d
        assert art.manifest.params["distance"] == d
    assert arts[0].manifest.summary["inversion_steps"] == {"mean": 6.0, "min": 6, "max": 6}
    kinds = [i["kind"] for i in arts[0].manifest.inputs]
    assert "dists-weights" in kinds and "lpips-weights" in kinds


def test_inversions_are_reused_across_guidance_settings(
    ce_detector, class_model, tmp_path, monkeypatch
):
    """A second run that differs only after inversion inverts nothing, and scores what the
    same run without the cache scores."""
    from oodkit.diffusion import diffguard

    inverted = []
    original = diffguard.invert

    def counting(den, sampler, images, rule):
        inverted.append(len(images))
        return original(den, sampler, images, rule)

    monkeypatch.setattr(diffguard, "invert", counting)
    kw = {"stop": "0.5", "distance": "ssim", "diffusion_batch": 4}
    _dg(ce_detector, class_model, tmp_path / "cfg", guidance="cfg", **kw)
    inverted.clear()
    cached = _dg(ce_detector, class_model, tmp_path / "cls", guidance="classifier", **kw)
    assert sum(inverted) == 0
    fresh = _dg(
        ce_detector, class_model, tmp_path / "fresh", guidance="classifier", cache=False, **kw
    )
    assert sum(inverted) == 3 * LIMIT
    assert np.array_equal(_scores(cached[0].path), _scores(fresh[0].path))
    shallower = _dg(
        ce_detector, class_model, tmp_path / "deep", guidance="classifier", **{**kw, "stop": "0.34"}
    )
    assert sum(inverted) == 6 * LIMIT  # another depth is another recipe
    assert shallower[0].manifest.params["max_inversion_steps"] == 2


def test_save_syntheses_is_an_artifact_with_a_preview(ce_detector, class_model, tmp_path):
    from PIL import Image

    arts = _dg(
        ce_detector, class_model, tmp_path / "dg", guidance="cfg", distance="ssim",
        save_syntheses=2, diffusion_batch=4,
    )  # fmt: skip
    scores, syn = arts
    assert scores.path == tmp_path / "dg" / "ssim" and syn.path == tmp_path / "dg" / "syntheses"
    assert syn.manifest.kind == "syntheses" and syn.manifest.params["samples"] == 2
    ds = syn.dataset()
    assert ds["group"] == ["id", "id", "near", "near"]
    assert all(ds[n][i] is not None for n in ("input", "guided", "unguided") for i in range(4))
    table = scores.dataset()
    pairs = zip(table["dataset"], table["sample_id"], strict=True)
    by_key = dict(zip(pairs, table["id_score"], strict=True))
    for d, sid, value in zip(ds["dataset"], ds["sample_id"], ds["score:ssim"], strict=True):
        assert by_key[d, sid] == value
    with Image.open(syn.path / "preview.png") as im:
        assert im.size == (3 * (96 + 8), 4 * (96 + 4))
    assert "syntheses" not in {p.name for p in scores.path.iterdir()}


@pytest.fixture
def merged(monkeypatch) -> list:
    """The per-sample tables of the runs (guide labels, stops, every distance)."""
    kept = []
    original = ShardedWriter.discard

    def keep(self):
        kept.append(self.table())
        return original(self)

    monkeypatch.setattr(ShardedWriter, "discard", keep)
    return kept


def test_oracle_and_combination_rules(ce_detector, class_model, tmp_path, merged) -> None:
    from oodkit.data.images import ImageTable, eval_transform
    from oodkit.data.sources import get_benchmark
    from oodkit.models.detector import load_detector
    from oodkit.scoring.combine import combine
    from oodkit.scoring.features import extract
    from oodkit.stages.diffguard.work import Item, oracle_labels
    from oodkit.stages.score.posthoc import energy

    base = score(ce_detector, "digits", "energy", tmp_path / "energy", limit=LIMIT)[0]
    arts = _dg(
        ce_detector, class_model, tmp_path / "dg", guidance="classifier", distance="ssim",
        combine_with=str(base.path), oracle=True, trust_below=0.2, trust_above=0.8,
    )  # fmt: skip
    alone, both = arts
    assert both.path.name == "ssim+energy"
    assert both.manifest.params["method"] == "diffguard+energy"
    assert alone.manifest.params["oracle"] is True and "oracle" in alone.manifest.params["label"]
    table = merged[-1]
    bench = get_benchmark("digits")
    val_name = bench.id_val.name
    is_val = np.array([k.startswith(val_name + "/") for k in table["key"]])
    # oracle: true labels for ID rows (test and validation), seeded random ones for OOD rows
    truth = alone.dataset()["label"][:LIMIT]
    assert table["guide_label"][:LIMIT] == truth
    ood = [
        Item(k, "", "", "far", 0, "", -1)
        for k in table["key"]
        if not k.startswith((bench.id_test.name + "/", val_name + "/"))
    ]
    ood_guides = [
        g
        for k, g in zip(table["key"], table["guide_label"], strict=True)
        if k in {i.key for i in ood}
    ]
    assert ood_guides == oracle_labels(ood, 0, 5)
    # the combination, recomputed: energy and DiffGuard quantiles on the ID validation set
    det = load_detector(ce_detector)
    val = bench.load("id_val").select(range(LIMIT))
    base_val = energy(extract(det, ImageTable(val, eval_transform(det.config), mode="L"))["logits"])
    dg_val = np.asarray(table["score:ssim"])[is_val]
    hand = combine(_scores(base.path), _scores(alone.path), base_val.numpy(), dg_val, 0.2, 0.8)
    assert np.allclose(_scores(both.path), hand)
    assert (np.abs(_scores(both.path)) > 1).any()  # some rows trusted to the baseline


def test_kill_and_resume_gives_identical_scores(
    ce_detector, class_model, tmp_path, interrupt_shards
):
    kw = {"guidance": "cfg", "distance": "ssim,l2", "diffusion_batch": 4, "shard_size": 4}
    whole = _dg(ce_detector, class_model, tmp_path / "whole", **kw)
    restart = interrupt_shards(2)
    with pytest.raises(KeyboardInterrupt):
        _dg(ce_detector, class_model, tmp_path / "resumed", **kw)
    restart()
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.partial").is_dir()
    resumed = _dg(ce_detector, class_model, tmp_path / "resumed", **kw)
    for a, b in zip(whole, resumed, strict=True):
        assert a.manifest.fingerprint == b.manifest.fingerprint
    assert not (tmp_path / "resumed.partial").exists()


def test_two_processes_give_the_scores_of_one(ce_detector, class_model, tmp_path, torchrun):
    args = [
        "score", "--method", "diffguard", "--detector", str(ce_detector), "--benchmark",
        "digits", "--model", str(class_model), "--guidance", "classifier", "--steps", "5",
        "--limit", "4", "--distance", "ssim", "--diffusion-batch", "2", "--shard-size", "2",
        "--no-cache", "--quiet",
    ]  # fmt: skip
    torch.set_num_threads(1)
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.array_equal(_scores(tmp_path / "one"), _scores(tmp_path / "two"))


def _fail(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_input_is_refused_before_anything_loads(
    ce_detector, class_model, tmp_path, monkeypatch
):
    from oodkit.testing import build_tiny_ddpm

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(denoisers, "load_denoiser", no_load)
    ddpm = build_tiny_ddpm(tmp_path / "ddpm", image_size=16, channels=1)
    small = build_tiny_ddpm(tmp_path / "small", image_size=8, channels=1)
    rgb = build_tiny_ddpm(tmp_path / "rgb", image_size=16, channels=3)
    base = ["score", "--method", "diffguard", "--detector", str(ce_detector), "-b", "digits"]
    dg = [*base, "--model", str(class_model)]
    energy = score(ce_detector, "digits", "energy", tmp_path / "energy", limit=3)
    cases = [
        (base, "needs --model"),
        ([*base, "--model", str(ddpm), "--guidance", "cfg"], "this model is unconditional"),
        ([*base, "--model", str(small)], "classifier-guidance cut-outs need detector ≤ model"),
        ([*base, "--model", str(rgb)], "makes 3-channel images but the detector takes 1"),
        ([*dg, "--distance", "ssim,dist"], "unknown distance 'dist'"),
        (
            [*dg, "--distance", "dists", "--perceptual-weights", str(tmp_path)],
            "dists needs local weights",
        ),
        (
            [*dg, "--stop", "aes", "--aes-dists", "0.38", "--perceptual-weights", str(tmp_path)],
            "dists needs local weights",
        ),
        ([*dg, "--distance", ","], "--distance: none given"),
        ([*dg, "--guidance", "sega"], "--guidance must be one of classifier, cfg"),
        ([*dg, "--reference", "x"], "--reference must be one of unguided, input"),
        ([*dg, "--stop", "1.5"], "--stop must be aes or a fraction in (0, 1]"),
        ([*dg, "--stop", "deep"], "--stop must be aes or a fraction"),
        ([*dg, "--stop", "aes", "--aes-psnr", "40", "--max-invert", "0"], "--max-invert"),
        ([*dg, "--aes-psnr", "-1"], "--aes-psnr must not be negative"),
        ([*dg, "--preset", "sd"], "--preset must be one of gdm, ldm"),
        ([*dg, "--geometry", "crop"], "--geometry must be one of resize, classifier, model"),
        ([*dg, "--restart", "late"], "--restart must be one of exact, official"),
        ([*dg, "--inversion-eps", "mid"], "--inversion-eps must be one of target, source"),
        ([*dg, "--steps", "0"], "--steps must be positive"),
        ([*dg, "--cutouts", "0"], "--cutouts must be positive"),
        ([*dg, "--limit", "0"], "--limit must be positive"),
        ([*dg, "--cam-cut", "1"], "--cam-cut must lie in [0, 1)"),
        ([*dg, "--cam-resize", "latent"], "--cam-resize must be one of image, grid"),
        ([*dg, "--trust-below", "0.9", "--trust-above", "0.1"], "--trust-below"),
        ([*dg, "--method", "diffguard,energy"], "runs alone"),
        ([*dg, "--combine-with", str(energy[0].path.parent / "nothing")], "nothing"),
        (
            [*dg, "--aes-gmsd", "0.5", "--model", str(ddpm), "--combine-with", str(ddpm)],
            "is not an oodkit artifact",
        ),
    ]
    for n, (args, message) in enumerate(cases):
        line = _fail([*args, "--quiet", "--out", str(tmp_path / f"o{n}")])
        assert message in line, (args, line)
    assert not list(tmp_path.glob("o*"))


@pytest.mark.parametrize("geometry", ["classifier", "model"])
def test_geometries_show_the_classifier_what_the_official_runs_show_it(
    ce_detector, tmp_path, geometry
):
    """``classifier`` (official GDM): inputs are the detector's own resize and crop, upsampled
    for a larger model, syntheses resized back before the classifier and the distances;
    ``model`` (official LDM): the model's square, seen by the classifier at that size."""
    import json

    import torch.nn.functional as F
    from diffusers import DDIMScheduler

    from oodkit.artifacts import write_artifact
    from oodkit.data.images import eval_view, fit_square
    from oodkit.data.sources import get_benchmark
    from oodkit.diffusion.diffguard import (
        Classifier,
        Guidance,
        Inversion,
        StopRule,
        invert,
        resynthesise,
    )
    from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
    from oodkit.diffusion.unets import build_unet
    from oodkit.models.detector import DetectorConfig, load_detector
    from oodkit.similarity import logits_l1

    torch.manual_seed(0)
    unet = build_unet("tiny", 32, 1, 5)
    info = {"num_classes": 5, "null_class": 5, "channels": 1, "image_size": 32, "class_names": None}

    def files(folder):
        unet.save_pretrained(str(folder / "unet"))
        DDIMScheduler(clip_sample=False).save_pretrained(str(folder / "scheduler"))
        (folder / "oodkit_model.json").write_text(json.dumps(info))

    model = write_artifact(tmp_path / "m32", "diffusion-model", {}, write_files=files).path
    (art,) = _dg(
        ce_detector, model, tmp_path / "dg", guidance="cfg", reference="input",
        distance="logits-l1", diffusion_batch=4, geometry=geometry,
    )  # fmt: skip
    assert art.manifest.params["geometry"] == geometry
    ds = get_benchmark("digits").load("id_test").select(range(4))
    config = DetectorConfig.load(ce_detector)
    det = load_detector(ce_detector)
    den = denoisers.load_denoiser(str(model))
    c = Classifier(det, resize=geometry != "model")
    if geometry == "classifier":
        view = eval_view(config)
        images = torch.stack([view(im.convert("L")) for im in ds["image"]])
        assert images.shape[-1] == config.image_size < 32
    else:
        images = fit_square(ds["image"], 32, 1)[0]
    labels = c.logits(images).argmax(1)
    model_in = F.interpolate(images, size=32, mode="bilinear", antialias=True)
    sampler = DDIMSampler(ddim_scheduler(den.scheduler_config), 6)
    inverted = invert(den, sampler, model_in, Inversion(StopRule(6)))
    syn = resynthesise(
        den, sampler, c, images, inverted, inverted[1], labels, labels.tolist(),
        [f"digits-0-4/{s}" for s in ds["sample_id"]], Guidance("cfg"), False,
    )  # fmt: skip
    size = images.shape[-1]
    guided = F.interpolate(syn.guided, size=size, mode="bilinear", antialias=True).clamp(0, 1)
    ref = logits_l1(c.logits(guided), c.logits(images))
    assert np.allclose(_scores(art.path)[:4], ref.detach().numpy(), rtol=1e-4, atol=1e-4)
