"""DiffGuard's engine against hand computations: AES batching, both guidance rules, the
combination rule and oracle labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from oodkit.diffusion.diffguard import (
    Classifier,
    Guidance,
    Inversion,
    StopRule,
    _cfg_eps,
    _classifier_eps,
    diffguard_batch,
    psnr_255,
)
from oodkit.diffusion.sampler import DDIMSampler, Step
from oodkit.scoring.combine import combine, id_quantiles
from oodkit.stages.diffguard.work import Item, oracle_labels

pytestmark = pytest.mark.threads(1)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny class-conditional pixel denoiser and a random 5-class 16-px detector."""
    from oodkit.demo import DEMO_ARCH_KWARGS
    from oodkit.diffusion.denoisers import PixelClassDenoiser
    from oodkit.diffusion.unets import build_unet
    from oodkit.models.detector import Detector, DetectorConfig

    torch.manual_seed(0)
    unet = build_unet("tiny", 16, 1, 5).eval()
    info = {"num_classes": 5, "channels": 1, "image_size": 16}
    den = PixelClassDenoiser(unet, dict(DDIMScheduler(clip_sample=False).config), info)
    config = DetectorConfig.for_data("resnet18", 5, 1, 16, heads=[], arch_kwargs=DEMO_ARCH_KWARGS)
    det = Detector(config).eval()
    return den, det


def test_psnr_255_is_the_official_convention() -> None:
    """20·log10(255/√MSE) on [−1, 1] tensors; 48.5 there is 6.39 dB on a [0, 1] scale."""
    import piq

    torch.manual_seed(0)
    x, y = torch.rand(3, 1, 8, 8) * 2 - 1, torch.rand(3, 1, 8, 8) * 2 - 1
    mse = ((x - y) ** 2).flatten(1).mean(1)
    assert torch.allclose(psnr_255(x, y), 20 * torch.log10(255 / mse.sqrt()))
    unit = piq.psnr((x + 1) / 2, (y + 1) / 2, data_range=1.0, reduction="none")
    assert torch.allclose(psnr_255(x, y) - unit, torch.tensor(20 * math.log10(127.5)), atol=1e-4)
    assert round(48.5 - 20 * math.log10(127.5), 2) == 6.39


@torch.no_grad()
def test_fixed_depth_inversion_is_the_inversion_trajectory(parts) -> None:
    den, _ = parts
    sampler = DDIMSampler(DDIMScheduler(clip_sample=False), 10)
    x0 = torch.rand(3, 1, 16, 16) * 2 - 1
    cond = den.condition([[None] * 3])

    def eps(x, t, rows, k):
        return den.eps(x, t, cond[:, rows])[0]

    out, stops = sampler.invert_until(x0, eps, 6)
    assert stops == [6, 6, 6]
    assert torch.allclose(out, sampler.invert(x0, eps, 6)[-1], atol=1e-6)


def _contrasts(n: int) -> torch.Tensor:
    """Images in [−1, 1] of rising contrast: low-contrast ones stay close to themselves
    longer under inversion, so AES stops them at other steps."""
    torch.manual_seed(1)
    amp = torch.linspace(0.05, 1.0, n).view(-1, 1, 1, 1)
    return (torch.rand(n, 1, 16, 16) * 2 - 1) * amp


@torch.no_grad()
def test_aes_stops_each_sample_where_the_one_sample_run_stops(parts) -> None:
    """Batched inversion with per-sample early stops equals running each sample alone, and
    every sample stops at the first step below the threshold (or at the cap)."""
    den, _ = parts
    sampler = DDIMSampler(DDIMScheduler(clip_sample=False), 20)
    x0 = _contrasts(6)
    cond = den.condition([[None] * 6])

    def eps(x, t, rows, k):
        return den.eps(x, t, cond[:, rows])[0]

    trajectory = sampler.invert(x0, eps, 18)
    levels = torch.stack([psnr_255(x, x0) for x in trajectory])  # [steps, B]
    threshold = float(levels[8].median())
    rule = StopRule(18, psnr=threshold)
    out, stops = sampler.invert_until(x0, eps, 18, rule)
    expected = [next((j + 1 for j in range(18) if levels[j, b] < threshold), 18) for b in range(6)]
    assert stops == expected and len(set(stops)) > 1
    for b in range(6):
        alone, (stop,) = sampler.invert_until(x0[b : b + 1], eps, 18, rule)
        assert stop == stops[b]
        assert torch.allclose(out[b : b + 1], alone, atol=1e-5)


