"""Device choice shared by every stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oodkit.errors import OodkitError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "fp32", "fp16", "bf16")


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


def resolve_dtype(name: str, device: str) -> tuple[torch.dtype, str]:
    """A model precision by name: ``auto`` is fp16 on CUDA (ψ = ε(c) − ε(∅) keeps 3 more
    mantissa bits than in bf16, as the official SONA code runs) and fp32 on the CPU."""
    import torch

    if name not in DTYPES:
        raise OodkitError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "auto":
        name = "fp16" if device.startswith("cuda") else "fp32"
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name], name
