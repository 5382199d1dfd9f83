"""Options of ``oodkit pseudo-label`` (SCAN recipe: docs/methods.md §6)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodkit import options as O
from oodkit.errors import OodkitError
from oodkit.methods import PSEUDO_LABEL


@dataclass(kw_only=True)
class PseudoLabelOptions:
    """Everything ``pseudo_label`` takes besides the ID set and the output folder."""

    method: str = O.option("scan", f"{PSEUDO_LABEL.help()}.")
    num_clusters: int = O.option(
        10, "Number of clusters C.", flags=("--num-clusters", "-c"), required=True, minimum=1
    )
    features: str = O.option("simclr", "simclr, or timm:NAME with --weights.")
    weights: str | None = O.option(None, "Pretrained backbone for timm:NAME.", role="input")
    arch: str = O.option("resnet18", "timm backbone for SimCLR.")
    arch_kwargs: dict[str, Any] = O.arch_kwargs_option()
    pretext_epochs: int = O.option(200, "SimCLR epochs.", minimum=1)
    pretext_batch_size: int = O.option(256, "SimCLR global batch size.", minimum=1)
    pretext_lr: float = O.option(0.2, "SimCLR learning rate.", above=0)
    temperature: float = O.option(0.1, "NT-Xent temperature.", above=0)
    num_neighbors: int = O.option(
        20, "Mined neighbours (SCAN).", flags=("--num-neighbors", "-k"), minimum=1
    )
    num_heads: int = O.option(10, "Clustering heads.", minimum=1)
    scan_epochs: int = O.option(50, "SCAN epochs.", minimum=1)
    scan_batch_size: int = O.option(128, "SCAN global batch size.", minimum=1)
    scan_lr: float = O.option(1e-4, "SCAN learning rate.", above=0)
    entropy_weight: float = O.option(5.0, "SCAN entropy weight.", minimum=0)
    selflabel_epochs: int = O.option(25, "0 skips self-labelling.", minimum=0)
    selflabel_lr: float = O.option(1e-4, "Self-labelling learning rate.", above=0)
    threshold: float = O.option(0.99, "Self-labelling confidence.", minimum=0, below=1)
    balance: bool = O.option(
        True, "Class-balanced self-labelling.", flags=("--balance/--no-balance",)
    )
    flip: str = O.option("auto", "auto (RGB only), yes or no.", choices=("auto", "yes", "no"))
    image_size: int | None = O.option(
        None, "Input size (default: the data's).", minimum=1, maximum=O.MAX_IMAGE_SIDE
    )
    seed: int = O.seed_option()
    data_root: str | None = O.data_root_option()
    device: str = O.device_option()
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def check(self, n: int) -> None:
        """Checks against the number of ID samples ``n``, before any work."""
        PSEUDO_LABEL.get(self.method)
        if self.num_clusters < 2:
            raise OodkitError(f"--num-clusters must be at least 2, got {self.num_clusters}")
        if self.num_clusters > n:
            raise OodkitError(
                f"--num-clusters {self.num_clusters} is larger than the {n} ID samples"
            )
        if self.method == "scan" and not 1 <= self.num_neighbors < n:
            raise OodkitError(
                f"--num-neighbors {self.num_neighbors} must lie in 1..{n - 1} "
                "(below the dataset size)"
            )
        if self.features != "simclr":
            if not self.features.startswith("timm:") or len(self.features) <= 5:
                raise OodkitError(f"--features must be simclr or timm:NAME, got {self.features!r}")
            if self.weights is None:
                raise OodkitError(
                    "--features timm:NAME needs --weights PATH (a pretrained backbone)"
                )
            if not Path(self.weights).is_file():
                raise OodkitError(f"weights file {self.weights} does not exist")
