"""Detector = timm backbone + linear heads (``cls``; ``bin`` and ``out`` for the SD loss), or
a classifier imported from another library (``oodkit.models.imported``).

Saved as ``model.safetensors`` + ``config.json`` inside a detector artifact (an imported
classifier's weights in its original key layout). Weights are only ever read with
safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oodkit.data.images import SMALL_INPUT, normalisation
from oodkit.errors import OodkitError, first_line
from oodkit.models.backbone import create_backbone, load_backbone_weights

CONFIG_NAME = "config.json"
IMPORT_FIELDS = ("source", "resize", "resize_square", "interpolation", "class_ids")
WEIGHTS_NAME = "model.safetensors"


@dataclass
class DetectorConfig:
    """Everything needed to rebuild a detector and feed it images."""

    arch: str = "resnet18"
    num_classes: int = 10
    in_chans: int = 3
    image_size: int = 32
    heads: list[str] = field(default_factory=lambda: ["cls"])
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    small_input_stem: bool = False
    mean: list[float] = field(default_factory=lambda: normalisation(3)[0])
    std: list[float] = field(default_factory=lambda: normalisation(3)[1])
    class_names: list[str] | None = None
    # imported classifiers (oodkit.models.imported): how to rebuild the network and feed it
    source: dict[str, Any] | None = None  # library, name, head (its classifier layer)
    resize: int | None = None  # eval resize before the centre crop (None: oodkit's rule)
    resize_square: bool = False  # resize both sides to ``resize`` (else the shorter side)
    interpolation: str = "bilinear"
    class_ids: list[str] | None = None  # WordNet ids of the classes, where known

    @classmethod
    def for_data(
        cls,
        arch: str,
        num_classes: int,
        in_chans: int,
        image_size: int,
        *,
        heads: list[str],
        arch_kwargs: dict[str, Any] | None = None,
        pretrained: bool = False,
        class_names: list[str] | None = None,
    ) -> DetectorConfig:
        """A config with normalisation and stem chosen for the data (ImageNet stats for RGB)."""
        mean, std = normalisation(in_chans)
        return cls(
            arch=arch,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            heads=heads,
            arch_kwargs=dict(arch_kwargs or {}),
            small_input_stem=image_size < SMALL_INPUT and not pretrained,
            mean=mean,
            std=std,
            class_names=class_names,
        )

    def save(self, folder: Path) -> None:
        """``config.json``; the imported-classifier fields only for an imported classifier
        (a trained detector's config stays readable by earlier oodkit versions)."""
        values = asdict(self)
        if self.source is None:
            for name in IMPORT_FIELDS:
                values.pop(name)
        (folder / CONFIG_NAME).write_text(json.dumps(values, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> DetectorConfig:
        try:
            values = json.loads((folder / CONFIG_NAME).read_text())
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise OodkitError(
                f"{folder / CONFIG_NAME} cannot be read ({first_line(exc)}); run oodkit verify "
                f"{folder}"
            ) from None
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise OodkitError(
                f"{folder / CONFIG_NAME} has fields this oodkit does not know ({unknown[0]}, ...): "
                "written by a newer version?"
            )
        try:
            return cls(**values)
        except TypeError as exc:
            raise OodkitError(f"{folder / CONFIG_NAME} is damaged: {first_line(exc)}") from None


class Detector(nn.Module):
    """Backbone features → ``cls`` logits (+ ``bin`` ID/outlier and ``out`` heads if asked)."""

    def __init__(self, config: DetectorConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(
            config.arch,
            config.in_chans,
            config.arch_kwargs,
            small_input_stem=config.small_input_stem,
            pretrained=pretrained,
        )
        dim = self.backbone.num_features
        self.feature_dim = dim
        self.cls = nn.Linear(dim, config.num_classes)
        self.bin = nn.Linear(dim, 2) if "bin" in config.heads else None
        self.out = nn.Linear(dim, config.num_classes) if "out" in config.heads else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        result = {"features": feats, "logits": self.cls(feats)}
        if self.bin is not None:
            result["bin"] = self.bin(feats)
        if self.out is not None:
            result["out"] = self.out(feats)
        return result

    def classifier_layer(self) -> nn.Linear:
        """The layer that maps ``features`` to ``logits`` (score methods that reshape
        features or weights use it; ``oodkit.scoring.common.Fit``)."""
        return self.cls


def saved_module(model: nn.Module) -> nn.Module:
    """The module whose state dict a detector artifact stores."""
    from oodkit.models.imported import ImportedClassifier

    return model.net if isinstance(model, ImportedClassifier) else model


def load_detector_backbone(model: Detector, path: str | Path) -> None:
    """Local pretrained backbone weights into a detector (a classifier in the file is ignored)."""
    load_backbone_weights(model.backbone, path, model.config.arch)


def save_detector(model: nn.Module, folder: Path) -> None:
    """Write ``config.json`` and ``model.safetensors``."""
    from safetensors.torch import save_file

    model.config.save(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in saved_module(model).state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))


def load_detector(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved detector (weights via safetensors) in eval mode: a ``Detector``, or an
    ``ImportedClassifier`` — both map a batch to ``{"features", "logits", ...}``."""
    from safetensors.torch import load_file

    from oodkit.models.imported import ImportedClassifier

    folder = Path(folder)
    config = DetectorConfig.load(folder)
    model = ImportedClassifier.build(config) if config.source else Detector(config)
    try:
        saved_module(model).load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise their own types
        raise OodkitError(
            f"{folder / WEIGHTS_NAME} cannot be loaded ({first_line(exc, with_type=True)}); run "
            f"oodkit verify {folder}"
        ) from None
    return model.to(device).eval()
