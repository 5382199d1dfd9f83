"""DiffGuard speed: oodkit's batched engine vs a loop shaped like the released code, the same
recipe (the official GDM switches) and inputs, one process.

The official-shaped side follows the released DiffGuard code's classifier-guidance path
(``guided_diffusion_model.py``, its ``gaussian_diffusion.py``) as it runs:

- inversion of the **whole batch** (``ddim_reverse_ode_loop``): ε at the source timestep,
  x̂₀ clipped, the stop rule (PSNR, and 1 − DISTS with ``--aes-dists``) evaluated on every
  sample after every step, stopped samples still inverted until all stopped or the cap;
- denoising per image (AES sets the batch size to 1), **guided and unguided in one 2-row
  call** (``uncond_aux``), x̂₀ clipped in both, the official restart (``forback_skip_diff``);
  the guided row's gradient from an **extra network pass** for x̂₀ run under autograd (the
  official ``cond_fn``), K cut-outs cropped and resized one by one, the plain detector.

oodkit runs ``diffguard_batch`` with ``--inversion-eps source --clip-x0 --restart official``:
samples invert and denoise together, each with its own stop and leaving the batch when it
stops, one network call per step for both chains, x̂₀ from the step's own ε, cut-outs in one
gather, the detector's BatchNorm folded into its convolutions for the gradient.

    OMP_NUM_THREADS=2 python benchmarks/bench_diffguard.py --threads 2

Prints one JSON object: images/s of both, their ratio, the inversion depths of both (they
must agree), the largest difference of the syntheses, and oodkit's images/s when every
inversion comes from the cache. A random tiny pixel model and detector built from configs
(and random DISTS weights with ``--aes-dists``; no downloads): the figures are throughput,
not detection quality.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def build(size: int, det_size: int, channels: int, seed: int, device: str = "cpu"):
    """A tiny unconditional pixel model (DDPMPipeline layout) and a random detector."""
    import tempfile
    from pathlib import Path

    from oodkit.demo import DEMO_ARCH_KWARGS
    from oodkit.diffusion.denoisers import load_denoiser
    from oodkit.models.detector import Detector, DetectorConfig
    from oodkit.testing import build_tiny_ddpm

    torch.manual_seed(seed)
    folder = build_tiny_ddpm(Path(tempfile.mkdtemp()) / "ddpm", size, channels)
    den = load_denoiser(str(folder), torch.device(device))
    config = DetectorConfig.for_data(
        "resnet18", 10, channels, det_size, heads=[], arch_kwargs=DEMO_ARCH_KWARGS
    )
    return den, Detector(config).eval().to(device)


def official_batch(den, sampler, classifier, images, labels, g, rule, restart: int = 1):
    """One loader batch the released code's way; returns (guided, unguided, inversion steps)."""
    n = sampler.num_steps
    x0 = den.encode(images)
    b = len(x0)
    cond = den.condition([[None] * b])
    x, out = x0.clone(), torch.empty_like(x0)
    stops = torch.full((b,), rule.max_steps)
    done = torch.zeros(b, dtype=torch.bool)
    for j in range(rule.max_steps):  # the whole batch, every step
        i = n - 1 - j  # the image sits at the grid's lowest timestep
        eps = den.eps(x, sampler.timesteps[i].repeat(b), cond)[0]
        if j > 0:
            eps = sampler.clip_eps(x, eps, i)
        x = sampler.move(x, eps, i, i - 1)
        new = rule(x, x0).cpu() & ~done  # every metric on every sample
        out[new.to(x.device)] = x[new.to(x.device)]
        stops[new] = j + 1
        done |= new
        if done.all():
            break
    out[~done.to(x.device)] = x[~done.to(x.device)]
    guided, unguided = [], []
    cond2 = den.condition([[None, None]])
    for k in range(b):  # AES forces batch size 1; guided + unguided rows in one call
        start = sampler.restart(int(stops[k]), "source", restart)
        pair = out[k : k + 1].repeat(2, 1, 1, 1)
        for i in range(n - start, n):
            t = sampler.timesteps[i].repeat(2)
            eps = sampler.clip_eps(pair, den.eps(pair, t, cond2)[0], i)
            sigma = sampler.sigma(i)
            with torch.enable_grad():  # cond_fn: x̂₀ again, under autograd
                x_in = pair[:1].detach().requires_grad_(True)
                again = den.eps(x_in, t[:1], cond2[:, :1])[0]
                seen = sigma * sampler.clean(x_in, again, i) + (1 - sigma) * x_in
                pixels = den.to_pixels(seen)
                s, d = pixels.shape[-1], classifier.size
                crops = []
                for _ in range(g.cutouts):
                    side = int(torch.rand(()) * (s - d) + d) if s > d else s
                    top, left = (int(v) for v in torch.randint(0, s - side + 1, (2,)))
                    crop = pixels[:, :, top : top + side, left : left + side]
                    crops.append(F.interpolate(crop, size=d, mode="nearest"))
                plain = (torch.cat(crops) - classifier.mean) / classifier.std
                logits = classifier.detector(plain)["logits"]  # no fusion
                chosen = F.log_softmax(logits, 1)[:, int(labels[k])].sum()
                (grad,) = torch.autograd.grad(chosen, seen)
            eps[:1] = eps[:1] - sigma * g.classifier_scale * grad
            pair = sampler.move(pair, eps, i, i + 1)
        decoded = den.decode(pair)
        guided.append(decoded[:1])
        unguided.append(decoded[1:])
    return torch.cat(guided), torch.cat(unguided), stops.tolist()


