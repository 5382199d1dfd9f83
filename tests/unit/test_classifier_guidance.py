"""DiffGuard's classifier guidance: cut-outs and the gradient against hand computations."""

from __future__ import annotations

import torch

from oodkit.diffusion.classifier_guidance import (
    blend,
    cutout_boxes,
    cutouts,
    guidance_gradient,
)


def test_cutout_boxes_are_deterministic_per_sample_and_step_and_inside_the_image() -> None:
    a = cutout_boxes(7, ["x", "y"], step=3, size=256, out_size=224, count=8)
    b = cutout_boxes(7, ["y"], step=3, size=256, out_size=224, count=8)
    assert a[1] == b[0]  # a sample's boxes do not depend on its batch
    assert a[0] != cutout_boxes(7, ["x"], step=4, size=256, out_size=224, count=8)[0]
    assert a[0] != cutout_boxes(8, ["x"], step=3, size=256, out_size=224, count=8)[0]
    sides = [s for mine in a for _, _, s in mine]
    assert all(224 <= s <= 256 for s in sides) and len(set(sides)) > 1
    assert all(t + s <= 256 and left + s <= 256 for mine in a for t, left, s in mine)
    assert cutout_boxes(0, ["z"], 0, size=16, out_size=16, count=2) == [[(0, 0, 16), (0, 0, 16)]]


def test_cutouts_crop_and_resize_nearest() -> None:
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    out = cutouts(x, [[(1, 2, 2)], [(0, 0, 4)]], out_size=4)
    assert torch.equal(out[0, 0], x[0, 0, 1:3, 2:4].repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert torch.equal(out[1], x[1])


def test_cutouts_gather_equals_torch_nearest_interpolation_box_by_box() -> None:
    """The one-gather crops equal F.interpolate(mode="nearest") of each box (official resize)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    x = torch.randn(3, 3, 37, 37, requires_grad=True)
    boxes = cutout_boxes(1, ["a", "b", "c"], step=5, size=37, out_size=23, count=4)
    out = cutouts(x, boxes, out_size=23)
    for n, (i, (t, left, s)) in enumerate((i, b) for i, mine in enumerate(boxes) for b in mine):
        ref = F.interpolate(x[i : i + 1, :, t : t + s, left : left + s], size=23, mode="nearest")
        assert torch.equal(out[n : n + 1], ref)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_of_a_linear_classifier_equals_the_closed_form() -> None:
    """logits = W·vec(x): ∇ₓ log softmax[y] = W[y] − Σ_k p_k W[k], summed over cut-outs."""
    torch.manual_seed(0)
    w = torch.randn(3, 2 * 4 * 4)
    classify = lambda v: v.flatten(1) @ w.T  # noqa: E731
    x = torch.randn(2, 2, 4, 4)
    labels = torch.tensor([2, 0])
    whole = [[(0, 0, 4), (0, 0, 4)], [(0, 0, 4), (0, 0, 4)]]  # two identical full-image cut-outs
    grad = guidance_gradient(classify, x, labels, whole, out_size=4, scale=3.0)
    p = torch.softmax(x.flatten(1) @ w.T, dim=1)
    hand = (w[labels] - p @ w).view_as(x) * 2 * 3.0
    assert torch.allclose(grad, hand, atol=1e-5)
    assert not x.requires_grad and grad.dtype == torch.float32


def test_blend_weights_the_clean_estimate_by_the_noise_level() -> None:
    x0, xt = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    assert torch.allclose(blend(x0, xt, 0.25), torch.full((1, 1, 2, 2), 0.25))
    assert torch.equal(blend(x0, xt, 1.0), x0)  # the paper's Eq. 7: x̂₀ alone
