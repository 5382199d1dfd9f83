"""Regenerate oodkit/data/classes/ from the class metadata that timm and torchvision ship.

ImageNet-1k order is sorted WNID order (timm's imagenet_synsets.txt); human-readable names
are torchvision's cleaned category names in the same order. ImageNet-200 is the ImageNet-R
class subset (OpenOOD v1.5), labels 0..199 in sorted WNID order.
"""

from importlib import resources
from pathlib import Path

from torchvision.models._meta import _IMAGENET_CATEGORIES

OUT = Path(__file__).resolve().parents[1] / "oodkit" / "data" / "classes"


def main() -> None:
    info = resources.files("timm") / "data" / "_info"
    wnids = info.joinpath("imagenet_synsets.txt").read_text().split()
    r200 = sorted(info.joinpath("imagenet_r_synsets.txt").read_text().split())
    assert len(wnids) == 1000 and wnids == sorted(wnids) and len(r200) == 200
    names = list(_IMAGENET_CATEGORIES)
    assert len(names) == 1000
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [f"{w}\t{n}" for w, n in zip(wnids, names, strict=True)]
    (OUT / "imagenet1k.tsv").write_text("\n".join(lines) + "\n")
    (OUT / "imagenet200.txt").write_text("\n".join(r200) + "\n")


if __name__ == "__main__":
    main()
