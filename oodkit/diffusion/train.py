"""``oodkit train diffusion``: a class-conditional pixel diffusion model with classifier-free
guidance (label dropout to a null class), EMA weights, linear or cosine betas.

Saved in diffusers layout (``unet/`` safetensors, ``scheduler/`` DDIM config) plus
``oodkit_model.json`` and a sample grid. Every random draw of training step ``k`` comes
from (seed, k), and the state is checkpointed every ``checkpoint_every`` steps, so
``--resume`` reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oodkit.artifacts import (
    Artifact,
    check_output,
    load_artifact,
    training_checkpoint,
    write_artifact,
)
from oodkit.devices import resolve_device
from oodkit.diffusion.denoisers import CLASS_MODEL_INFO, PixelClassDenoiser
from oodkit.errors import OodkitError

PRESETS: dict[str, dict[str, Any]] = {
    # ~1 M parameters: digits / CPU
    "tiny": {
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 16,
    },
    # ≈ the DDPM CIFAR-10 UNet (Ho et al. 2020): 128-256-256-256, attention at 16×16
    "cifar": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
        "attention_head_dim": 64,
        "dropout": 0.1,
    },
}
BETAS = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


@dataclass
class DiffusionOptions:
    """The training recipe, recorded in the manifest."""

    preset: str = "tiny"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    p_uncond: float = 0.1
    ema_decay: float = 0.999
    betas: str = "linear"
    train_timesteps: int = 1000
    flip: bool = False
    seed: int = 0
    checkpoint_every: int = 250

    def check(self) -> None:
        if self.preset not in PRESETS:
            raise OodkitError(f"--preset must be one of {', '.join(PRESETS)}")
        if self.betas not in BETAS:
            raise OodkitError(f"--betas must be one of {', '.join(BETAS)}")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise OodkitError("--steps, --batch-size and --checkpoint-every must be positive")
        if not 0 <= self.p_uncond < 1:
            raise OodkitError("--p-uncond must lie in [0, 1)")


def build_unet(preset: str, image_size: int, channels: int, num_classes: int):
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        num_class_embeds=num_classes + 1,
        **PRESETS[preset],
    )


def _step_generator(seed: int, step: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, 11]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _images_tensor(ds, channels: int, size: int) -> torch.Tensor:
    from oodkit.generate.run import _to_tensor

    return _to_tensor(ds["image"], size, channels) * 2 - 1


@torch.no_grad()
def sample_grid(
    denoiser: PixelClassDenoiser,
    path: Path,
    per_class: int = 8,
    steps: int = 25,
    scale: float = 2.0,
    seed: int = 0,
) -> None:
    """A grid with one row per class: CFG samples from pure noise (all steps)."""
    from PIL import Image

    from oodkit.diffusion.quality import class_samples

    c, s = denoiser.channels, denoiser.image_size
    img, _ = class_samples(denoiser, per_class, steps=steps, scale=scale, seed=seed)
    grid = (
        img.view(denoiser.num_classes, per_class, c, s, s)
        .permute(0, 3, 1, 4, 2)
        .reshape(denoiser.num_classes * s, per_class * s, c)
    )
    arr = (grid * 255).round().to(torch.uint8).numpy()
    Image.fromarray(arr[..., 0] if c == 1 else arr).resize(
        (per_class * s * 4, denoiser.num_classes * s * 4), Image.NEAREST
    ).save(path)


def train_diffusion(
    id_ref: str,
    out: str | Path,
    options: DiffusionOptions | None = None,
    *,
    labels: str | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    stop_after_steps: int | None = None,
    quiet: bool = False,
) -> Artifact | None:
    """Train the class-conditional CFG model; ``None`` when paused by ``stop_after_steps``."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from oodkit.data.sources import dataset_input, resolve_id

    opts = options or DiffusionOptions()
    opts.check()
    idd = resolve_id(id_ref, data_root=data_root)
    inputs = [dataset_input(id_ref, idd.train)]
    y = np.asarray(idd.train["label"], dtype=np.int64)
    class_names = idd.class_names
    if labels is not None:
        art = load_artifact(labels, kind="pseudo-labels")
        table = art.dataset()
        cluster = dict(zip(table["sample_id"], table["cluster"], strict=True))
        missing = [s for s in idd.train["sample_id"] if s not in cluster]
        if missing:
            raise OodkitError(f"{labels} has no cluster for ID sample {missing[0]!r}")
        y = np.array([cluster[s] for s in idd.train["sample_id"]], dtype=np.int64)
        class_names = None
        inputs.append(art.as_input())
    if (y < 0).any():
        raise OodkitError(f"{id_ref}: some ID samples have no label; pass --labels")
    num_classes = len(class_names) if class_names else int(y.max()) + 1
    params = {
        **asdict(opts),
        "id": id_ref,
        "labels": labels,
        "image_size": idd.image_size,
        "channels": idd.channels,
        "num_classes": num_classes,
        "cfg_null_class": num_classes,
    }
    existing = check_output(out, "diffusion-model", params, inputs, overwrite)
    if existing is not None:
        return existing
    ckpt = training_checkpoint(
        out, "diffusion-model", params, inputs, overwrite=overwrite, resume=resume
    )
    partial = ckpt.parent
    device = resolve_device(device)
    acc = Accelerator(
        cpu=device == "cpu", mixed_precision="bf16" if device.startswith("cuda") else "no"
    )
    data = _images_tensor(idd.train, idd.channels, idd.image_size)
    targets = torch.from_numpy(y)
    torch.manual_seed(opts.seed)
    unet = build_unet(opts.preset, idd.image_size, idd.channels, num_classes)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    optimizer = torch.optim.AdamW(unet.parameters(), lr=opts.lr, weight_decay=0.0)
    noise_sched = DDPMScheduler(
        num_train_timesteps=opts.train_timesteps, beta_schedule=BETAS[opts.betas]
    )
    start, log = 0, []
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        unet.load_state_dict(state["unet"])
        ema = state["ema"]
        optimizer.load_state_dict(state["optimizer"])
        start, log = int(state["step"]), list(state["log"])
    unet, optimizer = acc.prepare(unet, optimizer)
    alphas = noise_sched.alphas_cumprod.to(acc.device)
    world, rank = acc.num_processes, acc.process_index
    from rich.progress import Progress

    started = time.perf_counter()
    running = torch.zeros((), device=acc.device)
    with Progress(disable=quiet or not acc.is_main_process) as progress:
        task = progress.add_task("train diffusion", total=opts.steps, completed=start)
        for step in range(start, opts.steps):
            g = _step_generator(opts.seed, step)
            idx = torch.randint(len(data), (opts.batch_size * world,), generator=g)[rank::world]
            x0 = data[idx]
            if opts.flip:
                flip = torch.rand(len(idx) * world, generator=g)[rank::world] < 0.5
                x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
            noise = torch.randn(x0.shape[0] * world, *x0.shape[1:], generator=g)[rank::world]
            t = torch.randint(opts.train_timesteps, (len(idx) * world,), generator=g)[rank::world]
            drop = torch.rand(len(idx) * world, generator=g)[rank::world] < opts.p_uncond
            cls = torch.where(drop, torch.full_like(targets[idx], num_classes), targets[idx])
            x0, noise, t, cls = (v.to(acc.device) for v in (x0, noise, t, cls))
            a = alphas[t].view(-1, 1, 1, 1).to(x0.dtype)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            with acc.autocast():
                pred = unet(xt, t, class_labels=cls).sample
                loss = F.mse_loss(pred.float(), noise)
            optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            acc.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            decay = min(opts.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for k, v in acc.unwrap_model(unet).state_dict().items():
                    if v.is_floating_point():
                        ema[k].mul_(decay).add_(v.detach().to(ema[k].device), alpha=1 - decay)
                    else:
                        ema[k].copy_(v)
            running += loss.detach()
            progress.advance(task)
            done = step + 1
            if done % opts.checkpoint_every == 0 or done == opts.steps:
                mean_loss = (
                    acc.reduce(running, "mean") / (done - (log[-1]["step"] if log else start))
                ).item()
                running.zero_()
                log.append({"step": done, "loss": mean_loss})
                progress.update(task, description=f"train diffusion loss {mean_loss:.4f}")
                if acc.is_main_process:
                    state = {
                        "step": done,
                        "unet": acc.unwrap_model(unet).state_dict(),
                        "ema": ema,
                        "optimizer": optimizer.state_dict(),
                        "log": log,
                    }
                    tmp = ckpt.with_name(ckpt.name + ".tmp")
                    torch.save(state, tmp)
                    os.replace(tmp, ckpt)
                    sample_grid(
                        _ema_denoiser(
                            ema, opts, idd.image_size, idd.channels, num_classes, class_names
                        ),
                        partial / f"samples-step{done:07d}.png",
                        per_class=4,
                        steps=10,
                        seed=opts.seed,
                    )
                acc.wait_for_everyone()
                if (
                    stop_after_steps is not None
                    and done - start >= stop_after_steps
                    and done < opts.steps
                ):
                    return None
    if not acc.is_main_process:
        return None
    final = _ema_denoiser(ema, opts, idd.image_size, idd.channels, num_classes, class_names)

    def write_files(folder: Path) -> None:
        from diffusers import DDIMScheduler

        final.unet.save_pretrained(str(folder / "unet"))
        DDIMScheduler.from_config(final.scheduler_config).save_pretrained(str(folder / "scheduler"))
        info = {**final.info}
        (folder / CLASS_MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
        (folder / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
        sample_grid(final, folder / "samples.png", seed=opts.seed)

    summary = {
        "final_loss": log[-1]["loss"],
        "steps": opts.steps,
        "seconds_this_run": round(time.perf_counter() - started, 2),
        "num_parameters": sum(v.numel() for v in ema.values()),
    }
    art = write_artifact(
        out, "diffusion-model", params, inputs, write_files=write_files, summary=summary
    )
    shutil.rmtree(partial, ignore_errors=True)
    return art


def _ema_denoiser(
    ema: dict[str, torch.Tensor],
    opts: DiffusionOptions,
    image_size: int,
    channels: int,
    num_classes: int,
    class_names: list[str] | None,
) -> PixelClassDenoiser:
    """The EMA weights as a denoiser with the DDIM scheduler the artifact ships."""
    from diffusers import DDIMScheduler

    model = build_unet(opts.preset, image_size, channels, num_classes)
    model.load_state_dict(ema)
    sched = DDIMScheduler(
        num_train_timesteps=opts.train_timesteps,
        beta_schedule=BETAS[opts.betas],
        clip_sample=False,
        set_alpha_to_one=True,
    )
    info = {
        "num_classes": num_classes,
        "null_class": num_classes,
        "channels": channels,
        "image_size": image_size,
        "class_names": class_names,
        "cfg": "eps_u + s*(eps_c - eps_u); null class = num_classes",
        "p_uncond": opts.p_uncond,
    }
    return PixelClassDenoiser(model.eval(), dict(sched.config), info)
