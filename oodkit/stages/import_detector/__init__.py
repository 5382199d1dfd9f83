"""``oodkit import detector``: a classifier trained elsewhere as a detector artifact.

Importing the package is cheap: its ``options`` module is what the command line reads.
"""
