"""oodkit: diffusion-based out-of-distribution detection (SONA, SD outliers, DiffGuard).

Importing ``oodkit`` is cheap: heavy dependencies load inside the functions that use them.
"""

from oodkit.errors import OodkitError

__version__ = "0.1.0"
__all__ = ["OodkitError", "__version__"]
