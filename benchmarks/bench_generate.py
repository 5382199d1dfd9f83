"""SONA generation speed: oodkit's loop vs a naive loop shaped like the official release.

Both run in this process on the same latents, prompts and start step, and print one JSON
object with images/s for each and the ratio.

- oodkit: ``BatchGenerator`` — one UNet call per step on 3·B rows (∅, ID, OOD), masks from
  ``topk`` counts, no host copies inside the loop.
- naive: 4 UNet calls of B rows per step (∅, ID, ID again, OOD, as the official pipeline
  evaluates the ID prompt twice), ``torch.quantile`` thresholds, and a host copy of the
  latents every step.

Default: the tiny offline Stable Diffusion on the CPU (target ratio ≥ 1.3). ``--full`` builds
a Stable Diffusion 2 base-sized UNet and VAE from configs with random weights at 512 px (for
a GPU; bf16) and also reports peak GPU memory (target ratio ≥ 2).

    python benchmarks/bench_generate.py [--batch 8] [--steps 20] [--full] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from oodkit.diffusion.denoisers import load_denoiser
from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
from oodkit.stages.generate.plans import Plan
from oodkit.stages.generate.run import BatchGenerator, GenerateOptions
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


@torch.no_grad()
def naive_sona(denoiser, plans, images, opts: GenerateOptions) -> torch.Tensor:
    """The official pipeline's shape: 4 separate forwards, quantile masks, host copy per step."""
    from oodkit.seeding import per_sample_randn, sample_generators

    sampler = DDIMSampler(ddim_scheduler(denoiser.scheduler_config), opts.steps)
    x0 = denoiser.encode(images)
    noise = per_sample_randn(
        x0.shape[1:], sample_generators(opts.seed, [p.key for p in plans]), x0.device, x0.dtype
    )
    start = plans[0].start
    x = sampler.noise(x0, [start] * len(plans), noise)
    emb_u = denoiser.embed([""] * len(plans))
    emb_id = denoiser.embed([p.id_cond for p in plans])
    emb_ood = denoiser.embed([p.ood_cond for p in plans])
    for i in range(opts.steps - start, opts.steps):
        t = sampler.timesteps[i].repeat(len(plans)).to(x.device)
        e_u = denoiser.unet(x, t, encoder_hidden_states=emb_u).sample
        e_id = denoiser.unet(x, t, encoder_hidden_states=emb_id).sample
        _ = denoiser.unet(x, t, encoder_hidden_states=emb_id).sample  # the duplicated ID row
        e_ood = denoiser.unet(x, t, encoder_hidden_states=emb_ood).sample
        psi_id, psi_ood = (e_id - e_u).float(), (e_ood - e_u).float()

        def quantile_mask(psi: torch.Tensor, q: float, upper: bool) -> torch.Tensor:
            flat = psi.abs().flatten(2)
            thr = torch.quantile(flat, q, dim=2, keepdim=True)
            return ((flat >= thr) if upper else (flat <= thr)).float().view_as(psi)

        ms_id, mn_id = (
            quantile_mask(psi_id, 1 - opts.lam, True),
            quantile_mask(psi_id, opts.lam, False),
        )
        ms_ood = quantile_mask(psi_ood, 1 - opts.lam, True)
        delta = -ms_id * psi_id + mn_id * psi_id + ms_ood * (1 - mn_id) * psi_ood
        eps = e_u + opts.scale * delta.to(e_u.dtype)
        a_t, a_n = (
            sampler.alpha_at([i]).expand(len(plans)),
            sampler.alpha_at([i + 1]).expand(len(plans)),
        )
        x = sampler._update(x, eps, a_t, a_n)
        x.cpu()  # the official loop copies latents to the host every step
    return denoiser.decode(x)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="SD 2 base-sized UNet + VAE at 512 px")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        folder = (
            build_full_sd2(Path(tmp))
            if args.full
            else build_tiny_stable_diffusion(Path(tmp) / "sd")
        )
        denoiser = load_denoiser(folder, dev, dtype)
    size = denoiser.image_size
    opts = GenerateOptions(method="sona", steps=args.steps, batch_size=args.batch).resolved()
    plans = [
        Plan(f"s{i}", i, f"s{i}", 0, args.steps, "a photo of a cat", "a photo of a car")
        for i in range(args.batch)
    ]
    images = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    ours = BatchGenerator(denoiser, opts)

    def timed(fn) -> tuple[torch.Tensor, float]:
        best, out = float("inf"), None
        for _ in range(args.repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return out, best

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    a, t_ours = timed(lambda: ours(plans, images))
    mem_ours = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    b, t_naive = timed(lambda: naive_sona(denoiser, plans, images, opts))
    mem_naive = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    print(
        json.dumps(
            {
                "benchmark": "SONA generation, oodkit vs official-shaped naive loop",
                "model": "SD2-base-sized, random weights" if args.full else "tiny offline SD",
                "image_size": size,
                "batch": args.batch,
                "steps": args.steps,
                "device": str(dev),
                "dtype": str(dtype),
                "oodkit_images_per_s": round(args.batch / t_ours, 3),
                "naive_images_per_s": round(args.batch / t_naive, 3),
                "ratio": round(t_naive / t_ours, 3),
                "target_ratio": 2.0 if args.full else 1.3,
                "peak_gpu_gib": {"oodkit": mem_ours, "naive": mem_naive},
                "mean_abs_image_diff": float((a.float() - b.float()).abs().mean()),
                "torch_threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
