"""``oodkit train diffusion``: a class-conditional pixel diffusion model with classifier-free
guidance (label dropout to a null class), EMA weights, linear or cosine betas.

Saved in diffusers layout (``unet/`` safetensors, ``scheduler/`` DDIM config) plus
``oodkit_model.json`` and a sample grid. Every random draw of training step ``k`` comes
from (seed, k), and the state is checkpointed every ``checkpoint_every`` steps, so
``--resume`` reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oodkit.artifacts import (
    Artifact,
    check_output,
    column,
    partial_of,
    training_checkpoint,
    write_artifact,
)
from oodkit.data.images import to_tensor
from oodkit.data.sources import IdData, dataset_input, resolve_id
from oodkit.diffusion.denoisers import CLASS_MODEL_INFO, PixelClassDenoiser
from oodkit.diffusion.quality import sample_grid
from oodkit.diffusion.unets import BETAS, PRESETS, build_unet
from oodkit.errors import OodkitError
from oodkit.locks import writes_output
from oodkit.options import recipe, with_overrides
from oodkit.outcome import NOT_MAIN, Pending, paused
from oodkit.schemas import TrainedDiffusionSummary, read_pseudo_labels
from oodkit.seeding import seed_int, torch_generator
from oodkit.stages.train_diffusion.options import DiffusionOptions
from oodkit.training import (
    check_world,
    finite_loss,
    load_checkpoint,
    main_first,
    make_accelerator,
    progress_bar,
    save_checkpoint,
    should_pause,
)

STEP_PURPOSE = 11  # seeding purpose of a training step's draws


@dataclass
class _Classes:
    y: np.ndarray
    num_classes: int
    names: list[str] | None
    inputs: list[dict[str, Any]]


def _classes(id_ref: str, idd: IdData, labels: str | None) -> _Classes:
    """Class ids of the ID images: ground truth, or the clusters of a pseudo-labels artifact."""
    inputs = [dataset_input(id_ref, idd.train)]
    y, names = np.asarray(column(idd.train, "label"), dtype=np.int64), idd.class_names
    if labels is not None:
        pseudo = read_pseudo_labels(labels)
        y, names = pseudo.labels_for(column(idd.train, "sample_id")), None
        inputs.append(pseudo.artifact.as_input())
    if (y < 0).any():
        raise OodkitError(f"{id_ref}: some ID samples have no label; pass --labels")
    return _Classes(y, len(names) if names else int(y.max()) + 1, names, inputs)


@dataclass
class _Run:
    """Model, optimiser and EMA weights; what the checkpoint holds."""

    unet: Any
    ema: dict[str, torch.Tensor]
    optimizer: Any
    alphas: torch.Tensor
    start: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)


def _build(o: DiffusionOptions, idd: IdData, classes: _Classes, acc, ckpt: Path) -> _Run:
    from diffusers import DDPMScheduler

    torch.manual_seed(o.seed)
    unet = build_unet(o.preset, idd.image_size, idd.channels, classes.num_classes)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    optimizer = torch.optim.AdamW(unet.parameters(), lr=o.lr, weight_decay=0.0)
    noise_sched = DDPMScheduler(num_train_timesteps=o.train_timesteps, beta_schedule=BETAS[o.betas])
    run = _Run(unet, ema, optimizer, noise_sched.alphas_cumprod.to(acc.device))
    if o.resume and ckpt.exists():
        state = load_checkpoint(ckpt)
        unet.load_state_dict(state["unet"])
        run.ema = state["ema"]
        optimizer.load_state_dict(state["optimizer"])
        run.start, run.log = int(state["step"]), list(state["log"])
    run.unet, run.optimizer = acc.prepare(unet, optimizer)
    return run


def _step(o: DiffusionOptions, run: _Run, step: int, data, targets, null_class: int, acc):
    """One step: this process's share of the global batch drawn from (seed, step), ε-MSE, EMA."""
    world, rank = acc.num_processes, acc.process_index
    g = torch_generator(seed_int(o.seed, step, STEP_PURPOSE))
    n = o.batch_size  # global: every rank draws the whole batch and keeps its share
    idx = torch.randint(len(data), (n,), generator=g)[rank::world]
    x0 = data[idx]
    if o.flip:
        flip = torch.rand(n, generator=g)[rank::world] < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
    noise = torch.randn(n, *x0.shape[1:], generator=g)[rank::world]
    t = torch.randint(o.train_timesteps, (n,), generator=g)[rank::world]
    drop = torch.rand(n, generator=g)[rank::world] < o.p_uncond
    cls = torch.where(drop, torch.full_like(targets[idx], null_class), targets[idx])
    x0, noise, t, cls = (v.to(acc.device) for v in (x0, noise, t, cls))
    a = run.alphas[t].view(-1, 1, 1, 1).to(x0.dtype)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with acc.autocast():
        loss = F.mse_loss(run.unet(xt, t, class_labels=cls).sample.float(), noise)
    run.optimizer.zero_grad(set_to_none=True)
    acc.backward(loss)
    acc.clip_grad_norm_(run.unet.parameters(), 1.0)
    run.optimizer.step()
    decay = min(o.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for k, v in acc.unwrap_model(run.unet).state_dict().items():
            if v.is_floating_point():
                run.ema[k].mul_(decay).add_(v.detach().to(run.ema[k].device), alpha=1 - decay)
            else:
                run.ema[k].copy_(v)
    return loss.detach()


def _checkpoint(o, run: _Run, done: int, ckpt: Path, denoiser, acc) -> None:
    """Training state and a small sample grid into ``<out>.partial`` (main process)."""
    if acc.is_main_process:
        state = {
            "step": done,
            "unet": acc.unwrap_model(run.unet).state_dict(),
            "ema": run.ema,
            "optimizer": run.optimizer.state_dict(),
            "log": run.log,
        }
        save_checkpoint(state, ckpt)
        path = ckpt.parent / f"samples-step{done:07d}.png"
        sample_grid(denoiser(), path, per_class=4, steps=10, seed=o.seed)
    acc.wait_for_everyone()


def _train(o, run: _Run, data, classes: _Classes, ckpt: Path, denoiser, acc) -> bool:
    """The step loop; logs and checkpoints every ``checkpoint_every`` steps; False if paused."""
    targets = torch.from_numpy(classes.y)
    running = torch.zeros((), device=acc.device)
    bars = progress_bar(disable=o.quiet or not acc.is_main_process, unit="steps")
    with bars:
        task = bars.add_task("train diffusion", total=o.steps, completed=run.start, info="")
        for step in range(run.start, o.steps):
            running += _step(o, run, step, data, targets, classes.num_classes, acc)
            bars.advance(task)
            done = step + 1
            if done % o.checkpoint_every and done != o.steps:
                continue
            since = done - (run.log[-1]["step"] if run.log else run.start)
            mean_loss = finite_loss(
                (acc.reduce(running, "mean") / since).item(), f"up to step {done}", "--lr"
            )
            running.zero_()
            run.log.append({"step": done, "loss": mean_loss})
            bars.update(task, info=f"loss {mean_loss:.4f}")
            _checkpoint(o, run, done, ckpt, denoiser, acc)
            if should_pause(done, run.start, o.stop_after_steps, o.steps):
                return False
    return True


@writes_output
def train_diffusion(
    id_ref: str, out: str | Path, options: DiffusionOptions | None = None, **overrides: Any
) -> Artifact | Pending:
    """Train the class-conditional CFG model; a ``Pending`` marker when paused by
    ``stop_after_steps`` or on a non-main process. Keyword arguments override fields of
    ``options``."""
    o = with_overrides(DiffusionOptions, options, overrides)
    idd = resolve_id(id_ref, data_root=o.data_root)
    factor = 2 ** (len(PRESETS[o.preset]["block_out_channels"]) - 1)
    if idd.image_size % factor:
        raise OodkitError(
            f"the {o.preset} UNet needs an image size divisible by {factor}, got "
            f"{idd.image_size}px: resize the data"
        )
    classes = _classes(id_ref, idd, o.labels)
    params = {
        **recipe(o),
        "id": id_ref,
        "labels": o.labels,
        "image_size": idd.image_size,
        "channels": idd.channels,
        "num_classes": classes.num_classes,
        "cfg_null_class": classes.num_classes,
    }
    acc = make_accelerator(o.device)  # joins the process group before the output is claimed
    existing = check_output(out, "diffusion-model", params, classes.inputs, o.overwrite)
    if existing is not None:
        return existing
    check_world(o.batch_size, "--batch-size", acc.num_processes)
    ckpt = main_first(
        acc,
        lambda overwrite: training_checkpoint(
            out, "diffusion-model", params, classes.inputs, overwrite=overwrite, resume=o.resume
        ),
        o.overwrite,
    )
    data = to_tensor(idd.train["image"], idd.image_size, idd.channels) * 2 - 1
    run = _build(o, idd, classes, acc, ckpt)

    def denoiser() -> PixelClassDenoiser:
        return _ema_denoiser(
            run.ema, o, idd.image_size, idd.channels, classes.num_classes, classes.names
        )

    started = time.perf_counter()
    finished = _train(o, run, data, classes, ckpt, denoiser, acc)
    if not acc.is_main_process:
        return NOT_MAIN
    if not finished:
        return paused(partial_of(out))
    final = denoiser()

    def write_files(folder: Path) -> None:
        from diffusers import DDIMScheduler

        final.unet.save_pretrained(str(folder / "unet"))
        DDIMScheduler.from_config(final.scheduler_config).save_pretrained(str(folder / "scheduler"))
        (folder / CLASS_MODEL_INFO).write_text(json.dumps(final.info, indent=2) + "\n")
        (folder / "train_log.json").write_text(json.dumps(run.log, indent=2) + "\n")
        sample_grid(final, folder / "samples.png", seed=o.seed)

    summary = TrainedDiffusionSummary(
        final_loss=run.log[-1]["loss"],
        steps=o.steps,
        seconds_this_run=round(time.perf_counter() - started, 2),
        num_parameters=sum(v.numel() for v in run.ema.values()),
    ).as_dict()
    art = write_artifact(
        out, "diffusion-model", params, classes.inputs, write_files=write_files, summary=summary
    )
    shutil.rmtree(ckpt.parent, ignore_errors=True)
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
