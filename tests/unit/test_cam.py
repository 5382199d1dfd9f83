"""Grad-CAM against a hand computation on a tiny CNN."""

from __future__ import annotations

import torch

from oodkit.demo import DEMO_ARCH_KWARGS
from oodkit.models.cam import cam_mask, grad_cam
from oodkit.models.detector import Detector, DetectorConfig


def test_grad_cam_equals_the_closed_form_of_a_pooled_linear_head() -> None:
    """With global average pooling and a linear head, ∂logit_y/∂A_c = W[y, c] / (h·w) at
    every position, so the map is ReLU(Σ_c W[y, c]·A_c) up to a factor min–max removes."""
    torch.manual_seed(0)
    config = DetectorConfig.for_data(
        "resnet18", 4, 3, 32, heads=["cls"], arch_kwargs=DEMO_ARCH_KWARGS
    )
    det = Detector(config).eval()
    x = torch.randn(3, 3, 32, 32)
    labels = torch.tensor([0, 3, 1])
    cam = grad_cam(det, x, labels)
    with torch.no_grad():
        feats = det.backbone.forward_features(x)
    hand = torch.relu(torch.einsum("bc,bchw->bhw", det.cls.weight[labels], feats)).detach()
    flat = hand.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    span = high - low
    assert (span == 0).sum() == 1  # this draw has one all-zero map (ReLU): it stays 0, not NaN
    expected = torch.where(span > 0, (hand - low) / span.clamp(min=1e-12), torch.zeros_like(hand))
    assert cam.shape == feats.shape[:1] + feats.shape[2:]
    assert torch.allclose(cam, expected, atol=1e-5)
    assert not any(p.grad is not None for p in det.parameters())  # no gradients left behind


def test_cam_mask_resizes_nearest_and_cuts() -> None:
    cam = torch.tensor([[[0.0, 0.5], [0.31, 1.0]]])
    mask = cam_mask(cam, (4, 4), 0.3)
    expected = torch.tensor(
        [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(mask[0, 0], expected)
    assert cam_mask(torch.zeros(1, 2, 2), (2, 2), 0.3).sum() == 0


def test_cam_mask_in_the_official_order_cuts_at_the_image_size() -> None:
    """Official: bilinear to the image size (cv2.resize, half-pixel centres; PIL's bilinear
    upscaling is the same filter), min–max, cut, then nearest down to the latent grid."""
    import numpy as np
    from PIL import Image

    cam = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    cam[1] = 0.0  # a constant map masks nothing
    mask = cam_mask(cam, (8, 8), 0.3, image_size=(32, 32))
    up = np.asarray(Image.fromarray(cam[0].numpy(), mode="F").resize((32, 32), Image.BILINEAR))
    up = (up - up.min()) / (up.max() - up.min())
    expected = torch.from_numpy(up > 0.3)[::4, ::4]  # nearest 32 → 8 (F.interpolate): pixel 4i
    assert mask.shape == (2, 1, 8, 8) and mask[1].sum() == 0
    assert torch.equal(mask[0, 0], expected)
    grid = cam_mask(cam, (8, 8), 0.3)  # cut after a nearest resize: another mask
    assert not torch.equal(grid[0, 0], mask[0, 0])


def test_grad_cam_of_an_imported_classifier_is_taken_at_its_global_pool() -> None:
    """A torchvision ResNet: the map is on layer4's output (the official ``layer4[-1]``), in
    the same closed form (global average pool + linear head)."""
    from torchvision.models import resnet18

    from oodkit.models.imported import ImportedClassifier

    torch.manual_seed(1)
    net = resnet18(num_classes=5).eval()
    config = DetectorConfig(arch="torchvision:resnet18", num_classes=5, image_size=64)
    config.source = {"library": "torchvision", "name": "resnet18", "head": "fc"}
    model = ImportedClassifier(config, net).eval().requires_grad_(False)
    x = torch.randn(3, 3, 128, 128)
    labels = torch.tensor([4, 1, 0])
    cam = grad_cam(model, x, labels)
    with torch.no_grad():
        a = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        a = net.layer4(net.layer3(net.layer2(net.layer1(a))))
    hand = torch.relu(torch.einsum("bc,bchw->bhw", net.fc.weight[labels], a))
    low = hand.flatten(1).min(1).values.view(-1, 1, 1)
    high = hand.flatten(1).max(1).values.view(-1, 1, 1)
    span = high - low
    expected = torch.where(span > 0, (hand - low) / span.clamp(min=1e-12), torch.zeros_like(hand))
    assert cam.shape == (3, 4, 4) and (span > 0).sum() >= 2
    assert torch.allclose(cam, expected, atol=1e-5)
