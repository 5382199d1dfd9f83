"""Detector = timm backbone + linear heads (``cls``; ``bin`` and ``out`` for the SD loss).

Saved as ``model.safetensors`` + ``config.json`` inside a detector artifact. Weights are only
ever read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oodkit.errors import OodkitError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SMALL_INPUT = 64  # below this size ResNet-style stems downsample too early (CIFAR convention)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    class_names: list[str] | None = None

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
        mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if in_chans == 3 else ([0.5], [0.5])
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
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> DetectorConfig:
        return cls(**json.loads((folder / CONFIG_NAME).read_text()))


def _adapt_small_input_stem(backbone: nn.Module, in_chans: int) -> None:
    """3×3 stride-1 first convolution and no max-pool, as CIFAR ResNets do."""
    conv = getattr(backbone, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(backbone, "maxpool"):
        return
    backbone.conv1 = nn.Conv2d(in_chans, conv.out_channels, 3, 1, 1, bias=False)
    backbone.maxpool = nn.Identity()


class Detector(nn.Module):
    """Backbone features → ``cls`` logits (+ ``bin`` ID/outlier and ``out`` heads if asked)."""

    def __init__(self, config: DetectorConfig, pretrained: bool = False) -> None:
        super().__init__()
        import timm

        self.config = config
        try:
            self.backbone = timm.create_model(
                config.arch,
                pretrained=pretrained,
                num_classes=0,
                in_chans=config.in_chans,
                **config.arch_kwargs,
            )
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise OodkitError(f"unknown timm architecture {config.arch!r}") from None
            raise
        except Exception as exc:
            if pretrained:
                raise OodkitError(
                    f"cannot fetch pretrained weights for {config.arch} ({type(exc).__name__}); "
                    "offline? pass --weights PATH instead"
                ) from None
            raise
        if config.small_input_stem:
            _adapt_small_input_stem(self.backbone, config.in_chans)
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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a checkpoint read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise OodkitError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle errors come in many types
        raise OodkitError(f"cannot read weights {path} safely: {exc}") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise OodkitError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_backbone_weights(model: Detector, path: str | Path) -> None:
    """Load local pretrained backbone weights; a classifier in the file is ignored."""
    state = read_state_dict(path)
    own = model.backbone.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise OodkitError(
            f"weights {path} do not fit {model.config.arch}: shape of {wrong[0]} differs"
        )
    missing = [k for k in own if k not in state]
    if missing:
        raise OodkitError(f"weights {path} lack {len(missing)} backbone tensors, e.g. {missing[0]}")
    model.backbone.load_state_dict({k: state[k] for k in own})


def save_detector(model: Detector, folder: Path) -> None:
    """Write ``config.json`` and ``model.safetensors``."""
    from safetensors.torch import save_file

    model.config.save(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))


def load_detector(folder: str | Path, device: str | torch.device = "cpu") -> Detector:
    """Rebuild a saved detector (weights via safetensors) in eval mode."""
    folder = Path(folder)
    config = DetectorConfig.load(folder)
    model = Detector(config)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    return model.to(device).eval()
