"""What the two stages of ``oodkit score`` share — post-hoc methods
(``oodkit.stages.score``) and DiffGuard (``oodkit.stages.diffguard``): the command's options,
cached feature extraction, the detector / benchmark checks, and the DiffGuard + baseline
combination rule. Importing the package is cheap: ``options`` is what the command line reads.
"""
