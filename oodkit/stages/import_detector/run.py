"""``import_detector``: a classifier from torchvision, timm, OpenOOD, pytorch-ood or the
user's own Python code as a detector artifact that ``score``, DiffGuard, ``eval`` and
``push`` treat like a trained one.

Steps: parse the source and options; build the network and load its weights (from a file, or
the library's cache — nothing is downloaded; or, through ``import_module``, from a module
in memory); settle its preprocessing and classes; check that a forward pass ends in its
classifier layer; write the artifact (config + weights in the original key layout). Nothing
is written before every check passed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from oodkit.artifacts import Artifact, check_output, write_artifact
from oodkit.errors import OodkitError, first_line
from oodkit.locks import writes_output
from oodkit.models.imported import (
    Imported,
    ImportedClassifier,
    Source,
    classes_of,
    import_classifier,
    parse_source,
)
from oodkit.models.preprocessing import Preprocessing, preprocessing_of
from oodkit.options import with_overrides
from oodkit.schemas import ImportedDetectorSummary
from oodkit.stages.import_detector.options import ImportOptions


def _preprocessing(source: Source, imp: Imported, o: ImportOptions) -> Preprocessing:
    """Command-line values over ``--trained-on``'s OpenOOD preprocessing over the source's."""
    base = preprocessing_of(o.trained_on) if o.trained_on else imp.preprocessing
    given = o.overrides()
    if base is None:
        missing = [f for f in ("resize", "crop", "mean", "std") if f not in given]
        if missing:
            raise OodkitError(
                f"{source} does not say how its inputs were preprocessed: pass --trained-on "
                f"or --{missing[0]} (and --resize, --crop, --mean, --std)"
            )
        base = Preprocessing(**{k: given[k] for k in ("resize", "crop", "mean", "std")})
    prep = dataclasses.replace(base, **given)
    if prep.crop > prep.resize:
        raise OodkitError(f"crop {prep.crop} is larger than resize {prep.resize}")
    return prep


def _classes(imp: Imported, o: ImportOptions, k: int) -> tuple[list | None, list | None]:
    names, ids = classes_of(o.trained_on) if o.trained_on else (imp.class_names, imp.class_ids)
    if o.class_names:
        if len(o.class_names) != k:
            raise OodkitError(
                f"the classifier has {k} classes but --class-names names {len(o.class_names)}"
            )
        names, ids = list(o.class_names), (ids if names == list(o.class_names) else None)
    if names is not None and len(names) != k:
        raise OodkitError(
            f"the classifier has {k} classes but {o.trained_on or 'its source'} names {len(names)}"
        )
    return names, ids


@torch.no_grad()
def _check_forward(model: ImportedClassifier, size: int) -> None:
    """One forward of a batch of 2 at the crop size: it must end in the classifier layer."""
    try:
        out = model(torch.zeros(2, 3, size, size))
    except OodkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a ViT refusing another input size
        raise OodkitError(
            f"{model.config.arch} cannot take {size}px inputs: {first_line(exc)}"
        ) from None
    if tuple(out["logits"].shape) != (2, model.config.num_classes):
        raise OodkitError(
            f"{model.config.arch} gives logits of shape {tuple(out['logits'].shape)} for a "
            f"batch of 2 {size}px images, not (2, {model.config.num_classes})"
        )


@writes_output
def import_detector(
    source: str, out: str | Path, options: ImportOptions | None = None, **overrides: Any
) -> Artifact:
    """Import ``source`` (``torchvision:NAME:WEIGHTS``, ``timm:NAME``, ``openood:ARCH``,
    ``pytorch-ood:KEY``, ``python:MODULE:CALLABLE``; see ``oodkit.models.imported``) as a
    detector artifact at ``out``.

    Keyword arguments override fields of ``options``.
    """
    o = with_overrides(ImportOptions, options, overrides)
    o.check()
    src = parse_source(source)
    return _write(src, import_classifier(src, o.weights, o.builder_kwargs), o, out)


@writes_output
def import_module(
    net: torch.nn.Module,
    builder: str,
    out: str | Path,
    options: ImportOptions | None = None,
    **overrides: Any,
) -> Artifact:
    """Import an ``nn.Module`` built in Python as a detector artifact at ``out``.

    ``builder`` (``MODULE:CALLABLE``) called with ``builder_kwargs`` must rebuild ``net``'s
    architecture: the artifact keeps its weights and that recipe, as a ``python:`` source.
    Preprocessing comes from ``trained_on`` and / or ``resize``, ``crop``, ``mean``, ``std``;
    classes from ``trained_on`` or ``class_names``. Keyword arguments override fields of
    ``options``.
    """
    from oodkit.models.imported import import_module as rebuild

    o = with_overrides(ImportOptions, options, overrides)
    o.check()
    if o.weights is not None:
        raise OodkitError("import_module takes the module's own weights: drop weights=")
    src = parse_source(f"python:{builder}")
    return _write(src, rebuild(net, builder, o.builder_kwargs), o, out)


def _write(src: Source, imp: Imported, o: ImportOptions, out: str | Path) -> Artifact:
    """Preprocessing, classes, checks and the artifact of an imported classifier."""
    from oodkit.models.detector import DetectorConfig, save_detector

    prep = _preprocessing(src, imp, o)
    head = imp.net.get_submodule(imp.arch["head"])
    k = int(head.out_features)
    names, ids = _classes(imp, o, k)
    params = {
        "source": str(src),
        "trained_on": o.trained_on,
        "num_classes": k,
        "head": imp.arch["head"],
        "preprocessing": dataclasses.asdict(prep),
    }
    if imp.arch.get("kwargs"):
        params["builder_kwargs"] = imp.arch["kwargs"]
    if o.class_names:
        params["class_names"] = list(o.class_names)
    inputs = [imp.weights]
    existing = check_output(out, "detector", params, inputs, o.overwrite)
    if existing is not None:
        return existing
    config = DetectorConfig(
        arch=str(src),
        num_classes=k,
        in_chans=3,
        image_size=prep.crop,
        heads=["cls"],
        mean=prep.mean,
        std=prep.std,
        class_names=names,
        source=imp.arch,
        resize=prep.resize,
        resize_square=prep.square,
        interpolation=prep.interpolation,
        class_ids=ids,
    )
    model = ImportedClassifier(config, imp.net).eval()
    _check_forward(model, prep.crop)
    summary = ImportedDetectorSummary(
        num_classes=k,
        feature_dim=model.feature_dim,
        parameters=sum(p.numel() for p in imp.net.parameters()),
    ).as_dict()
    return write_artifact(
        out,
        "detector",
        params,
        inputs,
        write_files=lambda folder: save_detector(model, folder),
        summary=summary,
    )
