"""``oodkit train detector``: supervised training with optional outliers (the registered losses).

The recipe follows SONA / OpenOOD: SGD with Nesterov momentum, per-step cosine decay to 1e-6,
ID and outlier batches concatenated in one forward. Every random choice derives from
``(seed, epoch)``, and the full training state is saved after each epoch, so ``--resume``
continues to exactly the weights an uninterrupted run reaches (CPU). Under ``accelerate
launch`` each process takes every n-th sample of the same permutation (DDP).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oodkit.artifacts import (
    Artifact,
    check_output,
    partial_of,
    training_checkpoint,
    write_artifact,
)
from oodkit.data.images import ImageTable
from oodkit.devices import resolve_workers
from oodkit.errors import OodkitError
from oodkit.locks import writes_output
from oodkit.methods import DETECTOR_LOSS
from oodkit.models.detector import Detector, DetectorConfig, load_detector_backbone, save_detector
from oodkit.options import recipe, with_overrides
from oodkit.outcome import NOT_MAIN, Pending, paused
from oodkit.schemas import TrainedDetectorSummary
from oodkit.seeding import seed_int, torch_generator
from oodkit.stages.train_detector.data import TrainingData, prepare_data
from oodkit.stages.train_detector.options import TrainOptions
from oodkit.training import (
    EpochBatches,
    EpochSeeded,
    check_world,
    epoch_batches,
    finite_loss,
    load_checkpoint,
    loader_kwargs,
    main_first,
    make_accelerator,
    progress_bar,
    save_checkpoint,
    should_pause,
)

ID_STREAM, OUTLIER_STREAM = 0, 1  # seeding streams of the two batch orders
EPOCH_PURPOSE = 7  # seeding purpose of the per-epoch augmentation seed


def _cosine(step: int, total: int, lr: float, min_lr: float) -> float:
    """Multiplier of the base lr: cosine from 1 to min_lr / lr over ``total`` steps (OpenOOD)."""
    lo = min_lr / lr
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * step / total))


class _Stream:
    """One loader for the whole run (workers persist across epochs); each epoch sets its
    batches."""

    def __init__(self, dataset, seed: int, stream: int, workers: int, cuda: bool) -> None:
        from torch.utils.data import DataLoader

        self.sampler = EpochBatches()
        self.loader = DataLoader(
            EpochSeeded(dataset, seed, stream),
            batch_sampler=self.sampler,
            generator=torch_generator(seed_int(seed, stream, EPOCH_PURPOSE)),
            **loader_kwargs(workers, cuda),
        )

    def epoch(self, epoch: int, batches: list[list[int]]):
        self.sampler.set(epoch, batches)
        return self.loader


@torch.no_grad()
def accuracy_on(model, table: ImageTable, batch_size: int, device, num_workers: int = 0) -> float:
    """Top-1 accuracy of the ``cls`` head on a labelled table."""
    from torch.utils.data import DataLoader

    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loader = DataLoader(table, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for x, y, _ in loader:
        logits = model(x.to(device))["logits"]
        correct += (logits.argmax(1) == y.to(device)).sum()
    return correct.item() / len(table)


def _params(o: TrainOptions, data: TrainingData) -> dict[str, Any]:
    """What the manifest records: input references, the recipe, the resolved size, weights."""
    params = {
        **data.refs,
        **recipe(o),
        "image_size": data.image_size,
        "weights": str(Path(o.weights)) if o.weights else None,
    }
    if o.weights:
        path = Path(o.weights)
        params["weights_sha256"] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        )
    return params


@dataclass
class _Run:
    """The training state that the loop advances and the checkpoint holds."""

    model: Any
    objective: Any
    optimizer: Any
    scheduler: Any
    steps_per_epoch: int
    start_epoch: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    streams: dict[str, Any] = field(default_factory=dict)  # the loaders, built once


def _model(o: TrainOptions, data: TrainingData) -> Detector:
    """The detector with its initial weights: built before anything is written, so a bad
    architecture, --arch-kwargs or --weights file is refused with nothing on disk."""
    method = DETECTOR_LOSS.get(o.loss).load()
    config = DetectorConfig.for_data(
        o.arch,
        data.num_classes,
        data.channels,
        data.image_size,
        heads=list(method.heads),
        arch_kwargs=o.arch_kwargs,
        pretrained=o.pretrained or o.weights is not None,
        class_names=data.class_names,
    )
    torch.manual_seed(o.seed)
    model = Detector(config, pretrained=o.pretrained)
    if o.weights:
        load_detector_backbone(model, o.weights)
    steps_per_epoch = len(data.id_table) // o.batch_size
    if steps_per_epoch < 1:
        raise OodkitError(
            f"--batch-size {o.batch_size} exceeds the {len(data.id_table)} ID samples"
        )
    return model


def _build(o: TrainOptions, data: TrainingData, acc, ckpt: Path, model: Detector) -> _Run:
    """Objective, SGD + per-step cosine; restored from the checkpoint on --resume."""
    method = DETECTOR_LOSS.get(o.loss).load()
    if acc.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    objective = method(o, model, acc.device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=o.lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
    )
    steps_per_epoch = len(data.id_table) // o.batch_size
    total = steps_per_epoch * o.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _cosine(s, total, o.lr, o.min_lr)
    )
    run = _Run(model, objective, optimizer, scheduler, steps_per_epoch)
    if o.resume and ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        objective.load_state_dict(state)
        run.start_epoch, run.log = int(state["epoch"]), list(state["log"])
    run.model, run.optimizer = acc.prepare(model, optimizer)
    run.streams = _streams(o, data, acc)
    objective.prepare(acc)
    return run


def _streams(o: TrainOptions, data: TrainingData, acc) -> dict[str, _Stream]:
    """The run's ID (and outlier) streams."""
    cuda = acc.device.type == "cuda"
    workers = resolve_workers(o.num_workers, cuda)
    streams = {"id": _Stream(data.id_table, o.seed, ID_STREAM, workers, cuda)}
    if data.outliers is not None:
        streams["out"] = _Stream(data.outliers, o.seed, OUTLIER_STREAM, workers, cuda)
    return streams


