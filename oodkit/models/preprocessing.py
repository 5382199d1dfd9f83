"""How an imported classifier's inputs are prepared (torch-free: the command line reads it).

Test-time preprocessing is resize (the shorter side, or both sides with ``square``) → centre
crop → normalise; ``OPENOOD`` holds OpenOOD v1.5's for each training set it ships
(``evaluation_api/preprocessor.py``: ``Resize(pre_size)`` bilinear, ``CenterCrop(img_size)``).
"""

from __future__ import annotations

from dataclasses import dataclass

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass
class Preprocessing:
    """Resize → centre crop → normalise, as the classifier was trained and evaluated."""

    resize: int
    crop: int
    mean: list[float]
    std: list[float]
    interpolation: str = "bilinear"
    square: bool = False


OPENOOD: dict[str, dict] = {
    "cifar10": {
        "resize": 32,
        "crop": 32,
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2470, 0.2435, 0.2616],
    },
    "cifar100": {
        "resize": 32,
        "crop": 32,
        "mean": [0.5071, 0.4867, 0.4408],
        "std": [0.2675, 0.2565, 0.2761],
    },
    "imagenet": {
        "resize": 256,
        "crop": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
}
OPENOOD["imagenet200"] = OPENOOD["imagenet"]  # the same ImageNet setting

TRAINED_ON = tuple(OPENOOD)


def preprocessing_of(dataset: str) -> Preprocessing:
    """OpenOOD v1.5's test preprocessing for a training set."""
    return Preprocessing(**OPENOOD[dataset])
