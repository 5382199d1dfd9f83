"""``oodkit score``: post-hoc scores of a detector on a benchmark.

Importing the package is cheap: its ``options`` module is what the command line reads.
"""
