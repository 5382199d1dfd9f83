"""``oodkit generate``: outliers from ID images with a diffusion model.

Importing the package is cheap: its ``options`` module is what the command line reads.
"""
