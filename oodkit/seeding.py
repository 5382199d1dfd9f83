"""Every random choice in oodkit derives from an explicit seed through this module.

Two derivations, one for each kind of key:

- integer tuples — ``(seed, epoch, stream)``, ``(seed, step, purpose)`` — go through NumPy's
  ``SeedSequence``, which mixes every part into well-spread state;
- string keys — a sample id — go through SHA-256 of ``seed\\0key[\\0stream]``, so a sample's
  randomness depends on its id alone, never on batching, order or the number of processes.

Generators for NumPy and torch are built from those seeds. Stream numbers keep the purposes of
one stage apart (two purposes never share a generator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def seed_int(*parts: int) -> int:
    """A 32-bit seed from integer parts (``SeedSequence`` mixing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def numpy_rng(*parts: int) -> np.random.Generator:
    """A NumPy generator seeded by the integer parts themselves (``SeedSequence(parts)``)."""
    return np.random.default_rng([int(p) for p in parts])


def key_seed(seed: int, key: str, *stream: str) -> int:
    """A 64-bit seed from ``(seed, key[, stream])``: the first 8 bytes of their SHA-256."""
    text = "\0".join([str(seed), key, *stream])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def key_rng(seed: int, key: str, stream: str) -> np.random.Generator:
    """A NumPy generator for one sample's choices of one purpose (``stream``)."""
    return np.random.default_rng(key_seed(seed, key, stream))


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


def sample_generators(
    seed: int, keys: Sequence[str], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One torch generator per sample key (63-bit seeds): order- and batch-independent."""
    return [torch_generator(key_seed(seed, key) >> 1, device) for key in keys]


def per_sample_randn(
    shape: Sequence[int], generators: Sequence[torch.Generator], device, dtype
) -> torch.Tensor:
    """One float32 standard-normal draw of ``shape`` per sample generator, stacked and cast."""
    import torch

    return torch.stack(
        [
            torch.randn(tuple(shape), generator=g, device=g.device, dtype=torch.float32)
            for g in generators
        ]
    ).to(device, dtype)


def seed_default_generator(*parts: int) -> None:
    """Seed torch's global CPU generator (what CPU transforms draw from) from integer parts."""
    import torch

    torch.default_generator.manual_seed(seed_int(*parts))
