"""``oodkit import diffusion ldm:FILE`` and DiffGuard's LDM path through class maps: a
``cin256-v2``-shaped checkpoint (tiny, 1000 ImageNet classes + null) converted from the
original layout, a 1000-class classifier, scored on ImageNet-200 (``--preset ldm``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from oodkit.cli import app
from oodkit.data.classes import imagenet1k, imagenet200_wnids
from tests.unit.test_ldm import tiny_flags

DATA = Path(__file__).parent.parent / "data"
FLAGS = {**tiny_flags(), "n_classes": 1001}  # the fixture's, with ImageNet's 1000 classes + null


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _checkpoint(path: Path) -> Path:
    """The fixture's weights in LDM's layout with a 1001-row class table, as a Lightning
    ``.ckpt`` (``{"state_dict": ...}``)."""
    tensors = load_file(str(DATA / "ldm_tiny.safetensors"))
    state = {k[len("state/") :]: v.float() for k, v in tensors.items() if k.startswith("state/")}
    g = torch.Generator().manual_seed(4)
    state["cond_stage_model.embedding.weight"] = torch.randn(1001, 16, generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": 0}, path)
    return path


def test_import_writes_a_loadable_ldm_with_imagenet_classes(tmp_path: Path) -> None:
    from oodkit.diffusion.denoisers import describe_model, load_denoiser

    ckpt = _checkpoint(tmp_path / "cin" / "model.ckpt")
    r = _cli("import", "diffusion", f"ldm:{ckpt}", "--flags", json.dumps(FLAGS),
             "--out", tmp_path / "ldm")  # fmt: skip
    assert r.exit_code == 0, r.output
    spec = describe_model(tmp_path / "ldm")
    assert (spec.layout, spec.kind, spec.image_size, spec.num_classes) == ("ldm", "class", 16, 1000)
    assert spec.class_ids == [w for w, _ in imagenet1k()]
    den = load_denoiser(tmp_path / "ldm")
    assert den.null_class == 1000
    x = torch.randn(2, 3, 8, 8)
    cond = den.condition([[None, None], [3, 999]])
    eps = den.eps(x, torch.tensor([1, 961]), cond)
    assert eps.shape == (2, 2, 3, 8, 8) and not torch.allclose(eps[0], eps[1])
    images = torch.rand(2, 3, 16, 16)
    assert den.encode(images).shape == (2, 3, 8, 8)
    assert den.decode(den.encode(images)).shape == (2, 3, 16, 16)
    # a preset is named by the file or its folder (CompVis ships cin256-v2/model.ckpt)
    r = _cli("import", "diffusion", f"ldm:{ckpt}", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "no LDM preset 'model'" in r.output, r.output
    assert not (tmp_path / "x").exists()
    r = _cli("import", "diffusion", f"ldm:{ckpt}", "--preset", "cin256-v2", "--out", tmp_path / "y")
    assert r.exit_code == 2 and "class table is [1001, 16], these flags say [1001, 512]" in r.output
    assert not (tmp_path / "y").exists()


def test_diffguard_ldm_preset_guides_through_wordnet_class_maps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, perceptual_weights: Path
) -> None:
    """A 1000-class classifier on ImageNet-200: its prediction is the argmax of the 200 mapped
    logit columns, and the LDM is asked for the 1000-class index of that WordNet id."""
    from torchvision.models import resnet18

    from oodkit.diffusion.denoisers import LatentCrossClassDenoiser
    from oodkit.stages.score.run import score
    from tests.stages.test_import_detector import _imagenet200_root, _randomise

    ckpt = _checkpoint(tmp_path / "cin" / "model.ckpt")
    assert _cli("import", "diffusion", f"ldm:{ckpt}", "--flags", json.dumps(FLAGS),
                "--out", tmp_path / "ldm").exit_code == 0  # fmt: skip
    torch.save(_randomise(resnet18().eval(), 5), tmp_path / "w.pt")
    r = _cli("import", "detector", "torchvision:resnet18", "--weights", tmp_path / "w.pt",
             "--trained-on", "imagenet", "--out", tmp_path / "det")  # fmt: skip
    assert r.exit_code == 0, r.output
    root = _imagenet200_root(tmp_path / "openood")
    asked = []
    original = LatentCrossClassDenoiser.condition

    def recording(self, values):
        asked.extend(v for row in values for v in row if v is not None)
        return original(self, values)

    monkeypatch.setattr(LatentCrossClassDenoiser, "condition", recording)
    (art,) = score(
        tmp_path / "det", "imagenet200", "diffguard", tmp_path / "dg", data_root=root,
        model=str(tmp_path / "ldm"), preset="ldm", steps=2, limit=2, diffusion_batch=2,
        perceptual_weights=str(perceptual_weights), quiet=True,
    )  # fmt: skip
    p = art.manifest.params
    assert (p["preset"], p["guidance"], p["reference"], p["geometry"]) == (
        "ldm", "cfg", "input", "model",
    )  # fmt: skip
    assert p["distance"] == "dists"
    kinds = [i["path"] for i in art.manifest.inputs if i["kind"] == "class-map"]
    assert kinds == ["wordnet-ids", "model-wordnet-ids"]
    ds = art.dataset()
    preds = list(ds["pred"])
    assert all(0 <= y < 200 for y in preds)
    index = {w: i for i, (w, _) in enumerate(imagenet1k())}
    wnids = imagenet200_wnids()
    assert sorted(set(asked)) == sorted({index[wnids[y]] for y in preds})
    assert np.isfinite(np.asarray(ds["id_score"])).all()
