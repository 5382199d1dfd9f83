"""Class-name lists shipped as package data (CIFAR-10, ImageNet-1k, ImageNet-200)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


def _read(name: str) -> list[str]:
    text = resources.files("oodkit.data").joinpath("classes", name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def cifar10_classes() -> list[str]:
    """CIFAR-10 class names in label order."""
    return _read("cifar10.txt")


@lru_cache(maxsize=1)
def imagenet1k() -> tuple[tuple[str, str], ...]:
    """(WNID, readable name) for the 1000 ImageNet-1k classes in label (sorted WNID) order."""
    return tuple(tuple(line.split("\t", 1)) for line in _read("imagenet1k.tsv"))  # type: ignore[misc]


def imagenet200_wnids() -> list[str]:
    """The 200 ImageNet-R classes of OpenOOD's ImageNet-200, labels 0..199 in sorted order."""
    return _read("imagenet200.txt")


def imagenet200_classes() -> list[str]:
    """Readable names of ImageNet-200 in label order."""
    names = dict(imagenet1k())
    return [names[w] for w in imagenet200_wnids()]


def imagenet800_classes() -> list[str]:
    """Readable names of the ImageNet-1k classes outside ImageNet-200 (SONA's OOD prompts)."""
    inside = set(imagenet200_wnids())
    return [name for wnid, name in imagenet1k() if wnid not in inside]


def prompt(name: str) -> str:
    """The prompt of a class name: "a photo of a {name}" ("an" before a vowel)."""
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"a photo of {article} {name}"