def main() -> None:
    import tempfile

    from oodkit.diffusion.diffguard import (
        Classifier,
        Guidance,
        Inversion,
        StopRule,
        diffguard_batch,
        invert,
        resynthesise,
    )
    from oodkit.diffusion.inversions import InversionCache
    from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
    from oodkit.similarity import measure
    from oodkit.testing.tiny_models import write_random_perceptual_weights

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--det-size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--psnr", type=float, default=48.5)
    ap.add_argument(
        "--aes-dists",
        type=float,
        default=-1.0,
        help="also stop below this 1 − DISTS (random weights: the default −1 never stops, "
        "only its cost counts, as the official rule computes it every step)",
    )
    ap.add_argument("--no-dists", action="store_true", help="PSNR alone (no DISTS each step)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU check)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    den, det = build(a.size, a.det_size, a.channels, a.seed, a.device)
    classifier = Classifier(det)
    sampler = DDIMSampler(ddim_scheduler(den.scheduler_config), a.steps)
    cap = min(int(0.9 * a.steps), a.steps - 1)  # the image sits at the lowest grid level
    g = Guidance("classifier", classifier_scale=3.0, cutouts=8, clip=True)
    pixel = []
    if not a.no_dists:
        dists = measure("dists", write_random_perceptual_weights(tempfile.mkdtemp()), a.device)
        pixel = [(a.aes_dists, lambda x, y: dists(x, y, clamp=False))]
    rule = StopRule(cap, psnr=a.psnr, pixel=pixel, clamp=False)
    how = Inversion(rule, "source", clip=True)
    gen = torch.Generator().manual_seed(a.seed)
    images = F.avg_pool2d(torch.rand(a.images, a.channels, a.size, a.size, generator=gen), 3, 1, 1)
    images = images.to(a.device)
    with torch.no_grad():
        labels = classifier.logits(images).argmax(1)
    keys = [f"img{i}" for i in range(a.images)]
    batches = [slice(s, s + a.batch) for s in range(0, a.images, a.batch)]
    unguided: dict[str, list[torch.Tensor]] = {}

    def ours():
        stops, unguided["oodkit"] = [], []
        with torch.no_grad():
            for sl in batches:
                out = diffguard_batch(
                    den, sampler, classifier, images[sl], labels[sl], labels[sl].tolist(),
                    keys[sl], how, g, True, restart=1,
                )  # fmt: skip
                stops += out.stops
                unguided["oodkit"].append(out.unguided)
        return stops

    def warm():
        """oodkit with every inversion already in the cache (another guidance setting's run)."""
        stops = []
        with torch.no_grad():
            for sl in batches:

                def run(x):
                    return invert(den, sampler, x, how)

                inverted = cache.invert(images[sl], run, a.device)
                starts = [sampler.restart(k, "source", 1) for k in inverted[1]]
                out = resynthesise(
                    den, sampler, classifier, images[sl], inverted, starts, labels[sl],
                    labels[sl].tolist(), keys[sl], g, True,
                )  # fmt: skip
                stops += out.stops
        return stops

    def official():
        stops, unguided["official"] = [], []
        torch.manual_seed(a.seed)
        with torch.no_grad():
            for sl in batches:
                _, ug, k = official_batch(den, sampler, classifier, images[sl], labels[sl], g, rule)
                stops += k
                unguided["official"].append(ug)
        return stops

    cache = InversionCache("bench", root=tempfile.mkdtemp())
    warm()  # fills the cache
    times = {"oodkit": [], "official": [], "oodkit_cached_inversions": []}
    stops = {}
    for _ in range(a.repeats):
        for name, fn in (
            ("official", official),
            ("oodkit", ours),
            ("oodkit_cached_inversions", warm),
        ):
            t = time.perf_counter()
            stops[name] = fn()
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = (torch.cat(unguided["oodkit"]) - torch.cat(unguided["official"])).abs().max()
    print(
        json.dumps(
            {
                "images": a.images,
                "size": a.size,
                "detector_size": a.det_size,
                "steps": a.steps,
                "aes": {"psnr": a.psnr, "dists": None if a.no_dists else a.aes_dists, "cap": cap},
                "threads": a.threads,
                "batch": a.batch,
                "repeats": a.repeats,
                "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                "images_per_s": {k: round(a.images / v, 3) for k, v in med.items()},
                "ratio": round(med["official"] / med["oodkit"], 2),
                "ratio_cached_inversions": round(
                    med["official"] / med["oodkit_cached_inversions"], 2
                ),
                "inversion_steps_mean": {k: statistics.mean(v) for k, v in stops.items()},
                "same_stops": stops["official"]
                == stops["oodkit"]
                == stops["oodkit_cached_inversions"],
                "unguided_max_abs_diff": float(diff),
            }
        )
    )


if __name__ == "__main__":
    main()
