"""Test and benchmark fixtures that ship with oodkit: tiny models built from configs, offline."""

from oodkit.testing.tiny_models import build_tiny_ddpm, build_tiny_dit
from oodkit.testing.tiny_sd import build_tiny_stable_diffusion, write_char_text_encoder

__all__ = [
    "build_tiny_ddpm",
    "build_tiny_dit",
    "build_tiny_stable_diffusion",
    "write_char_text_encoder",
]