def test_guidance_net_is_the_detector_with_batchnorm_folded(parts) -> None:
    """The gradient path's copy computes the detector's logits and input gradient, with no
    BatchNorm left (folded into the convolutions)."""
    _, det = parts
    c = Classifier(det)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in det.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in c.guide.modules())
    crops = torch.rand(
        4, det.config.in_chans, c.size, c.size, generator=torch.Generator().manual_seed(0)
    )
    leaf_a, leaf_b = crops.clone().requires_grad_(True), crops.clone().requires_grad_(True)
    fused = c.crop_logits(leaf_a)
    plain = det((leaf_b - c.mean) / c.std)["logits"]
    assert torch.allclose(fused, plain, atol=1e-5)
    (ga,) = torch.autograd.grad(fused.log_softmax(1)[:, 1].sum(), leaf_a)
    (gb,) = torch.autograd.grad(plain.log_softmax(1)[:, 1].sum(), leaf_b)
    assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_aes_pixel_rules_stop_below_any_threshold(parts) -> None:
    """A pixel similarity rule (1 − GMSD, 1 − DISTS) sees x_t and x₀ in [0, 1]; a sample stops
    at the first step where PSNR or any pixel similarity falls below its threshold."""
    from oodkit.similarity import measure

    den, _ = parts
    sampler = DDIMSampler(DDIMScheduler(clip_sample=False), 20)
    x0 = _contrasts(6)
    cond = den.condition([[None] * 6])

    def eps(x, t, rows, k):
        return den.eps(x, t, cond[:, rows])[0]

    def one_minus_gmsd(a, b):
        return 1 + measure("gmsd")(a, b)

    trajectory = sampler.invert(x0, eps, 18)
    pixels = [((x + 1) / 2).clamp(0, 1) for x in (*trajectory, x0)]
    sim = torch.stack([one_minus_gmsd(x, pixels[-1]) for x in pixels[:-1]])
    psnr = torch.stack([psnr_255(x, x0) for x in trajectory])
    g_th, p_th = float(sim[10].median()), float(psnr[4].min()) - 1e-3
    rule = StopRule(18, psnr=p_th, pixel=[(g_th, one_minus_gmsd)])
    _, stops = sampler.invert_until(x0, eps, 18, rule)
    below = (sim < g_th) | (psnr < p_th)
    expected = [next((j + 1 for j in range(18) if below[j, b]), 18) for b in range(6)]
    assert stops == expected and len(set(stops)) > 1


