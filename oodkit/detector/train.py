"""``oodkit train detector``: supervised training with optional outliers (ce, oe, energy, sona, sd).

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
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
from oodkit.detector import losses
from oodkit.detector.data import (
    AUGMENTS,
    ImageTable,
    PairedOutliers,
    epoch_batches,
    eval_transform,
    train_transform,
)
from oodkit.detector.model import Detector, DetectorConfig, load_backbone_weights, save_detector
from oodkit.devices import resolve_device
from oodkit.errors import OodkitError

LOSSES = ("ce", "oe", "energy", "sona", "sd")
ID_STREAM, OUTLIER_STREAM = 0, 1


@dataclass
class TrainOptions:
    """The training recipe; every field is recorded in the detector's manifest."""

    loss: str = "ce"
    arch: str = "resnet18"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 128
    outlier_batch_size: int | None = None  # default: batch_size
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    min_lr: float = 1e-6
    beta: float = 0.5  # OE weight (oe, sona)
    club_weight: float = 1.0  # CLUB weight (sona)
    club_steps: int = 5
    club_lr: float = 1e-4
    sd_lambda: float = 0.3
    energy_weight: float = 0.1
    m_in: float = -25.0
    m_out: float = -7.0
    augment: str = "auto"
    image_size: int | None = None
    seed: int = 0

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise OodkitError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.augment not in AUGMENTS:
            raise OodkitError(f"--augment must be one of {', '.join(AUGMENTS)}")
        for name in ("epochs", "batch_size", "club_steps"):
            if getattr(self, name) < (0 if name == "club_steps" else 1):
                raise OodkitError(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0:
            raise OodkitError("--lr must be positive")
        if self.outlier_batch_size is not None and self.outlier_batch_size < 1:
            raise OodkitError("--outlier-batch-size must be positive")


@dataclass
class _Data:
    """Everything the loop reads: ID table + labels, outliers (+ source rows), validation."""

    id_table: ImageTable
    outliers: ImageTable | None
    val: ImageTable | None
    num_classes: int
    class_names: list[str] | None
    channels: int
    image_size: int
    inputs: list[dict[str, Any]]
    refs: dict[str, Any]


def _plain_images(ds):
    import datasets

    return ds.select_columns(["image"]).cast_column("image", datasets.Image())


def _prepare_data(
    id_ref: str,
    opts: TrainOptions,
    labels: str | None,
    outliers: Sequence[str],
    extra_id: Sequence[str],
    val: str | None,
    data_root,
) -> _Data:
    import datasets

    from oodkit.data.sources import dataset_input, load_artifact_or_dataset, resolve_id

    idd = resolve_id(id_ref, data_root=data_root, image_size=opts.image_size, val=val)
    train = idd.train
    inputs: list[dict[str, Any]] = [dataset_input(id_ref, train)]
    row_of = {sid: i for i, sid in enumerate(train["sample_id"])}
    cluster_of: dict[str, int] | None = None
    if labels is not None:
        art = load_artifact(labels, kind="pseudo-labels")
        table = art.dataset()
        cluster_of = dict(zip(table["sample_id"], table["cluster"], strict=True))
        missing = [s for s in row_of if s not in cluster_of]
        if missing:
            raise OodkitError(f"{labels} has no cluster for ID sample {missing[0]!r}")
        y = np.array([cluster_of[s] for s in train["sample_id"]], dtype=np.int64)
        num_classes, class_names = int(y.max()) + 1, None
        inputs.append(art.as_input())
    else:
        y = np.asarray(train["label"], dtype=np.int64)
        if (y < 0).any():
            raise OodkitError(
                f"{id_ref}: {int((y < 0).sum())} ID samples have no label; pass --labels"
            )
        num_classes = len(idd.class_names) if idd.class_names else int(y.max()) + 1
        class_names = idd.class_names
        if y.max() >= num_classes:
            raise OodkitError(f"{id_ref}: label {int(y.max())} exceeds the {num_classes} classes")
    if num_classes < 2:
        raise OodkitError("training a classifier needs at least 2 classes")

    def source_label(ds, what: str) -> np.ndarray:
        """ỹ of generated samples: the source's cluster, else its stored label."""
        if cluster_of is not None and "source_id" in ds.column_names:
            unknown = [s for s in ds["source_id"] if s not in cluster_of]
            if unknown:
                raise OodkitError(f"{what}: source {unknown[0]!r} has no pseudo-label")
            return np.array([cluster_of[s] for s in ds["source_id"]], dtype=np.int64)
        col = "source_label" if "source_label" in ds.column_names else "label"
        return np.asarray(ds[col], dtype=np.int64)

    tables, label_parts = [_plain_images(train)], [y]
    for ref in extra_id:
        ds, inp = load_artifact_or_dataset(ref, data_root, idd.channels, "--extra-id", "outliers")
        lab = source_label(ds, ref)
        if (lab < 0).any() or lab.max() >= num_classes:
            raise OodkitError(f"--extra-id {ref}: labels must lie in 0..{num_classes - 1}")
        tables.append(_plain_images(ds))
        label_parts.append(lab)
        inputs.append(inp)
    mode = "L" if idd.channels == 1 else "RGB"
    config = DetectorConfig.for_data(
        opts.arch, num_classes, idd.channels, idd.image_size, heads=["cls"]
    )
    t_train, t_eval = train_transform(config, opts.augment), eval_transform(config)
    id_table = ImageTable(
        datasets.concatenate_datasets(tables), t_train, np.concatenate(label_parts), mode
    )

    out_table = None
    if outliers:
        if opts.loss == "ce":
            raise OodkitError("--loss ce ignores outliers: use oe, energy, sona or sd")
        parts, labs, sources = [], [], []
        for ref in outliers:
            ds, inp = load_artifact_or_dataset(
                ref, data_root, idd.channels, "--outliers", "outliers"
            )
            inputs.append(inp)
            if opts.loss == "sona":
                if "source_id" not in ds.column_names:
                    raise OodkitError(
                        f"--outliers {ref} has no source_id, which --loss sona pairs on"
                    )
                unknown = [s for s in ds["source_id"] if s not in row_of]
                if unknown:
                    raise OodkitError(
                        f"--outliers {ref}: source {unknown[0]!r} is not in the ID set"
                    )
                sources.append(np.array([row_of[s] for s in ds["source_id"]], dtype=np.int64))
            if opts.loss == "sd":
                if "source_label" not in ds.column_names and not (
                    cluster_of is not None and "source_id" in ds.column_names
                ):
                    raise OodkitError(
                        f"--outliers {ref} has no source_label, which --loss sd needs"
                    )
                labs.append(source_label(ds, ref))
            else:
                labs.append(np.full(len(ds), -1, dtype=np.int64))
            parts.append(_plain_images(ds))
        table = ImageTable(
            datasets.concatenate_datasets(parts), t_train, np.concatenate(labs), mode
        )
        if opts.loss == "sona":
            sources_table = ImageTable(_plain_images(train), t_train, y, mode)
            table = PairedOutliers(table, sources_table, np.concatenate(sources))
        out_table = table
    elif opts.loss != "ce":
        raise OodkitError(f"--loss {opts.loss} needs --outliers")

    val_table = None
    if idd.val is not None and labels is None:
        val_table = ImageTable(idd.val, t_eval, np.asarray(idd.val["label"]), mode)
    refs = {
        "id": id_ref,
        "benchmark": idd.benchmark,
        "labels": labels,
        "outliers": list(outliers),
        "extra_id": list(extra_id),
        "val": val,
    }
    return _Data(
        id_table,
        out_table,
        val_table,
        num_classes,
        class_names,
        idd.channels,
        idd.image_size,
        inputs,
        refs,
    )


def _cosine(step: int, total: int, lr: float, min_lr: float) -> float:
    """Multiplier of the base lr: cosine from 1 to min_lr / lr over ``total`` steps (OpenOOD)."""
    lo = min_lr / lr
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * step / total))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0])


