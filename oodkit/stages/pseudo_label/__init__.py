"""``oodkit pseudo-label``: clusters of an unlabelled ID set (SCAN, k-means).

Importing the package is cheap: its ``options`` module is what the command line reads.
"""
