"""Diffusion engine: denoisers, DDIM sampler and inversion, guidance math, model training."""