@pytest.mark.parametrize("kind", ["cfg", "classifier"])
@torch.no_grad()
def test_batched_diffguard_equals_one_sample_at_a_time(parts, kind) -> None:
    """AES batched by stop step: the whole batch gives each sample's one-at-a-time result."""
    den, det = parts
    sampler = DDIMSampler(DDIMScheduler(clip_sample=False), 12)
    classifier = Classifier(det)
    images = (_contrasts(5) + 1) / 2
    labels = torch.tensor([0, 3, 1, 4, 2])
    keys = [f"k{i}" for i in range(5)]
    cond = den.condition([[None] * 5])
    x0 = images * 2 - 1
    path = sampler.invert(x0, lambda x, t, rows, k: den.eps(x, t, cond[:, rows])[0], 10)
    threshold = float(psnr_255(path[4], x0).median())
    rule = Inversion(StopRule(10, psnr=threshold))
    g = Guidance(kind, cfg_scale=3.0, cam_cut=0.3, classifier_scale=2.0, cutouts=2)
    whole = diffguard_batch(
        den, sampler, classifier, images, labels, labels.tolist(), keys, rule, g, True
    )
    assert len(set(whole.stops)) > 1
    for b in range(5):
        one = diffguard_batch(
            den,
            sampler,
            classifier,
            images[b : b + 1],
            labels[b : b + 1],
            [int(labels[b])],
            keys[b : b + 1],
            rule,
            g,
            True,
        )
        assert one.stops == [whole.stops[b]]
        assert torch.allclose(one.guided, whole.guided[b : b + 1], atol=1e-4)
        assert torch.allclose(one.unguided, whole.unguided[b : b + 1], atol=1e-4)


class _Stub:
    """A denoiser whose ε is a known function of x and the condition: ε = 0.1·x + 0.01·c."""

    kind, image_size, null_class = "class", 4, 9

    def condition(self, values):
        return torch.tensor([[self.null_class if v is None else v for v in row] for row in values])

    def eps(self, x, t, cond):
        c = cond.reshape(-1).float().view(-1, 1, 1, 1)
        n = cond.shape[0]
        return (0.1 * x.repeat(n, 1, 1, 1) + 0.01 * c).view(n, *x.shape)

    def to_pixels(self, x):
        return (x + 1) / 2


def test_cfg_rule_is_masked_guidance_toward_the_label() -> None:
    """ε = where(mask, ε_u + s·(ε_y − ε_u), ε_u) for the guided chain, ε_u for the unguided."""
    den = _Stub()
    cond = den.condition([[None] * 3, [0, 1, 2]])
    mask = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    fn = _cfg_eps(den, None, cond, mask, 10.0, unguided=True, clip=False)
    xg, xu = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    rows = torch.tensor([2, 0])
    step = Step(torch.tensor([5, 5]), rows, torch.zeros(2), 3, [2, 0])
    guided, unguided = fn([xg, xu], step)
    eu, ey = 0.1 * xg + 0.01 * 9, 0.1 * xg + 0.01 * torch.tensor([2.0, 0.0]).view(2, 1, 1, 1)
    hand = torch.where(mask[rows], eu + 10 * (ey - eu), eu)
    assert torch.allclose(guided, hand) and torch.allclose(unguided, 0.1 * xu + 0.09)
    assert not torch.allclose(guided[:, :, 2:], (eu + 10 * (ey - eu))[:, :, 2:])
    # without a CAM (--no-cam, the official oracle run): guidance at every pixel
    everywhere, _ = _cfg_eps(den, None, cond, None, 10.0, unguided=True, clip=False)([xg, xu], step)
    assert torch.allclose(everywhere, eu + 10 * (ey - eu))


@pytest.mark.parametrize("use_blend", [True, False])
def test_classifier_rule_is_the_clean_grad_of_a_linear_classifier(use_blend) -> None:
    """ε' = ε − √(1 − ᾱ)·scale·K·(W[y] − Σ_k p_k W[k]), p = softmax(W·b) on the pixels of the
    blend b = f·x̂₀ + (1 − f)·x_t (f = √(1 − ᾱ)), or of x̂₀ alone without the blend."""
    den = _Stub()
    sampler = DDIMSampler(DDIMScheduler(clip_sample=False), 10)
    torch.manual_seed(3)
    w = torch.randn(3, 16)

    class Linear:
        size = 4

        def crop_logits(self, crops):
            return crops.flatten(1) @ w.T

    g = Guidance("classifier", classifier_scale=3.0, cutouts=8, blend=use_blend)
    labels = torch.tensor([2, 0])
    fn = _classifier_eps(den, sampler, Linear(), den.condition([[None] * 2]), labels, "ab", g)
    xg, xu = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    step = Step(sampler.timesteps[4].repeat(2), torch.arange(2), torch.zeros(2), 4, [0, 1])
    guided, unguided = fn([xg, xu], step)
    e = 0.1 * xg + 0.09
    sigma = float((1 - sampler.alphas[4]).sqrt())
    x0 = (xg - sigma * e) / float(sampler.alphas[4].sqrt())
    b = sigma * x0 + (1 - sigma) * xg if use_blend else x0
    p = torch.softmax(((b + 1) / 2).flatten(1) @ w.T, dim=1)
    grad = (w[labels] - p @ w).view_as(xg) / 2  # d pixels / d b = 1/2
    assert torch.allclose(guided, e - sigma * 3.0 * 8 * grad, atol=1e-5)
    assert torch.allclose(unguided, 0.1 * xu + 0.09)


