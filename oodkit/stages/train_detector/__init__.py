"""``oodkit train detector``: detectors trained with the registered losses.

Importing the package is cheap: its ``options`` module is what the command line reads.
"""
