"""``oodkit train diffusion``: class-conditional CFG pixel diffusion models.

Importing the package is cheap: its ``options`` module is what the command line reads.
"""
