"""``oodkit score``: a detector × a benchmark × post-hoc methods → scores artifacts.

Features and logits are extracted once per set (and cached), then every requested method
is computed from them; each method writes its own scores artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from oodkit.artifacts import Artifact, check_output, load_artifact
from oodkit.devices import resolve_device
from oodkit.errors import OodkitError
from oodkit.scores import SetScores, write_scores
from oodkit.scoring import posthoc

METHODS = ("msp", "energy", "maxlogit", "knn", "sd-vote")
DEFAULT_K = {"knn": 50, "sd-vote": 10}


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"energy,knn"`` or a list → validated method names (order kept, no repeats)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    methods = list(dict.fromkeys(m.strip() for m in items if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise OodkitError(
            f"unknown method {unknown[0] if unknown else text!r}: choose from {', '.join(METHODS)}"
        )
    return methods


def _check_fit(config, bench, allow_resize: bool) -> None:
    """Refuse benchmarks whose images the detector cannot take."""
    if bench.channels != config.in_chans:
        raise OodkitError(
            f"the detector takes {config.in_chans}-channel images but benchmark {bench.name} has "
            f"{bench.channels} channel(s)"
        )
    if bench.image_size and bench.image_size != config.image_size and not allow_resize:
        raise OodkitError(
            f"the detector takes {config.image_size}px images but benchmark {bench.name} has "
            f"{bench.image_size}px images; pass --resize to rescale them"
        )


def method_scores(
    method: str,
    feats: dict[str, dict[str, torch.Tensor]],
    train: dict[str, torch.Tensor] | None,
    outliers: dict[str, torch.Tensor] | None,
    *,
    k: int,
    alpha: float,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """id_score per set name for one method."""
    out = {}
    for name, f in feats.items():
        if method == "msp":
            out[name] = posthoc.msp(f["logits"], temperature)
        elif method == "energy":
            out[name] = posthoc.energy(f["logits"], temperature)
        elif method == "maxlogit":
            out[name] = posthoc.maxlogit(f["logits"])
        elif method == "knn":
            out[name] = posthoc.knn_score(f["features"], train["features"], k)
        else:
            out[name] = posthoc.sd_vote_score(
                f["features"], train["features"], outliers["features"], k, alpha
            )
    return out


def score(
    detector: str | Path,
    benchmark: str,
    methods: str | Sequence[str],
    out: str | Path,
    *,
    outliers: str | None = None,
    k: int | None = None,
    alpha: float = 0.3,
    temperature: float = 1.0,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | Path | None = None,
    num_workers: int = 0,
    allow_resize: bool = False,
    use_cache: bool = True,
    overwrite: bool = False,
) -> list[Artifact]:
    """Score the benchmark's ID test set and every OOD test set with each method.

    With one method ``out`` is the scores artifact; with several, ``out/<method>``.
    """
    from oodkit.data.benchmarks import get_benchmark
    from oodkit.data.sources import load_artifact_or_dataset
    from oodkit.detector.model import load_detector
    from oodkit.scoring.features import cached_extract

    names = parse_methods(methods)
    if temperature <= 0:
        raise OodkitError("--temperature must be positive")
    det = load_artifact(detector, kind="detector")
    bench = get_benchmark(benchmark, data_root=data_root)
    device = resolve_device(device)
    model = load_detector(det.path, device)
    config = model.config
    _check_fit(config, bench, allow_resize)
    if "sd-vote" in names and not outliers:
        raise OodkitError("--method sd-vote needs --outliers (the detector's training outliers)")
    inputs = [det.as_input()]
    out_ds = None
    if outliers:
        out_ds, inp = load_artifact_or_dataset(
            outliers, data_root, config.in_chans, "--outliers", "outliers"
        )
        inputs.append(inp)
    det_label = det.manifest.params.get("loss", "detector")
    targets = {}
    for m in names:
        m_k = k or DEFAULT_K.get(m)
        params: dict[str, Any] = {
            "method": m,
            "label": f"{det_label}+{m}",
            "detector": str(det.path),
            "benchmark": benchmark,
            "temperature": temperature if m in ("msp", "energy") else None,
            "k": m_k if m in DEFAULT_K else None,
            "alpha": alpha if m == "sd-vote" else None,
            "seed": det.manifest.params.get("seed"),
        }
        path = Path(out) if len(names) == 1 else Path(out) / m
        existing = check_output(path, "scores", params, inputs, overwrite)
        targets[m] = (path, params, existing)
    todo = [m for m, (_, _, e) in targets.items() if e is None]
    results = {m: e for m, (_, _, e) in targets.items() if e is not None}
    if not todo:
        return [results[m] for m in names]

    def run(ds) -> dict[str, torch.Tensor]:
        return cached_extract(
            model, det.manifest.fingerprint, ds, batch_size, num_workers, use_cache
        )

    sets = [("id_test", bench.id_test)] + [(s.name, s) for s in bench.ood]
    loaded = {key: bench.load(key) for key, _ in sets}
    id_labels = torch.tensor(loaded["id_test"]["label"])
    if (
        det.manifest.params.get("labels") is None
        and len(id_labels)
        and int(id_labels.max()) >= config.num_classes
    ):
        raise OodkitError(
            f"the detector has {config.num_classes} classes but the ID labels of {bench.name} "
            f"go up to {int(id_labels.max())}"
        )
    feats = {key: run(ds) for key, ds in loaded.items()}
    needs_train = any(m in ("knn", "sd-vote") for m in todo)
    train = run(bench.load("id_train")) if needs_train else None
    out_feats = run(out_ds) if out_ds is not None and "sd-vote" in todo else None
    for m in todo:
        path, params, _ = targets[m]
        m_k = params["k"] or 0
        if m in DEFAULT_K:
            pool = len(train["features"])
            if not 1 <= m_k <= pool:
                raise OodkitError(f"--k {m_k} must lie in 1..{pool} (ID training samples)")
        scores = method_scores(
            m, feats, train, out_feats, k=m_k, alpha=alpha, temperature=temperature
        )
        rows = []
        # a detector trained on pseudo-labels predicts clusters, not label ids: no accuracy
        clusters = det.manifest.params.get("labels") is not None
        for key, spec in sets:
            ds = loaded[key]
            pred = None if clusters else feats[key]["logits"].argmax(1).numpy()
            rows.append(
                SetScores(
                    spec.name,
                    spec.group,
                    ds["sample_id"],
                    scores[key].numpy(),
                    pred,
                    ds["label"] if spec.group == "id" else None,
                )
            )
        acc = (
            None
            if clusters
            else float((feats["id_test"]["logits"].argmax(1) == id_labels).float().mean())
        )
        results[m] = write_scores(path, rows, params, inputs, summary={"id_accuracy": acc})
    return [results[m] for m in names]
