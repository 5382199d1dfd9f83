"""``oodkit import diffusion``: a published diffusion checkpoint as a diffusers model artifact.

Importing the package is cheap: its ``options`` module is what the command line reads.
"""