class _LatentStub(_Stub):
    """A latent model: 4×4 latents decode to 8×8 images by a nearest 2× upsampling."""

    image_size = 8

    def to_pixels(self, z):
        return F.interpolate((z + 1) / 2, scale_factor=2, mode="nearest")


def test_classifier_rule_flows_through_a_latent_decoder() -> None:
    """For a latent model the gradient is the decoder's Jacobianᵀ times the pixel gradient: for
    a 2× nearest upsampling, each latent gets half the sum of its 2×2 pixel block's."""
    den = _LatentStub()
    sampler = DDIMSampler(DDIMScheduler(clip_sample=False), 10)
    torch.manual_seed(4)
    w = torch.randn(3, 64)

    class Linear:
        size = 8

        def crop_logits(self, crops):
            return crops.flatten(1) @ w.T

    g = Guidance("classifier", classifier_scale=2.0, cutouts=8, blend=False)
    labels = torch.tensor([1, 2])
    fn = _classifier_eps(den, sampler, Linear(), den.condition([[None] * 2]), labels, "ab", g)
    z = torch.randn(2, 1, 4, 4)
    step = Step(sampler.timesteps[6].repeat(2), torch.arange(2), torch.zeros(2), 6, [0, 1])
    (guided,) = fn([z], step)
    e = 0.1 * z + 0.09
    sigma = float((1 - sampler.alphas[6]).sqrt())
    x0 = (z - sigma * e) / float(sampler.alphas[6].sqrt())
    p = torch.softmax(den.to_pixels(x0).flatten(1) @ w.T, dim=1)
    pixel_grad = (w[labels] - p @ w).view(2, 1, 8, 8)
    grad = F.avg_pool2d(pixel_grad, 2) * 4 / 2  # Σ over the 2×2 block, × d pixels / d z = 1/2
    assert torch.allclose(guided, e - sigma * 2.0 * 8 * grad, atol=1e-5)


def test_gradient_through_a_real_vae_decoder_matches_finite_differences(tiny_sd) -> None:
    """The tiny Stable Diffusion VAE: ⟨∇, v⟩ equals the central difference along v."""
    from oodkit.diffusion.classifier_guidance import guidance_gradient
    from oodkit.diffusion.denoisers import load_denoiser

    den = load_denoiser(str(tiny_sd))
    torch.manual_seed(5)
    latent = den.image_size // den.factor
    z = torch.randn(1, 4, latent, latent) * 0.5
    size = den.image_size
    w = torch.randn(3, 3 * size * size) * 0.05

    def classify(crops):
        return crops.flatten(1) @ w.T

    labels, boxes = torch.tensor([1]), [[(0, 0, size)]]
    grad = guidance_gradient(classify, z, labels, boxes, size, 1.0, render=den.to_pixels)
    assert grad.abs().sum() > 0

    def objective(x):
        with torch.no_grad():
            return F.log_softmax(classify(den.to_pixels(x)), 1)[0, 1].double()

    v = torch.randn_like(z)
    v /= v.norm()
    h = 1e-2
    numeric = (objective(z + h * v) - objective(z - h * v)) / (2 * h)
    analytic = (grad.double() * v.double()).sum()
    assert torch.isclose(analytic, numeric, rtol=0.05, atol=1e-4), (analytic, numeric)


