"""SONA generation end to end: ``oodkit generate`` vs an official-shaped loop, in one process.

Both take the same folder of source images (mixed sizes), the same model and the same
per-sample plans (start steps, prompts), each at its own batch size, and write their images
to disk; the clock runs from loading the model to the last file written, after an untimed
warm-up of both. The sides alternate over ``--repeats`` runs. One JSON object is printed with
the median images/s of each, the denoising work (Σ steps × images), the ratio and (on CUDA)
GPU utilisation and peak memory.

- oodkit: ``generate`` — sources decoded ahead by loader workers, one UNet call per step on
  3·B rows (∅, ID, OOD), ``topk`` masks, no host copies in the loop, channels-last, fp16 on
  CUDA; decoding to PIL, quality figures, PNG encoding and writing in a background thread;
  shards, manifest and preview included.
- official-shaped: what the released SONA pipeline and script do per batch (batch 8, fp16 on
  CUDA) — prompts encoded per batch, one UNet forward of 4·B rows per step (∅, ID nuisance,
  ID semantic, OOD: the ID prompt evaluated twice), ``torch.quantile`` thresholds per concept,
  every step's noise estimates copied to the host, and decoding, PNG encoding and saving on the
  main thread between batches.

Default: the tiny offline Stable Diffusion on the CPU (target ratio ≥ 2). ``--full`` builds a
Stable Diffusion 2 base-sized UNet and VAE from configs with random weights at 512 px (for a
GPU; target ≥ 7 images/s per H100 and ratio ≥ 2).

    python benchmarks/bench_generate.py [--images 96] [--batch 16] [--official-batch 8]
        [--steps 10] [--repeats 3] [--threads 1] [--full]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from oodkit.data.images import fit_square, tensor_to_pil
from oodkit.diffusion.denoisers import load_denoiser
from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
from oodkit.seeding import per_sample_randn, sample_generators
from oodkit.stages.generate.run import GenerateOptions, canonical_batches, generate
from oodkit.testing import build_tiny_stable_diffusion


def build_full_sd2(folder: Path) -> Path:
    """SD 2 base-sized UNet (865 M) and VAE from configs, random weights, tiny text encoder."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    from oodkit.testing import write_char_text_encoder

    write_char_text_encoder(folder, hidden_size=1024, heads=16)
    UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    ).save_pretrained(str(folder / "unet"))
    AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        latent_channels=4,
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    ).save_pretrained(str(folder / "vae"))
    PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        skip_prk_steps=True,
        set_alpha_to_one=False,
    ).save_pretrained(str(folder / "scheduler"))
    return folder


