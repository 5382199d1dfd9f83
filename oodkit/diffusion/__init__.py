"""Diffusion engine: denoisers, DDIM sampler and inversion, guidance math, re-synthesis,
UNet presets and class-conditional sample quality."""
