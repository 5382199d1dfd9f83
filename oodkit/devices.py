"""Device choice shared by every stage."""

from __future__ import annotations

from oodkit.errors import OodkitError


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; a CUDA request without CUDA is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OodkitError(f"--device {device}: no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise OodkitError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device
