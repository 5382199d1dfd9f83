"""DiffGuard speed: oodkit's batched engine vs an official-shaped loop, same inputs, one process.

The official-shaped loop follows the released DiffGuard code's classifier-guidance path
(docs/methods.md §7): each image alone (batch size 1 under AES), DDIM inversion step by step
with a host-side PSNR check after each step, inversion capped at 90 % of the steps, then
denoising from one grid step above the stop with "clean grad": an extra network pass for
x̂₀, K cut-outs cropped and resized one by one, the gradient of Σ log softmax[y], and an
unguided synthesis from the same latent (the main config's reference). oodkit runs
``diffguard_batch``: samples invert and denoise together, each with its own stop, one
network call per step for both chains, x̂₀ from the step's own ε, cut-outs in one gather,
the detector's BatchNorm folded into its convolutions (channels-last) for the gradient.

    OMP_NUM_THREADS=2 python benchmarks/bench_diffguard.py --threads 2

Prints one JSON object: images/s of both, their ratio, the stop steps, and the settings;
also oodkit's images/s when every inversion comes from the cache (a second guidance setting
on the same inputs).
A random tiny pixel model and detector built from configs (no downloads): the figures are
throughput, not detection quality.
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


def official_one(den, sampler, classifier, image, label, g, cap: int, psnr: float):
    """One image the official way; returns (guided, unguided, inversion steps)."""
    from oodkit.diffusion.diffguard import psnr_255

    x0 = den.encode(image)
    cond = den.condition([[None]])
    n = sampler.num_steps
    x, k = x0.clone(), cap
    for j, i in enumerate(range(n - 1, n - 1 - cap, -1)):
        t = sampler.timesteps[i].view(1)
        x = sampler.move(x, den.eps(x, t, cond)[0], i + 1, i)
        if psnr_255(x, x0).item() < psnr:  # host check every step
            k = j + 1
            break
    start = min(k + 1, n)  # denoising restarts one grid step above the stop

    def chain(x, guided: bool):
        for i in range(n - start, n):
            t = sampler.timesteps[i].view(1)
            eps = den.eps(x, t, cond)[0]
            if guided:
                again = den.eps(x, t, cond)[0]  # the extra pass for x̂₀
                sigma = sampler.sigma(i)
                seen = sigma * sampler.clean(x, again, i) + (1 - sigma) * x
                with torch.enable_grad():
                    leaf = seen.detach().requires_grad_(True)
                    pixels = den.to_pixels(leaf)
                    s, d = pixels.shape[-1], classifier.size
                    crops = []
                    for _ in range(g.cutouts):
                        side = int(torch.rand(()) * (s - d) + d) if s > d else s
                        top, left = (int(v) for v in torch.randint(0, s - side + 1, (2,)))
                        crop = pixels[:, :, top : top + side, left : left + side]
                        crops.append(F.interpolate(crop, size=d, mode="nearest"))
                    plain = (torch.cat(crops) - classifier.mean) / classifier.std
                    logits = classifier.detector(plain)["logits"]  # no fusion
                    chosen = F.log_softmax(logits, 1)[:, label].sum()
                    (grad,) = torch.autograd.grad(chosen, leaf)
                eps = eps - sigma * g.classifier_scale * grad
            x = sampler.move(x, eps, i, i + 1)
        return den.decode(x)

    x_start = x  # the latent where inversion stopped
    return chain(x_start.clone(), True), chain(x_start.clone(), False), k


def main() -> None:

    import tempfile

    from oodkit.diffusion.diffguard import (
        Classifier,
        Guidance,
        StopRule,
        diffguard_batch,
        invert,
        resynthesise,
    )
    from oodkit.diffusion.inversions import InversionCache
    from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--det-size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--psnr", type=float, default=48.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU check)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    den, det = build(a.size, a.det_size, a.channels, a.seed, a.device)
    classifier = Classifier(det)
    sampler = DDIMSampler(ddim_scheduler(den.scheduler_config), a.steps)
    cap = int(0.9 * a.steps)
    g = Guidance("classifier", classifier_scale=3.0, cutouts=8)
    rule = StopRule(cap, psnr=a.psnr)
    gen = torch.Generator().manual_seed(a.seed)
    images = F.avg_pool2d(torch.rand(a.images, a.channels, a.size, a.size, generator=gen), 3, 1, 1)
    images = images.to(a.device)
    with torch.no_grad():
        labels = classifier.logits(images).argmax(1)
    keys = [f"img{i}" for i in range(a.images)]

    def ours():
        stops = []
        with torch.no_grad():
            for s in range(0, a.images, a.batch):
                sl = slice(s, s + a.batch)
                out = diffguard_batch(
                    den, sampler, classifier, images[sl], labels[sl], labels[sl].tolist(),
                    keys[sl], rule, g, True,
                )  # fmt: skip
                stops += out.stops
        return stops

    def warm():
        """oodkit with every inversion already in the cache (another guidance setting's run)."""
        stops = []
        with torch.no_grad():
            for s in range(0, a.images, a.batch):
                sl = slice(s, s + a.batch)

                def run(x):
                    return invert(den, sampler, x, rule)

                inverted = cache.invert(images[sl], run, a.device)
                out = resynthesise(
                    den, sampler, classifier, images[sl], inverted, labels[sl],
                    labels[sl].tolist(), keys[sl], g, True,
                )  # fmt: skip
                stops += out.stops
        return stops

    def official():
        stops = []
        torch.manual_seed(a.seed)
        with torch.no_grad():
            for i in range(a.images):
                stops.append(
                    official_one(
                        den, sampler, classifier, images[i : i + 1], int(labels[i]), g, cap, a.psnr
                    )[2]
                )
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
    print(
        json.dumps(
            {
                "images": a.images,
                "size": a.size,
                "detector_size": a.det_size,
                "steps": a.steps,
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
            }
        )
    )


if __name__ == "__main__":
    main()
