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


def rank_cpus() -> int:
    """CPUs this process may use: its affinity set shared among the ranks on its node
    (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate)."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpus // max(1, local))


def _count(flag: str, value: int | str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise OodkitError(f"{flag} must be auto or a count, got {value!r}") from None
    if n < 0:
        raise OodkitError(f"{flag} must not be negative, got {n}")
    return n


def resolve_workers(value: int | str | None, cuda: bool) -> int:
    """``--num-workers``: a count, or ``auto``: the rank's CPUs less one for the main
    process (at most 8) on CUDA; none on the CPU, where the model already uses every core
    and a worker only competes with it."""
    if value is None or value == "auto":
        return max(0, min(8, rank_cpus() - 1)) if cuda else 0
    return _count("--num-workers", value)


def host_workers(value: int | str | None) -> int:
    """``--host-workers``: threads that convert, encode and write outputs beside the
    accelerator (``auto``: the rank's CPUs, at most 8; at least 1)."""
    if value is None or value == "auto":
        return max(1, min(8, rank_cpus()))
    n = _count("--host-workers", value)
    if n < 1:
        raise OodkitError("--host-workers must be positive")
    return n
