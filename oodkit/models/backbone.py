"""timm backbones: creation (with a CIFAR-style stem for small inputs) and local weights I/O.

Weights are only ever read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oodkit.errors import OodkitError, first_line


def create_backbone(
    arch: str,
    in_chans: int,
    arch_kwargs: dict[str, Any] | None = None,
    *,
    small_input_stem: bool = False,
    pretrained: bool = False,
) -> nn.Module:
    """A timm model without classifier (``num_classes=0``): features of ``num_features``."""
    import timm

    try:
        backbone = timm.create_model(
            arch, pretrained=pretrained, num_classes=0, in_chans=in_chans, **(arch_kwargs or {})
        )
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise OodkitError(f"unknown timm architecture {arch!r}") from None
        raise
    except TypeError as exc:
        if arch_kwargs and "argument" in str(exc):
            raise OodkitError(
                f"--arch-kwargs {sorted(arch_kwargs)} do not fit {arch}: {first_line(exc)}"
            ) from None
        raise
    except Exception as exc:
        if pretrained:
            raise OodkitError(
                f"cannot fetch pretrained weights for {arch} ({type(exc).__name__}); "
                "offline? pass --weights PATH instead"
            ) from None
        raise
    if small_input_stem:
        adapt_small_input_stem(backbone, in_chans)
    return backbone


def adapt_small_input_stem(backbone: nn.Module, in_chans: int) -> None:
    """3×3 stride-1 first convolution and no max-pool, as CIFAR ResNets do."""
    conv = getattr(backbone, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(backbone, "maxpool"):
        return
    backbone.conv1 = nn.Conv2d(in_chans, conv.out_channels, 3, 1, 1, bias=False)
    backbone.maxpool = nn.Identity()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a checkpoint read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise OodkitError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError
            raise OodkitError(
                f"cannot read weights {path}: not a valid safetensors file ({first_line(exc)})"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle errors come in many types
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        why = (
            f"it is a pickle that needs {found.group(1)}, and oodkit loads only tensors"
            if found
            else first_line(exc)
        )
        raise OodkitError(
            f"cannot read weights {path} safely: {why} (weights_only=True; "
            "save the state dict as safetensors)"
        ) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise OodkitError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_backbone_weights(backbone: nn.Module, path: str | Path, arch: str) -> None:
    """Load local pretrained weights into ``backbone``; tensors it lacks (a classifier) are
    ignored, and every tensor it has must be in the file with the same shape."""
    state = read_state_dict(path)
    own = backbone.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise OodkitError(f"weights {path} do not fit {arch}: shape of {wrong[0]} differs")
    missing = [k for k in own if k not in state]
    if missing:
        raise OodkitError(f"weights {path} lack {len(missing)} backbone tensors, e.g. {missing[0]}")
    backbone.load_state_dict({k: state[k] for k in own})
