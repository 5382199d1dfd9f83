"""``oodkit pseudo-label``: cluster an unlabelled ID set into C pseudo-classes (SCAN or k-means).

Stages: features (SimCLR pretext training, or a frozen pretrained timm backbone) →
neighbour mining → SCAN clustering heads → self-labelling; or k-means on the same features.
Ground-truth labels are never used for training; when present they only score the result
(Hungarian accuracy, NMI, ARI). Each finished stage is kept in ``<out>.partial``, so an
interrupted run resumes at the stage it was in.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodkit.artifacts import Artifact, check_output, prepare_partial, write_artifact
from oodkit.devices import resolve_device
from oodkit.errors import OodkitError

METHODS = ("scan", "kmeans")


@dataclass
class PseudoLabelOptions:
    """Everything that shapes the clusters; recorded in the manifest."""

    method: str = "scan"
    num_clusters: int = 10
    features: str = "simclr"  # or timm:NAME (frozen, with --weights)
    arch: str = "resnet18"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    pretext_epochs: int = 200
    pretext_batch_size: int = 256
    pretext_lr: float = 0.2
    temperature: float = 0.1
    num_neighbors: int = 20
    num_heads: int = 10
    scan_epochs: int = 50
    scan_batch_size: int = 128
    scan_lr: float = 1e-4
    entropy_weight: float = 5.0
    selflabel_epochs: int = 25
    selflabel_lr: float = 1e-4
    threshold: float = 0.99
    balance: bool = True
    flip: str = "auto"  # auto = flips for RGB only
    image_size: int | None = None
    seed: int = 0


def _transforms(channels: int, size: int, flip: bool):
    from torchvision.transforms import v2

    mean, std = ([0.5], [0.5]) if channels == 1 else ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    flips = [v2.RandomHorizontalFlip()] if flip else []
    base = [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    colour = [
        v2.RandomApply(
            [v2.ColorJitter(0.4, 0.4, 0.4 if channels == 3 else 0, 0.1 if channels == 3 else 0)],
            p=0.8,
        )
    ]
    if channels == 3:
        colour.append(v2.RandomGrayscale(p=0.2))
    simclr = v2.Compose(
        [
            *base,
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
            v2.RandomAffine(degrees=10),
            *flips,
            *colour,
            *tail,
        ]
    )
    weak = v2.Compose([*base, v2.RandomCrop(size, padding=max(1, size // 8)), *flips, *tail])
    strong = v2.Compose(
        [
            *base,
            v2.RandomCrop(size, padding=max(1, size // 8)),
            *flips,
            v2.RandAugment(num_ops=2, magnitude=9),
            *tail,
            v2.RandomErasing(p=0.5),
        ]
    )
    return {"eval": v2.Compose([*base, *tail]), "simclr": simclr, "weak": weak, "strong": strong}


def _check(o: PseudoLabelOptions, n: int, weights: str | None) -> None:
    if o.method not in METHODS:
        raise OodkitError(f"--method must be one of {', '.join(METHODS)}, got {o.method!r}")
    if o.num_clusters < 2:
        raise OodkitError(f"--num-clusters must be at least 2, got {o.num_clusters}")
    if o.num_clusters > n:
        raise OodkitError(f"--num-clusters {o.num_clusters} is larger than the {n} ID samples")
    if o.method == "scan" and not 1 <= o.num_neighbors < n:
        raise OodkitError(
            f"--num-neighbors {o.num_neighbors} must lie in 1..{n - 1} (below the dataset size)"
        )
    if o.features != "simclr":
        if not o.features.startswith("timm:") or len(o.features) <= 5:
            raise OodkitError(f"--features must be simclr or timm:NAME, got {o.features!r}")
        if weights is None:
            raise OodkitError("--features timm:NAME needs --weights PATH (a pretrained backbone)")
        if not Path(weights).is_file():
            raise OodkitError(f"weights file {weights} does not exist")
    if o.num_heads < 1:
        raise OodkitError("--num-heads must be at least 1")


def _save(net: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path))


def _load(net: torch.nn.Module, path: Path, strict: bool = True) -> None:
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(path)), strict=strict)


def kmeans_labels(features: torch.Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means on L2-normalised features; confidence = softmax(−squared distance) at the centre."""
    from sklearn.cluster import KMeans

    x = features.numpy().astype(np.float64)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    d2 = ((x[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    p = np.exp(-(d2 - d2.min(1, keepdims=True)))
    p /= p.sum(1, keepdims=True)
    return km.labels_.astype(np.int64), p.max(1)


def _stage_progress(progress, name: str, total: int):
    """A rich progress task for one stage; returns the per-epoch callback."""
    task = progress.add_task(name, total=total, info="")

    def update(done: int, loss: float) -> None:
        progress.update(task, completed=done, info=f"loss {loss:.4f}")

    return update


def pseudo_label(
    id_ref: str,
    out: str | Path,
    options: PseudoLabelOptions | None = None,
    *,
    weights: str | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
) -> Artifact | None:
    """Cluster the ID set into a pseudo-labels artifact (sample_id, cluster, confidence).

    Under ``accelerate launch`` every process trains its share of each batch; the main one
    writes the stages and the artifact and returns it (the others return ``None``).
    """
    import datasets
    from accelerate import Accelerator
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from oodkit.data.sources import dataset_input, resolve_id
    from oodkit.detector.model import read_state_dict
    from oodkit.pseudolabel import train as T
    from oodkit.pseudolabel.metrics import clustering_metrics

    o = options or PseudoLabelOptions()
    idd = resolve_id(id_ref, data_root=data_root, image_size=o.image_size)
    n = len(idd.train)
    _check(o, n, weights)
    device = resolve_device(device)
    acc = Accelerator(
        cpu=device == "cpu", mixed_precision="bf16" if device.startswith("cuda") else "no"
    )
    main = acc.is_main_process
    if o.features == "simclr":  # refused before any work, not when the stage is reached
        T.check_world(min(o.pretext_batch_size, n), "--pretext-batch-size")
    if o.method == "scan":
        T.check_world(min(o.scan_batch_size, n), "--scan-batch-size")
    console = Console(quiet=quiet or not main, stderr=True)
    mode = "L" if idd.channels == 1 else "RGB"
    images = [im.convert(mode) if im.mode != mode else im for im in idd.train["image"]]
    true = np.asarray(idd.train["label"], dtype=np.int64)
    has_truth = bool((true >= 0).all())
    params = {
        **asdict(o),
        "id": id_ref,
        "weights": weights,
        "image_size": idd.image_size,
        "labels_used_for_training": False,
    }
    inputs = [dataset_input(id_ref, idd.train)]
    existing = check_output(out, "pseudo-labels", params, inputs, overwrite)
    if existing is not None:
        return existing if main else None
    state = {"kind": "pseudo-labels", "params": params}
    if main:
        partial, _ = prepare_partial(out, state, overwrite)
    acc.wait_for_everyone()
    if not main:
        partial, _ = prepare_partial(out, state)
    flip = idd.channels == 3 if o.flip == "auto" else o.flip == "yes"
    tf = _transforms(idd.channels, idd.image_size, flip)
    torch.manual_seed(o.seed)
    simclr = o.features == "simclr"
    arch = o.arch if simclr else o.features[5:]
    heads = o.num_heads if o.method == "scan" else 0
    net = T.FeatureNet(
        arch,
        idd.channels,
        idd.image_size if simclr else 224,
        o.arch_kwargs,
        num_clusters=o.num_clusters,
        num_heads=heads,
    )
    if acc.num_processes > 1 and acc.device.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)  # BN over the global batch
    started = time.perf_counter()
    say = console.log
    pretext = partial / "pretext.safetensors"
    log_file = partial / "log.json"  # kept with the stages, so a resumed run reports them too
    log: dict[str, Any] = json.loads(log_file.read_text()) if log_file.exists() else {}

    def finish_stage(path: Path) -> None:
        if main:
            _save(net, path)
            log_file.write_text(json.dumps(log))
        acc.wait_for_everyone()

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} epochs"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=quiet or not main,
    )
    with bars:
        if simclr:
            if pretext.exists():
                _load(net, pretext)
                say("pretext: reusing the finished stage")
            else:
                log["pretext_loss"] = T.train_simclr(
                    net,
                    images,
                    tf["simclr"],
                    accelerator=acc,
                    epochs=o.pretext_epochs,
                    batch_size=min(o.pretext_batch_size, n),
                    lr=o.pretext_lr,
                    temperature=o.temperature,
                    seed=o.seed,
                    progress=_stage_progress(bars, "SimCLR pretext", o.pretext_epochs),
                )
                finish_stage(pretext)
        else:
            state_dict = read_state_dict(weights)
            own = net.backbone.state_dict()
            missing = [k for k in own if k not in state_dict or state_dict[k].shape != own[k].shape]
            if missing:
                raise OodkitError(
                    f"weights {weights} do not fit {arch}: {missing[0]} is missing or differs"
                )
            net.backbone.load_state_dict({k: state_dict[k] for k in own})
        features = T.embed(net, images, tf["eval"], acc.device)
        summary: dict[str, Any] = {"num_clusters": o.num_clusters, "samples": n}
        km_pred, km_conf = kmeans_labels(features, o.num_clusters, o.seed)
        if has_truth:
            summary["kmeans"] = clustering_metrics(km_pred, true)
        if o.method == "kmeans":
            cluster, confidence = km_pred, km_conf
        else:
            scan_path, self_path = partial / "scan.safetensors", partial / "selflabel.safetensors"
            neighbors = T.mine_neighbors(features, o.num_neighbors)
            if has_truth:
                summary["neighbor_purity"] = float(
                    (true[neighbors.numpy()] == true[:, None]).mean()
                )
            if not simclr:
                for p in net.backbone.parameters():
                    p.requires_grad_(False)  # frozen pretrained backbone: heads only
            if scan_path.exists():
                _load(net, scan_path)
                say("SCAN: reusing the finished stage")
            else:
                log["scan_loss"] = T.train_scan(
                    net,
                    images,
                    neighbors,
                    tf["weak"],
                    accelerator=acc,
                    epochs=o.scan_epochs,
                    batch_size=min(o.scan_batch_size, n),
                    lr=o.scan_lr,
                    entropy_weight=o.entropy_weight,
                    seed=o.seed,
                    progress=_stage_progress(bars, "SCAN clustering", o.scan_epochs),
                )
            # one eval pass serves head selection, the pre-self-label metrics and, without
            # self-labelling, the final clusters
            logits = T.cluster_logits_all(net, images, tf["eval"], acc.device)
            head, log["scan_head_losses"] = T.select_head(logits, neighbors, o.seed)
            if not scan_path.exists():
                finish_stage(scan_path)
            summary["best_head"] = head
            logits = logits[head]
            if o.selflabel_epochs > 0:
                if has_truth:
                    before = clustering_metrics(logits.argmax(1).numpy(), true)
                    summary["before_self_label"] = before
                if self_path.exists():
                    _load(net, self_path)
                    say("self-labelling: reusing the finished stage")
                else:
                    log["selflabel_loss"] = T.train_self_label(
                        net,
                        head,
                        images,
                        tf["weak"],
                        tf["strong"],
                        accelerator=acc,
                        epochs=o.selflabel_epochs,
                        batch_size=min(o.scan_batch_size, n),
                        lr=o.selflabel_lr,
                        threshold=o.threshold,
                        balance=o.balance,
                        seed=o.seed,
                        progress=_stage_progress(bars, "self-labelling", o.selflabel_epochs),
                    )
                    finish_stage(self_path)
                logits = T.cluster_logits_all(net, images, tf["eval"], acc.device)[head]
            confidence, cluster = (t.numpy() for t in logits.softmax(dim=1).max(dim=1))
    if not main:
        return None
    if has_truth:
        summary.update(clustering_metrics(cluster, true))
    summary["seconds_this_run"] = round(time.perf_counter() - started, 2)
    table = datasets.Dataset.from_dict(
        {
            "sample_id": idd.train["sample_id"],
            "cluster": cluster.astype(np.int64).tolist(),
            "confidence": confidence.astype(np.float64).tolist(),
        },
        features=datasets.Features(
            {
                "sample_id": datasets.Value("string"),
                "cluster": datasets.Value("int64"),
                "confidence": datasets.Value("float64"),
            }
        ),
    )

    def write_files(folder: Path) -> None:
        if pretext.exists():
            shutil.copy(pretext, folder / "pretext.safetensors")
        if o.method == "scan":
            _save(net, folder / "clustering.safetensors")
        (folder / "log.json").write_text(json.dumps(log, indent=2) + "\n")

    art = write_artifact(
        out,
        "pseudo-labels",
        params,
        inputs,
        dataset=table,
        write_files=write_files,
        summary=summary,
    )
    shutil.rmtree(partial, ignore_errors=True)
    return art
