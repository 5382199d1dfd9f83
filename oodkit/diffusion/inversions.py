"""DDIM inversions kept on disk, so runs that differ only after inversion (guidance, scale,
distance, reference, oracle) invert each input once.

An entry is keyed by the inversion recipe (model fingerprint, precision, steps, stop rule,
ε timestep, x̂₀ clipping: the caller's ``recipe`` string) and by a hash of the input image
as the model sees it, and holds the latent where inversion stopped and its number of steps.
Entries are written atomically, so processes sharing a cache at worst invert a sample twice.
A hit is the latent the same batch would recompute; one computed inside a different batch
can differ from a recomputation by float rounding of batched kernels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from oodkit.artifacts import atomic_file
from oodkit.hashing import cache_dir

INVERSIONS = "inversions"  # the cache's sub-folder


def image_key(image: torch.Tensor) -> str:
    """Hash of one image's values and shape (float32)."""
    x = image.detach().float().cpu().contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:32]


class InversionCache:
    """The inversions of one recipe under ``root`` (default ``$OODKIT_CACHE/inversions``)."""

    def __init__(self, recipe: str, root: str | Path | None = None) -> None:
        digest = hashlib.sha256(recipe.encode()).hexdigest()[:24]
        self.dir = Path(root) if root is not None else cache_dir() / INVERSIONS
        self.dir = self.dir / digest
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def _load(self, key: str) -> tuple[torch.Tensor, int] | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            t = load_file(str(path))
            return t["latent"], int(t["stop"])
        except Exception:  # a damaged entry is recomputed and rewritten
            return None

    def _save(self, key: str, latent: torch.Tensor, stop: int) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"latent": latent.detach().cpu().contiguous(), "stop": torch.tensor(stop)}
        atomic_file(path, lambda tmp: save_file(tensors, str(tmp)))

    def invert(
        self,
        images: torch.Tensor,
        run: Callable[[torch.Tensor], tuple[torch.Tensor, list[int]]],
        device: torch.device | str,
    ) -> tuple[torch.Tensor, list[int]]:
        """``run(images)`` (latents on ``device``, stops), computed only for the images not
        cached yet."""
        keys = [image_key(im) for im in images]
        found = [self._load(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            latents, stops = run(images[missing])
            for j, i in enumerate(missing):
                self._save(keys[i], latents[j], stops[j])
                found[i] = (latents[j], stops[j])
        return (
            torch.stack([f[0].to(device) for f in found]),
            [f[1] for f in found],
        )
