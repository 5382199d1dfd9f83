"""Class-name lists shipped as package data (CIFAR-10, ImageNet-1k, ImageNet-200)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from oodkit.errors import OodkitError


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


def map_by_id(own: Sequence[str], wanted: Sequence[str], owner: str, data: str) -> list[int]:
    """The index in ``own`` of each id of ``wanted`` (WordNet ids: a 1000-class ImageNet model
    on ImageNet-200); one line naming a missing class. ``owner`` / ``data`` name both sides
    in that line ("the classifier", "the data's")."""
    where = {w: i for i, w in enumerate(own)}
    missing = [w for w in wanted if w not in where]
    if missing:
        raise OodkitError(
            f"{owner} lacks {len(missing)} of {data} {len(wanted)} classes "
            f"(e.g. {missing[0]}): no class map"
        )
    return [where[w] for w in wanted]