def test_id_quantiles_are_scipys_mean_percentile() -> None:
    from scipy.stats import percentileofscore

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 5, 40).astype(float)  # ties
    values = np.array([-1.0, 0.0, 2.0, 2.5, 4.0, 9.0])
    ours = id_quantiles(values, ref)
    theirs = [percentileofscore(ref, v, kind="mean") / 100 for v in values]
    assert np.allclose(ours, theirs)


def test_combination_trusts_the_baseline_only_where_it_is_confident() -> None:
    base_val, guard_val = np.arange(100.0), np.arange(100.0) / 10
    base = np.array([2.0, 50.0, 60.0, 97.0, 1.0])
    guard = np.array([9.9, 0.5, 9.0, 0.0, 0.0])
    out = combine(base, guard, base_val, guard_val, low=0.05, high=0.95)
    qb, qd = id_quantiles(base, base_val), id_quantiles(guard, guard_val)
    assert np.allclose(out, [qb[0] - 2, qd[1], qd[2], qb[3] + 2, qb[4] - 2])
    # confidently OOD < every hard case < confidently ID, whatever DiffGuard says
    assert out[0] < out[1] < out[3] and out[4] < out[0]
    assert np.argsort(out).tolist() == [4, 0, 1, 2, 3]


def test_oracle_labels_are_truth_for_id_and_seeded_random_for_ood() -> None:
    items = [
        Item("id/a", "id_test", "id", "id", 0, "a", 3),
        Item("o/b", "o", "o", "far", 0, "b", -1),
        Item("o/c", "o", "o", "near", 1, "c", -1),
    ]
    a = oracle_labels(items, 0, 5)
    assert a[0] == 3 and all(0 <= v < 5 for v in a)
    assert oracle_labels(items[::-1], 0, 5) == a[::-1]  # per sample, not per position
    draws = {tuple(oracle_labels(items, s, 5)[1:]) for s in range(20)}
    assert len(draws) > 3


def test_a_perfect_diffguard_lowers_both_fpr95_with_the_default_trust_levels() -> None:
    """The classic FPR@95 thresholds at the ID 5 % quantile: with --trust-below 0.05 it sits
    on the edge of the confident-OOD zone and cannot move (the baseline's value); with the
    defaults a perfect DiffGuard lowers it, and the OpenOOD FPR@95 too."""
    from oodkit.methods import SCORE
    from oodkit.metrics import ood_metrics
    from oodkit.scoring.options import ScoreOptions

    rng = np.random.default_rng(0)
    base_val, base_id, base_ood = (
        rng.normal(1, 1, 1000),
        rng.normal(1, 1, 2000),
        rng.normal(0, 1, 2000),
    )
    guard_val, guard_id = rng.uniform(0.5, 1, 1000), rng.uniform(0.5, 1, 2000)
    guard_ood = rng.uniform(0, 0.5, 2000)  # every OOD sample below every ID sample
    baseline = ood_metrics(base_id, base_ood)
    n = len(base_id)

    def combined(low: float, high: float) -> dict[str, float]:
        both = combine(
            np.r_[base_id, base_ood], np.r_[guard_id, guard_ood], base_val, guard_val, low, high
        )
        return ood_metrics(both[:n], both[n:])

    stuck = combined(0.05, 0.95)
    assert abs(stuck["fpr95_classic"] - baseline["fpr95_classic"]) < 0.01
    o = ScoreOptions().for_method(SCORE.get("diffguard"))  # the registered defaults
    moved = combined(o["trust_below"], o["trust_above"])
    assert moved["fpr95_classic"] < 0.2 * baseline["fpr95_classic"]
    assert moved["fpr95"] < 0.5 * baseline["fpr95"]
