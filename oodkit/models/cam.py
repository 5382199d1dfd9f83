"""Grad-CAM of a detector's classifier for given labels (DiffGuard's CFG mask).

The map is taken on the backbone's last feature map A (timm ``forward_features``): channel
weights are the spatial means of ∂logit_y/∂A, the map is ReLU(Σ_c w_c·A_c), scaled to [0, 1]
per image (min–max; a constant map becomes 0). ``cam_mask`` cuts it at a threshold
(DiffGuard's official code: 0.3) on the model's grid, either as the official code does —
bilinear to the image size, min–max, cut, nearest down to the grid (a latent grid is smaller
than the image) — or nearest to the grid first and cut there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oodkit.models.detector import Detector
from oodkit.models.imported import ImportedClassifier


def grad_cam(detector: Detector, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, h, w] maps in [0, 1] for model inputs ``x`` (normalised) and class ``labels`` [B].

    An imported classifier gives its map at the input of its global pool (``layer4``'s output
    in a ResNet, the official code's ``layer4[-1]``)."""
    with torch.enable_grad():
        if isinstance(detector, ImportedClassifier):
            feats, logits = detector.feature_map(x)
        else:
            backbone = detector.backbone
            feats = backbone.forward_features(x).detach().requires_grad_(True)
            logits = detector.cls(backbone.forward_head(feats, pre_logits=True))
        chosen = logits.gather(1, labels.view(-1, 1).to(logits.device)).sum()
        (grads,) = torch.autograd.grad(chosen, feats)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * feats).sum(dim=1)).detach()
    low = cam.flatten(1).min(dim=1).values.view(-1, 1, 1)
    span = cam.flatten(1).max(dim=1).values.view(-1, 1, 1) - low
    return torch.where(span > 0, (cam - low) / span.clamp(min=1e-12), torch.zeros_like(cam))


def cam_mask(
    cam: torch.Tensor,
    size: tuple[int, int],
    cut: float,
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Boolean [B, 1, H, W] mask on the grid ``size``. With ``image_size`` (official order) the
    map is resized bilinearly to the image, min–max scaled, cut, then resized (nearest) to
    ``size``; without, resized (nearest) to ``size`` and cut."""
    maps = cam.unsqueeze(1).float()
    if image_size is None:
        return F.interpolate(maps, size=size, mode="nearest") > cut
    up = F.interpolate(maps, size=image_size, mode="bilinear", align_corners=False)
    low = up.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
    span = up.flatten(1).max(dim=1).values.view(-1, 1, 1, 1) - low
    up = torch.where(span > 0, (up - low) / span.clamp(min=1e-12), torch.zeros_like(up))
    return F.interpolate((up > cut).float(), size=size, mode="nearest") > 0.5
