"""DISTS / LPIPS from local weight files equal piq's own classes built from the same weights,
and a missing file is one clear error (no download is ever tried)."""

from __future__ import annotations

from pathlib import Path

import piq
import pytest
import torch
from torchvision.models import vgg16

from oodkit.errors import OodkitError
from oodkit.perceptual import FILES, load_metric, weights_input
from oodkit.similarity import measure

pytestmark = pytest.mark.threads(2)


def _piq_reference(name: str, root: Path, monkeypatch) -> torch.nn.Module:
    """piq's class through its own constructor, its downloads answered from ``root``."""

    def from_url(url, *args, **kwargs):
        return torch.load(root / url.rsplit("/", 1)[1], weights_only=True)

    def local_vgg16(*args, **kwargs):
        net = vgg16(weights=None)
        state = torch.load(root / FILES["dists"][0][0], weights_only=True)
        net.load_state_dict(state, strict=False)
        return net

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", from_url)
    monkeypatch.setattr(piq.perceptual, "vgg16", local_vgg16)
    return piq.DISTS(reduction="none") if name == "dists" else piq.LPIPS(reduction="none")


@pytest.fixture
def weights(perceptual_weights) -> Path:
    return perceptual_weights


@pytest.mark.parametrize("name", ["dists", "lpips"])
def test_equals_piq_with_the_same_weights(name, weights, monkeypatch):
    ours = load_metric(name, weights)
    ref = _piq_reference(name, weights, monkeypatch)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    expected = ref(x, y)
    assert torch.allclose(ours(x, y), expected, atol=1e-6)
    assert ours(x, x).abs().max() < 1e-5  # a distance: 0 for identical images
    # measure: 1 − distance (the official DiffGuard similarity), grey images as RGB
    sim = measure(name, weights)
    assert torch.allclose(sim(x, y), 1 - expected, atol=1e-6)
    grey = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    rgb = [v.expand(-1, 3, -1, -1) for v in grey]
    assert torch.allclose(sim(*grey), 1 - ref(*rgb), atol=1e-6)
    small = torch.rand(2, 1, 16, 16, generator=g)  # piq's own LPIPS needs 32 px
    assert sim(small, small).sub(1).abs().max() < 1e-5


def test_missing_weights_are_one_line(tmp_path):
    with pytest.raises(OodkitError, match=r"dists needs local weights: .*vgg16-397923af\.pth"):
        load_metric("dists", tmp_path)
    (tmp_path / FILES["lpips"][0][0]).write_bytes(b"")
    with pytest.raises(OodkitError, match=r"lpips_weights\.pt is missing"):
        weights_input("lpips", tmp_path)


def test_unreadable_weights_are_one_line(tmp_path, weights):
    (tmp_path / FILES["dists"][0][0]).write_bytes(b"not a checkpoint")
    (tmp_path / FILES["dists"][1][0]).write_bytes((weights / FILES["dists"][1][0]).read_bytes())
    with pytest.raises(OodkitError, match="cannot read weights"):
        load_metric("dists", tmp_path)


def test_fingerprint_follows_the_files(weights, tmp_path):
    first = weights_input("dists", weights)
    assert first == weights_input("dists", weights)
    copy = tmp_path / "copy"
    copy.mkdir()
    for file, _ in FILES["dists"]:
        (copy / file).write_bytes((weights / file).read_bytes())
    assert weights_input("dists", copy)["fingerprint"] == first["fingerprint"]
    state = torch.load(copy / FILES["dists"][1][0], weights_only=True)
    state["alpha"][0, 0] += 1
    torch.save(state, copy / FILES["dists"][1][0])
    assert weights_input("dists", copy)["fingerprint"] != first["fingerprint"]