def write_sources(root: Path, n: int, size: int) -> Path:
    """``n`` random JPEG sources of mixed sizes around ``size`` in two classes, a benchmark
    file and an OOD class list."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (int(size * f) for f in rng.uniform(0.8, 1.3, 2))
        folder = root / "data" / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    spec = {
        "id_train": "data",
        "id_test": "data",
        "ood": [{"name": "o", "group": "far", "data": "data/cat"}],
        "class_names": ["cat", "dog"],
    }
    (root / "bench.json").write_text(json.dumps(spec))
    (root / "ood.txt").write_text("car\ntree\nhouse\nboat\n")
    return root / "bench.json"


@torch.no_grad()
def official_shaped(
    model: Path, bench: Path, out: Path, o: GenerateOptions, official_batch: int, device, dtype
):
    """Model load → per batch: decode sources, encode prompts, one UNet forward of 4·B rows per
    step (∅, ID nuisance, ID semantic, OOD — the ID prompt twice), ``torch.quantile`` masks per
    concept, every step's noise estimates copied to the host, decode, save PNGs — all in
    sequence on the main thread, as the released SONA pipeline and script do.

    Batches of ``official_batch`` are cut from oodkit's start-sorted plans; each runs one start
    (the official script draws one per batch), its samples' mean, so both sides do the same
    denoising work. Returns Σ steps × images.
    """
    from oodkit.data.sources import resolve_id
    from oodkit.stages.generate.plans import plan_samples, read_class_list

    den = load_denoiser(model, device, dtype)
    idd = resolve_id(str(bench))
    train = idd.train
    keys = [(sid, r) for r, sid in enumerate(train["sample_id"])]
    plans = plan_samples(
        keys,
        train["sample_id"],
        np.asarray(train["label"]),
        uses_ood=True,
        seed=o.seed,
        steps=o.steps,
        t_start=None,
        num_classes=2,
        prompts=(idd.class_names, read_class_list(bench.parent / "ood.txt")),
    )
    sampler = DDIMSampler(ddim_scheduler(den.scheduler_config), o.steps)
    out.mkdir()
    sample_steps = 0
    for batch in canonical_batches(plans, official_batch):
        ps = [plans[i] for i in batch]
        images, _ = fit_square([train[p.row]["image"] for p in ps], den.image_size, 3)
        x0 = den.encode(images.to(device))
        noise = per_sample_randn(
            x0.shape[1:], sample_generators(o.seed, [p.key for p in ps]), x0.device, x0.dtype
        )
        start = round(sum(p.start for p in ps) / len(ps))  # one per batch, as the official
        sample_steps += start * len(ps)
        x = sampler.noise(x0, [start] * len(ps), noise)
        den._embeddings.clear()  # the official pipeline encodes its prompts per batch
        emb = torch.cat(  # ∅, then the edit concepts: ID nuisance, ID semantic, OOD semantic
            [
                den.embed(v)
                for v in (
                    [""] * len(ps),
                    [p.id_cond for p in ps],
                    [p.id_cond for p in ps],
                    [p.ood_cond for p in ps],
                )
            ]
        )
        estimates = torch.zeros((o.steps + 1, 4, *x.shape))  # the host copies it keeps
        for i in range(o.steps - start, o.steps):
            t = sampler.timesteps[i].to(x.device)
            out4 = den.unet(torch.cat([x] * 4).to(dtype), t, encoder_hidden_states=emb).sample
            e_u, e_id, e_id2, e_ood = out4.float().chunk(4)  # one forward of 4·B rows
            for c, e in enumerate((e_u, e_id, e_id2, e_ood)):
                estimates[i, c] = e  # a device → host copy per concept and step
            psi_id, psi_id2, psi_ood = e_id - e_u, e_id2 - e_u, e_ood - e_u

            def quantile_mask(psi: torch.Tensor, q: float, upper: bool) -> torch.Tensor:
                flat = psi.abs().flatten(2)
                thr = torch.quantile(flat, q, dim=2, keepdim=True)
                return ((flat >= thr) if upper else (flat <= thr)).float().view_as(psi)

            mn_id = quantile_mask(psi_id, o.lam, False)
            ms_id = quantile_mask(psi_id2, 1 - o.lam, True)
            ms_ood = quantile_mask(psi_ood, 1 - o.lam, True)
            delta = mn_id * psi_id - ms_id * psi_id2 + ms_ood * (1 - mn_id) * psi_ood
            x = sampler.move(x, e_u + o.scale * delta, i, i + 1)
        for p, img in zip(ps, den.decode(x).cpu(), strict=True):
            tensor_to_pil(img).save(out / f"{p.key.replace('/', '_')}.png")
    return sample_steps


def gpu_sampler(device) -> tuple[threading.Event, list[float]]:
    """GPU utilisation sampled every 100 ms while the event is unset (CUDA with pynvml)."""
    stop, samples = threading.Event(), []
    if device.type != "cuda":
        return stop, samples

    def run() -> None:
        while not stop.is_set():
            try:
                samples.append(float(torch.cuda.utilization(device)))
            except Exception:  # noqa: BLE001 - no NVML: utilisation stays unknown
                return
            time.sleep(0.1)

    threading.Thread(target=run, daemon=True).start()
    return stop, samples


def timed(run, src: Path, out: Path, dev: torch.device) -> dict:
    """One run ``run(src, out)``: seconds, Σ steps × images, GPU utilisation, peak memory."""
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stop, util = gpu_sampler(dev)
    start = time.perf_counter()
    made = run(src, out)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    stop.set()
    return {
        "seconds": seconds,
        # denoising work: Σ over images of the DDIM steps run
        "sample_steps": made if isinstance(made, int) else sum(made.dataset()["t_start"]),
        "gpu_utilisation_mean": round(float(np.mean(util)), 1) if util else None,
        "peak_gpu_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=GenerateOptions.batch_size, help="oodkit's")
    parser.add_argument("--official-batch", type=int, default=8, help="the SONA script's")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--full", action="store_true", help="SD 2 base-sized UNet + VAE at 512 px")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    size = 512 if args.full else 16
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = (
            build_full_sd2(root / "sd") if args.full else build_tiny_stable_diffusion(root / "sd")
        )
        bench = write_sources(root / "src", args.images, size)
        o = GenerateOptions(
            method="sona",
            steps=args.steps,
            batch_size=args.batch,
            num_workers=args.workers,
            compile=args.compile,
            device=args.device,
            quiet=True,
        ).resolved()
        sides = {
            "official_shaped": lambda src, out: official_shaped(
                model, src, out, o, args.official_batch, dev, dtype
            ),
            "oodkit": lambda src, out: generate(
                str(src), str(model), out, o, ood_classes=str(src.parent / "ood.txt")
            ),
        }
        # warm-up, untimed: imports, kernels and caches touched once by each side, so the
        # first runner does not pay for the second
        small = write_sources(root / "warm", 2 * args.batch, size)
        for name, side in sides.items():
            side(small, root / f"warm-{name}")
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for r in range(args.repeats):  # alternating, so drifts of the machine hit both sides
            for name, side in sides.items():
                runs[name].append(timed(side, bench, root / f"{name}-{r}", dev))
    results = {}
    for name, rs in runs.items():
        median = float(np.median([x["seconds"] for x in rs]))
        results[name] = {
            "seconds_median": round(median, 3),
            "seconds_each": [round(x["seconds"], 3) for x in rs],
            "images_per_s": round(args.images / median, 3),
            **{k: rs[-1][k] for k in ("sample_steps", "gpu_utilisation_mean", "peak_gpu_gib")},
        }
    print(
        json.dumps(
            {
                "benchmark": "SONA generation end to end (model load → files on disk)",
                "model": "SD2-base-sized, random weights" if args.full else "tiny offline SD",
                "images": args.images,
                "batch": {"oodkit": args.batch, "official_shaped": args.official_batch},
                "steps": args.steps,
                "repeats": args.repeats,
                "device": str(dev),
                "dtype": str(dtype),
                "torch_threads": torch.get_num_threads(),
                **results,
                "ratio": round(
                    results["official_shaped"]["seconds_median"]
                    / results["oodkit"]["seconds_median"],
                    3,
                ),
                "target_ratio": 2.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
