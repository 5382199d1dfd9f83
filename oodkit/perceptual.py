"""DISTS and LPIPS (piq's implementations) from weight files on disk, never downloaded.

piq builds both on torchvision's VGG16 and fetches its weights from GitHub with a pickle
load. oodkit instead reads the same files from a folder (``--perceptual-weights``, by default
torch's hub cache ``$TORCH_HOME/hub/checkpoints``, where an online piq run leaves them) with
``torch.load(weights_only=True)``, and hands them to piq's classes, whose forward passes are
used unchanged. A missing file is one clear line naming the file and where to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodkit.errors import OodkitError

if TYPE_CHECKING:
    import torch

VGG16 = ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth")
FILES = {
    "dists": (
        VGG16,
        (
            "dists_weights.pt",
            "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/dists_weights.pt",
        ),
    ),
    "lpips": (
        VGG16,
        (
            "lpips_weights.pt",
            "https://github.com/photosynthesis-team/photosynthesis.metrics/releases/download/"
            "v0.4.0/lpips_weights.pt",
        ),
    ),
}
LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")  # piq's, for both metrics
DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)  # the input, then each layer's


def weights_dir(folder: str | Path | None) -> Path:
    """The folder holding the weight files: ``folder``, or torch's hub checkpoint cache."""
    if folder is not None:
        return Path(folder)
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_files(name: str, folder: str | Path | None) -> list[Path]:
    """The files ``name`` needs, checked to exist (one line naming the first one missing)."""
    root = weights_dir(folder)
    paths = []
    for file, url in FILES[name]:
        path = root / file
        if not path.is_file():
            raise OodkitError(
                f"{name} needs local weights: {path} is missing (download {url} into "
                f"{root}, or pass --perceptual-weights DIR)"
            )
        paths.append(path)
    return paths


def _load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or non-tensor file
        raise OodkitError(f"cannot read weights {path}: {str(e).splitlines()[0]}") from None


def _vgg16_features(path: Path) -> torch.nn.Module:
    """torchvision's VGG16 convolutional trunk with the weights of ``path`` (a full VGG16
    state dict or only its ``features.*`` entries)."""
    from torchvision.models import vgg16

    state = _load(path)
    trunk = vgg16(weights=None).features
    prefix = "features."
    try:
        trunk.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    except (RuntimeError, AttributeError) as e:
        raise OodkitError(f"{path} is not a VGG16 state dict: {str(e).splitlines()[0]}") from None
    return trunk


def load_metric(name: str, folder: str | Path | None = None) -> torch.nn.Module:
    """piq's ``DISTS`` or ``LPIPS`` (reduction ``none``) with the local weights; its output is
    a distance per image (0 for identical images). The trunk stops at the last layer the
    metric reads, so images from 16 px work."""
    import piq
    import torch
    from piq.perceptual import VGG16_LAYERS, ContentLoss

    vgg_path, metric_path = weight_files(name, folder)
    layers = [VGG16_LAYERS[layer] for layer in LAYERS]
    # up to the last layer used: the final pooling changes nothing and fails below 32 px
    trunk = _vgg16_features(vgg_path)[: int(layers[-1]) + 1]
    weights = _load(metric_path)
    if name == "dists":
        try:
            alpha = torch.split(weights["alpha"], list(DISTS_CHANNELS), dim=1)
            beta = torch.split(weights["beta"], list(DISTS_CHANNELS), dim=1)
        except (KeyError, TypeError, RuntimeError):
            raise OodkitError(f"{metric_path} is not DISTS's alpha/beta weights") from None
        metric = piq.DISTS.__new__(piq.DISTS)
        ContentLoss.__init__(
            metric,
            trunk,
            layers=layers,
            weights=[*alpha, *beta],
            replace_pooling=True,
            reduction="none",
            normalize_features=False,
            allow_layers_weights_mismatch=True,
        )
    else:
        if len(weights) != len(LAYERS):
            raise OodkitError(f"{metric_path} is not LPIPS's {len(LAYERS)} layer weights")
        metric = piq.LPIPS.__new__(piq.LPIPS)
        ContentLoss.__init__(
            metric,
            trunk,
            layers=layers,
            weights=list(weights),
            reduction="none",
            normalize_features=True,
        )
    return metric.eval().requires_grad_(False)


def weights_input(name: str, folder: str | Path | None) -> dict[str, Any]:
    """The weight files' entry in a manifest's ``inputs`` (a hash of their contents)."""
    import hashlib

    from oodkit.hashing import file_digest

    paths = weight_files(name, folder)
    h = hashlib.sha256("|".join(file_digest(p) for p in paths).encode()).hexdigest()
    return {"kind": f"{name}-weights", "path": str(paths[-1].parent), "fingerprint": h}