def _loader(dataset, batches: list[list[int]], num_workers: int, seed: int):
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, generator=gen)


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


def _step_loss(
    kind: str, model, club, batch, opts: TrainOptions, device
) -> tuple[torch.Tensor, Any]:
    """One batch's loss; for sona also the (outlier, source) features for the estimator."""
    x_id, y_id, _ = batch["id"]
    x_id, y_id = x_id.to(device), y_id.to(device)
    if kind == "ce":
        out = model(x_id)
        return F.cross_entropy(out["logits"], y_id), None
    parts = [x_id, batch["out"][0].to(device)]
    if kind == "sona":
        parts.append(batch["out"][1].to(device))
    n_id, n_out = len(x_id), len(parts[1])
    out = model(torch.cat(parts))
    logits = out["logits"]
    ce = F.cross_entropy(logits[:n_id], y_id)
    if kind == "oe":
        return ce + opts.beta * losses.oe_loss(logits[n_id:]), None
    if kind == "energy":
        margin = losses.energy_margin_loss(logits[:n_id], logits[n_id:], opts.m_in, opts.m_out)
        return ce + opts.energy_weight * margin, None
    if kind == "sona":
        # CLUB on L2-normalised features: with raw features the main step can drive the
        # bound to −∞ by inflating feature norms faster than the estimator follows (seen as
        # divergence on digits); on the unit sphere the bound is bounded.
        f_out = F.normalize(out["features"][n_id : n_id + n_out].float(), dim=1)
        f_src = F.normalize(out["features"][n_id + n_out :].float(), dim=1)
        mu, logvar = club(f_out)
        mi = losses.club_bound(mu, logvar, f_src)
        loss = ce + opts.beta * losses.oe_loss(logits[n_id : n_id + n_out]) + opts.club_weight * mi
        return loss, (f_out.detach(), f_src.detach())
    # sd: three heads over the concatenated batch
    y_out = batch["out"][1].to(device)
    is_out = torch.cat([torch.zeros(n_id, device=device), torch.ones(n_out, device=device)])
    return (
        losses.three_head_loss(
            out["bin"], logits, out["out"], is_out, torch.cat([y_id, y_out]), opts.sd_lambda
        ),
        None,
    )


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_detector(
    id_ref: str,
    out: str | Path,
    options: TrainOptions | None = None,
    *,
    labels: str | None = None,
    outliers: Sequence[str] = (),
    extra_id: Sequence[str] = (),
    val: str | None = None,
    weights: str | Path | None = None,
    pretrained: bool = False,
    data_root: str | Path | None = None,
    device: str = "auto",
    num_workers: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    stop_after_epochs: int | None = None,
    quiet: bool = False,
) -> Artifact | None:
    """Train a detector; returns its artifact, or ``None`` when ``stop_after_epochs`` paused it.

    ``outliers`` are outliers artifacts or any dataset references (e.g. held-out real OOD
    images); ``extra_id`` are ID-labelled extras such as VAE reconstructions; ``labels`` is a
    pseudo-labels artifact whose clusters replace the ground-truth labels.
    """
    from accelerate import Accelerator

    opts = options or TrainOptions()
    opts.check()
    data = _prepare_data(id_ref, opts, labels, outliers, extra_id, val, data_root)
    params = {
        **data.refs,
        **asdict(opts),
        "image_size": data.image_size,
        "weights": str(weights) if weights else None,
        "pretrained": pretrained,
    }
    if weights:
        params["weights_sha256"] = (
            hashlib.sha256(Path(weights).read_bytes()).hexdigest()
            if Path(weights).is_file()
            else None
        )
    existing = check_output(out, "detector", params, data.inputs, overwrite)
    if existing is not None:
        return existing
    ckpt_path = training_checkpoint(
        out, "detector", params, data.inputs, overwrite=overwrite, resume=resume
    )
    partial = ckpt_path.parent
    device = resolve_device(device)
    acc = Accelerator(
        cpu=device == "cpu", mixed_precision="bf16" if device.startswith("cuda") else "no"
    )
    dev = acc.device
    heads = ["cls", "bin", "out"] if opts.loss == "sd" else ["cls"]
    config = DetectorConfig.for_data(
        opts.arch,
        data.num_classes,
        data.channels,
        data.image_size,
        heads=heads,
        arch_kwargs=opts.arch_kwargs,
        pretrained=pretrained or weights is not None,
        class_names=data.class_names,
    )
    torch.manual_seed(opts.seed)
    model = Detector(config, pretrained=pretrained)
    if weights:
        load_backbone_weights(model, weights)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    club = club_opt = None
    if opts.loss == "sona":
        club = losses.ClubEstimator(model.feature_dim, model.feature_dim).to(dev)
        club_opt = torch.optim.Adam(club.parameters(), lr=opts.club_lr)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=opts.lr,
        momentum=opts.momentum,
        nesterov=opts.nesterov,
        weight_decay=opts.weight_decay,
    )
    world, rank = acc.num_processes, acc.process_index
    steps_per_epoch = len(data.id_table) // world // opts.batch_size
    if steps_per_epoch < 1:
        raise OodkitError(
            f"--batch-size {opts.batch_size} exceeds the {len(data.id_table)} ID samples"
        )
    total = steps_per_epoch * opts.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _cosine(s, total, opts.lr, opts.min_lr)
    )
    start_epoch, log = 0, []
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if club is not None:
            club.load_state_dict(state["club"])
            club_opt.load_state_dict(state["club_opt"])
        start_epoch, log = int(state["epoch"]), list(state["log"])
    model, optimizer = acc.prepare(model, optimizer)
    if club is not None:
        club, club_opt = acc.prepare(club, club_opt)
    out_bs = opts.outlier_batch_size or opts.batch_size

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=quiet or not acc.is_main_process,
    )
    started = time.perf_counter()
    seen = 0
    with progress:
        task = progress.add_task(
            f"train {opts.loss}", total=total, completed=start_epoch * steps_per_epoch, info=""
        )
        for epoch in range(start_epoch, opts.epochs):
            torch.manual_seed(_epoch_seed(opts.seed, epoch))
            id_batches = epoch_batches(
                len(data.id_table),
                opts.batch_size,
                opts.seed,
                epoch,
                ID_STREAM,
                steps_per_epoch,
                rank,
                world,
            )
            streams = {
                "id": _loader(data.id_table, id_batches, num_workers, _epoch_seed(opts.seed, epoch))
            }
            if data.outliers is not None:
                out_batches = epoch_batches(
                    len(data.outliers),
                    out_bs,
                    opts.seed,
                    epoch,
                    OUTLIER_STREAM,
                    steps_per_epoch,
                    rank,
                    world,
                )
                streams["out"] = _loader(
                    data.outliers, out_batches, num_workers, _epoch_seed(opts.seed, epoch) + 1
                )
            model.train()
            total_loss = torch.zeros((), device=dev)
            t0 = time.perf_counter()
            for batch in (
                dict(zip(streams, items, strict=True))
                for items in zip(*streams.values(), strict=True)
            ):
                with acc.autocast():
                    loss, pair = _step_loss(opts.loss, model, club, batch, opts, dev)
                optimizer.zero_grad(set_to_none=True)
                acc.backward(loss)
                optimizer.step()
                scheduler.step()
                if pair is not None:
                    for _ in range(opts.club_steps):
                        mu, logvar = club(pair[0])
                        est = losses.club_estimator_loss(mu, logvar, pair[1])
                        club_opt.zero_grad(set_to_none=True)
                        acc.backward(est)
                        club_opt.step()
                total_loss += loss.detach()
                seen += len(batch["id"][0]) * world
                progress.advance(task)
            epoch_loss = (acc.reduce(total_loss, "mean") / steps_per_epoch).item()
            speed = steps_per_epoch * opts.batch_size * world / (time.perf_counter() - t0)
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": epoch_loss,
                "lr": scheduler.get_last_lr()[0],
            }
            if data.val is not None:
                entry["val_accuracy"] = accuracy_on(
                    acc.unwrap_model(model), data.val, 256, dev, num_workers
                )
            log.append(entry)
            progress.update(
                task,
                info=f"loss {epoch_loss:.4f}"
                + (f" val acc {entry['val_accuracy']:.4f}" if "val_accuracy" in entry else "")
                + f" {speed:.0f} img/s",
            )
            if acc.is_main_process:
                state = {
                    "epoch": epoch + 1,
                    "model": acc.unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "log": log,
                }
                if club is not None:
                    state["club"] = acc.unwrap_model(club).state_dict()
                    state["club_opt"] = club_opt.state_dict()
                _atomic_save(state, ckpt_path)
            acc.wait_for_everyone()
            if (
                stop_after_epochs is not None
                and epoch + 1 - start_epoch >= stop_after_epochs
                and epoch + 1 < opts.epochs
            ):
                return None

    final = acc.unwrap_model(model)
    summary = {
        "final_loss": log[-1]["loss"],
        "id_val_accuracy": log[-1].get("val_accuracy"),
        "epochs": opts.epochs,
        "seconds": round(time.perf_counter() - started, 2),
        "images_per_s": round(seen / max(time.perf_counter() - started, 1e-9), 1),
        "num_parameters": sum(p.numel() for p in final.parameters()),
        "num_classes": data.num_classes,
    }
    if not acc.is_main_process:
        return None

    def write_files(folder: Path) -> None:
        save_detector(final, folder)
        (folder / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")

    art = write_artifact(
        out, "detector", params, data.inputs, write_files=write_files, summary=summary
    )
    import shutil

    shutil.rmtree(partial, ignore_errors=True)
    return art
