"""``oodkit pseudo-label``: cluster an unlabelled ID set into C pseudo-classes (SCAN or k-means).

Pipeline: resolve the ID set → check → features (SimCLR pretext training, or a frozen
pretrained timm backbone) → k-means baseline → the registered method's clusters → write.
Ground-truth labels are never used for training; when present they only score the result
(Hungarian accuracy, NMI, ARI). Each finished stage is kept in ``<out>.partial``, so an
interrupted run resumes at the stage it was in.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodkit.artifacts import (
    Artifact,
    atomic_file,
    check_output,
    column,
    prepare_partial,
    write_artifact,
)
from oodkit.data.images import images_of
from oodkit.data.tables import image_mode
from oodkit.locks import writes_output
from oodkit.methods import PSEUDO_LABEL
from oodkit.metrics import clustering_metrics
from oodkit.models.backbone import load_backbone_weights
from oodkit.options import recipe, with_overrides
from oodkit.outcome import NOT_MAIN, Pending
from oodkit.schemas import PseudoLabelSummary, pseudo_labels_dataset
from oodkit.stages.pseudo_label.features import (
    FeatureNet,
    embed,
    train_simclr,
    transforms,
)
from oodkit.stages.pseudo_label.kmeans import kmeans_labels
from oodkit.stages.pseudo_label.options import PseudoLabelOptions
from oodkit.training import check_world, main_first, make_accelerator, progress_bar


def _save(net: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_file(path, lambda tmp: save_file(state, str(tmp)))  # a cut-off file never loads


def _read_log(path: Path) -> dict[str, Any]:
    """The finished stages' log of an interrupted run; a damaged one is started afresh (it
    only reports the stages, which are reused from their own files)."""
    try:
        log = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return log if isinstance(log, dict) else {}


@dataclass
class Stages:
    """What the clustering methods share: the network, images, augmentations, the accelerator,
    the stage folder (finished stages are reused), the log and the summary."""

    o: PseudoLabelOptions
    net: FeatureNet
    images: Sequence
    tf: dict[str, Callable]
    acc: Any
    partial: Path
    bars: Any
    say: Callable[[str], None]
    true: np.ndarray | None  # ground truth, only to score the result
    log: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def reuse(self, path: Path, what: str) -> bool:
        """Load a finished stage's weights if there are any (a damaged file: run it again)."""
        if not path.exists():
            return False
        from safetensors.torch import load_file

        try:
            self.net.load_state_dict(load_file(str(path)))
        except Exception:  # noqa: BLE001 - cut off or damaged: the stage is recomputed
            path.unlink(missing_ok=True)
            return False
        self.say(f"{what}: reusing the finished stage")
        return True

    def finish(self, path: Path) -> None:
        """Keep a finished stage (main process) and the log that a resumed run reports."""
        if self.acc.is_main_process:
            _save(self.net, path)
            (self.partial / "log.json").write_text(json.dumps(self.log))
        self.acc.wait_for_everyone()

    def progress(self, name: str, total: int) -> Callable[[int, float], None]:
        """A progress task for one stage; returns the per-epoch callback."""
        task = self.bars.add_task(name, total=total, info="")
        return lambda done, loss: self.bars.update(task, completed=done, info=f"loss {loss:.4f}")

    def report(self, key: str, figure: Callable[[np.ndarray], Any]) -> None:
        """A summary figure computed from the ground truth, when there is one."""
        if self.true is not None:
            self.summary[key] = figure(self.true)

    def report_clusters(self, key: str, clusters: np.ndarray) -> None:
        self.report(key, lambda true: clustering_metrics(clusters, true))


def _features(ctx: Stages) -> torch.Tensor:
    """Train (or reuse) the SimCLR pretext, or load a frozen backbone; embed every image."""
    o = ctx.o
    pretext = ctx.partial / "pretext.safetensors"
    if o.features != "simclr":
        load_backbone_weights(ctx.net.backbone, o.weights, o.features[5:])
    elif not ctx.reuse(pretext, "pretext"):
        ctx.log["pretext_loss"] = train_simclr(
            ctx.net,
            ctx.images,
            ctx.tf["simclr"],
            accelerator=ctx.acc,
            epochs=o.pretext_epochs,
            batch_size=min(o.pretext_batch_size, len(ctx.images)),
            lr=o.pretext_lr,
            temperature=o.temperature,
            seed=o.seed,
            progress=ctx.progress("SimCLR pretext", o.pretext_epochs),
        )
        ctx.finish(pretext)
    return embed(ctx.net, ctx.images, ctx.tf["eval"], ctx.acc.device)