def _epoch_loaders(o: TrainOptions, data: TrainingData, run: _Run, epoch: int, acc) -> dict:
    """This process's ID (and outlier) batches of one epoch on the run's streams."""
    rank, world = acc.process_index, acc.num_processes
    sizes = {"id": (len(data.id_table), o.batch_size, ID_STREAM, None)}
    if data.outliers is not None:
        bs = o.outlier_batch_size or o.batch_size
        sizes["out"] = (len(data.outliers), bs, OUTLIER_STREAM, data.outlier_weights)
    return {
        name: run.streams[name].epoch(
            epoch,
            epoch_batches(n, bs, o.seed, epoch, stream, run.steps_per_epoch, rank, world, w),
        )
        for name, (n, bs, stream, w) in sizes.items()
    }


def _train_epoch(o, data, run: _Run, epoch: int, acc, advance) -> dict[str, Any]:
    """One epoch over the zipped streams; returns its log entry (loss, lr, val accuracy)."""
    torch.manual_seed(seed_int(o.seed, epoch, EPOCH_PURPOSE))
    streams = _epoch_loaders(o, data, run, epoch, acc)
    run.model.train()
    total_loss = torch.zeros((), device=acc.device)
    for items in zip(*streams.values(), strict=True):
        batch = dict(zip(streams, items, strict=True))
        with acc.autocast():
            loss = run.objective.loss(run.model, batch, acc.device)
        run.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        run.optimizer.step()
        run.scheduler.step()
        run.objective.after_step(acc)
        total_loss += loss.detach()
        advance()
    entry: dict[str, Any] = {
        "epoch": epoch + 1,
        "loss": finite_loss(
            (acc.reduce(total_loss, "mean") / run.steps_per_epoch).item(),
            f"of epoch {epoch + 1}",
            "--lr",
        ),
        "lr": run.scheduler.get_last_lr()[0],
    }
    if data.val is not None:
        entry["val_accuracy"] = accuracy_on(
            acc.unwrap_model(run.model),
            data.val,
            256,
            acc.device,
            resolve_workers(o.num_workers, acc.device.type == "cuda"),
        )
    return entry