def _network(o: PseudoLabelOptions, channels: int, image_size: int, acc) -> FeatureNet:
    torch.manual_seed(o.seed)
    simclr = o.features == "simclr"
    net = FeatureNet(
        o.arch if simclr else o.features[5:],
        channels,
        image_size if simclr else 224,
        o.arch_kwargs,
        num_clusters=o.num_clusters,
        num_heads=o.num_heads if o.method == "scan" else 0,
    )
    if acc.num_processes > 1 and acc.device.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)  # BN over the global batch
    return net


@writes_output
def pseudo_label(
    id_ref: str, out: str | Path, options: PseudoLabelOptions | None = None, **overrides: Any
) -> Artifact | Pending:
    """Cluster the ID set into a pseudo-labels artifact (sample_id, cluster, confidence).

    Under ``accelerate launch`` every process trains its share of each batch; the main one
    writes the stages and the artifact and returns it (the others return ``None``). Keyword
    arguments override fields of ``options``.
    """
    from rich.console import Console

    from oodkit.data.sources import dataset_input, resolve_id
    from oodkit.hashing import file_input

    o = with_overrides(PseudoLabelOptions, options, overrides)
    idd = resolve_id(id_ref, data_root=o.data_root, image_size=o.image_size)
    n = len(idd.train)
    o.check(n)
    acc = make_accelerator(o.device)
    main = acc.is_main_process
    if o.features == "simclr":  # refused before any work, not when the stage is reached
        check_world(min(o.pretext_batch_size, n), "--pretext-batch-size")
    if o.method == "scan":
        check_world(min(o.scan_batch_size, n), "--scan-batch-size")
    mode = image_mode(idd.channels)
    images = images_of(idd.train, mode, idd.image_size, idd.channels)
    true = np.asarray(column(idd.train, "label"), dtype=np.int64)
    params = {
        **recipe(o),
        "id": id_ref,
        "weights": o.weights,
        "image_size": idd.image_size,
        "labels_used_for_training": False,
    }
    inputs = [dataset_input(id_ref, idd.train)]
    if o.weights:
        inputs.append(file_input(o.weights, "weights"))
    existing = check_output(out, "pseudo-labels", params, inputs, o.overwrite)
    if existing is not None:
        return existing if main else None
    net = _network(o, idd.channels, idd.image_size, acc)  # a bad arch or weights: nothing made
    state = {"kind": "pseudo-labels", "params": params}
    partial, _ = main_first(
        acc, lambda overwrite: prepare_partial(out, state, overwrite), o.overwrite
    )
    flip = idd.channels == 3 if o.flip == "auto" else o.flip == "yes"
    started = time.perf_counter()
    console = Console(quiet=o.quiet or not main, stderr=True)
    log_file = partial / "log.json"  # kept with the stages, so a resumed run reports them too
    bars = progress_bar(disable=o.quiet or not main, unit="epochs", console=console)
    ctx = Stages(
        o,
        net,
        images,
        transforms(idd.channels, idd.image_size, flip),
        acc,
        partial,
        bars,
        console.log,
        true if bool((true >= 0).all()) else None,
        log=_read_log(log_file),
        summary={"num_clusters": o.num_clusters, "samples": n},
    )
    with bars:
        features = _features(ctx)
        kmeans = kmeans_labels(features, o.num_clusters, o.seed)
        ctx.report_clusters("kmeans", kmeans[0])
        cluster, confidence = PSEUDO_LABEL.get(o.method).load()(ctx, features, kmeans)
    if not main:
        return NOT_MAIN
    return _write(
        out, ctx, cluster, confidence, params, inputs, column(idd.train, "sample_id"), started
    )


def _write(out, ctx: Stages, cluster, confidence, params, inputs, sample_ids, started) -> Artifact:
    if ctx.true is not None:
        ctx.summary.update(clustering_metrics(cluster, ctx.true))
    ctx.summary["seconds_this_run"] = round(time.perf_counter() - started, 2)
    pretext = ctx.partial / "pretext.safetensors"

    def write_files(folder: Path) -> None:
        if pretext.exists():
            shutil.copy(pretext, folder / "pretext.safetensors")
        if ctx.o.method == "scan":
            _save(ctx.net, folder / "clustering.safetensors")
        (folder / "log.json").write_text(json.dumps(ctx.log, indent=2) + "\n")

    art = write_artifact(
        out,
        "pseudo-labels",
        params,
        inputs,
        dataset=pseudo_labels_dataset(sample_ids, cluster, confidence),
        write_files=write_files,
        summary=PseudoLabelSummary.read(ctx.summary).as_dict(given=True),  # no ground truth: none
    )
    shutil.rmtree(ctx.partial, ignore_errors=True)
    return art