def _save_state(run: _Run, epoch: int, ckpt: Path, acc) -> None:
    if acc.is_main_process:
        state = {
            "epoch": epoch,
            "model": acc.unwrap_model(run.model).state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "log": run.log,
            **run.objective.state_dict(acc),
        }
        save_checkpoint(state, ckpt)
    acc.wait_for_everyone()


def _train(o: TrainOptions, data: TrainingData, run: _Run, ckpt: Path, acc) -> bool:
    """The epoch loop with a checkpoint after each epoch; False when paused."""
    total = run.steps_per_epoch * o.epochs
    bars = progress_bar(disable=o.quiet or not acc.is_main_process)
    with bars:
        done = run.start_epoch * run.steps_per_epoch
        task = bars.add_task(f"train {o.loss}", total=total, completed=done, info="")
        for epoch in range(run.start_epoch, o.epochs):
            t0 = time.perf_counter()
            entry = _train_epoch(o, data, run, epoch, acc, lambda: bars.advance(task))
            run.log.append(entry)
            speed = run.steps_per_epoch * o.batch_size
            speed /= time.perf_counter() - t0
            val = f" val acc {entry['val_accuracy']:.4f}" if "val_accuracy" in entry else ""
            bars.update(task, info=f"loss {entry['loss']:.4f}{val} {speed:.0f} img/s")
            _save_state(run, epoch + 1, ckpt, acc)
            if should_pause(epoch + 1, run.start_epoch, o.stop_after_epochs, o.epochs):
                return False
    return True


@writes_output
def train_detector(
    id_ref: str, out: str | Path, options: TrainOptions | None = None, **overrides: Any
) -> Artifact | Pending:
    """Train a detector; returns its artifact, or a ``Pending`` marker: paused by
    ``stop_after_epochs``, or a non-main process.

    ``outliers`` are outliers artifacts or any dataset references (e.g. held-out real OOD
    images); ``extra_id`` are ID-labelled extras such as VAE reconstructions; ``labels`` is a
    pseudo-labels artifact whose clusters replace the ground-truth labels. Keyword arguments
    override fields of ``options``.
    """
    o = with_overrides(TrainOptions, options, overrides).resolved()
    data = prepare_data(id_ref, o)
    params = _params(o, data)
    acc = make_accelerator(o.device)  # joins the process group before the output is claimed
    existing = check_output(out, "detector", params, data.inputs, o.overwrite)
    if existing is not None:
        return existing
    check_world(o.batch_size, "--batch-size", acc.num_processes)
    check_world(o.outlier_batch_size or o.batch_size, "--outlier-batch-size", acc.num_processes)
    model = _model(o, data)
    ckpt = main_first(
        acc,
        lambda overwrite: training_checkpoint(
            out, "detector", params, data.inputs, overwrite=overwrite, resume=o.resume
        ),
        o.overwrite,
    )
    run = _build(o, data, acc, ckpt, model)
    started = time.perf_counter()
    finished = _train(o, data, run, ckpt, acc)
    if not acc.is_main_process:
        return NOT_MAIN
    if not finished:
        return paused(partial_of(out))
    final = acc.unwrap_model(run.model)
    seconds = time.perf_counter() - started
    trained = (o.epochs - run.start_epoch) * run.steps_per_epoch * o.batch_size
    summary = TrainedDetectorSummary(
        final_loss=run.log[-1]["loss"],
        id_val_accuracy=run.log[-1].get("val_accuracy"),
        epochs=o.epochs,
        seconds=round(seconds, 2),
        images_per_s=round(trained / max(seconds, 1e-9), 1),
        num_parameters=sum(p.numel() for p in final.parameters()),
        num_classes=data.num_classes,
        outliers_kept=data.outlier_counts or None,
        kept_diagnostics=data.kept_diagnostics or None,
    ).as_dict()

    def write_files(folder: Path) -> None:
        save_detector(final, folder)
        (folder / "train_log.json").write_text(json.dumps(run.log, indent=2) + "\n")

    art = write_artifact(
        out, "detector", params, data.inputs, write_files=write_files, summary=summary
    )
    shutil.rmtree(ckpt.parent, ignore_errors=True)
    return art
