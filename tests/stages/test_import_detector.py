"""``oodkit import detector``: classifiers from torchvision, timm, OpenOOD and pytorch-ood as
detectors, checked against the libraries' own modules and pytorch-ood's detectors.

Every network has random weights saved locally in its library's layout; nothing is
downloaded (the named-weights paths are exercised with files planted in a temporary torch
hub cache).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from oodkit.artifacts import load_artifact
from oodkit.cli import app
from oodkit.models.detector import load_detector
from oodkit.models.openood import ResNet18_32x32

runner = CliRunner()
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
OOD_LISTS = ("cifar100", "tin", "mnist", "svhn", "texture", "places365")


def _cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _randomise(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights and BatchNorm statistics (so eval-mode BN is not the identity)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = v
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.1
    net.load_state_dict(state)
    return state


def _torchvision_cifar_resnet18(state: dict[str, torch.Tensor], num_classes: int):
    """The reference: torchvision's ResNet-18 with a 3×3 stride-1 stem and no max-pool,
    holding an OpenOOD checkpoint (``shortcut`` renamed to torchvision's ``downsample``)."""
    from torchvision.models import resnet18

    net = resnet18(num_classes=num_classes)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    net.load_state_dict({k.replace("shortcut", "downsample"): v for k, v in state.items()})
    return net.eval()


def test_openood_resnet18_32x32_has_openood_s_layout() -> None:
    from torchvision.models import resnet18

    ours = ResNet18_32x32(10).state_dict()
    tv = {
        k.replace("downsample", "shortcut"): v
        for k, v in resnet18(num_classes=10).state_dict().items()
    }
    assert list(ours) == list(tv)
    assert ours["conv1.weight"].shape == (64, 3, 3, 3)
    assert all(ours[k].shape == tv[k].shape for k in ours if k != "conv1.weight")
    net = ResNet18_32x32(10).eval()
    state = _randomise(net, 0)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _torchvision_cifar_resnet18(state, 10)(x))


def _cifar_root(root: Path) -> Path:
    """An OpenOOD v1.5 CIFAR-10 data root of random 32-px images (30 train, 10 test, 4 per
    OOD set)."""
    rng = np.random.default_rng(0)
    lists = root / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)

    def write(name: str, n: int, label) -> None:
        lines = []
        for i in range(n):
            rel = f"{name}/{i}.png"
            path = root / "images_classic" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
            lines.append(f"{rel} {label(i)}")
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n")

    write("train_cifar10", 30, lambda i: i % 10)
    write("test_cifar10", 10, lambda i: i % 10)
    for name in OOD_LISTS:
        write(f"test_{name}", 4, lambda i: -1)
    return root


def _by_sample(art) -> dict[str, float]:
    table = art.dataset()
    return dict(zip(table["sample_id"], table["id_score"], strict=True))


@pytest.mark.slow
def test_scores_of_an_imported_openood_checkpoint_equal_pytorch_ood(tmp_path: Path) -> None:
    """Acceptance: energy and kNN of an OpenOOD-layout ResNet-18 (a DataParallel checkpoint)
    imported through the CLI equal pytorch-ood's detectors on torchvision's module."""
    from pytorch_ood.detector import KNN, EnergyBased
    from torchvision import transforms as T

    state = _randomise(ResNet18_32x32(10), 1)
    ckpt = tmp_path / "best.ckpt"
    torch.save({f"module.{k}": v for k, v in state.items()}, ckpt)
    root = _cifar_root(tmp_path / "openood")
    r = _cli("import", "detector", "openood:resnet18_32x32", "--weights", ckpt,
             "--trained-on", "cifar10", "--out", tmp_path / "det", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = _cli("score", "--detector", tmp_path / "det", "-b", "cifar10", "--data-root", root,
             "--method", "energy,knn", "--k", "5", "--out", tmp_path / "s", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    energy = _by_sample(load_artifact(tmp_path / "s" / "energy"))
    knn = _by_sample(load_artifact(tmp_path / "s" / "knn"))

    ref = _torchvision_cifar_resnet18(state, 10)
    features = torch.nn.Sequential(*list(ref.children())[:-1], torch.nn.Flatten())
    prep = T.Compose(
        [T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    )

    def batch(name: str) -> tuple[list[str], torch.Tensor]:
        lines = (root / "benchmark_imglist" / "cifar10" / f"{name}.txt").read_text().split()
        rels = lines[::2]
        images = [prep(Image.open(root / "images_classic" / r).convert("RGB")) for r in rels]
        return rels, torch.stack(images)

    with torch.no_grad():
        _, train = batch("train_cifar10")
        detector = KNN(features, k=5).fit_features(features(train), torch.zeros(len(train)))
        for name in ("test_cifar10", *(f"test_{n}" for n in OOD_LISTS)):
            ids, x = batch(name)
            np.testing.assert_allclose(
                [energy[i] for i in ids], -EnergyBased(ref).predict(x).numpy(), atol=1e-4
            )
            np.testing.assert_allclose(
                [knn[i] for i in ids], -(detector.predict(x).numpy() ** 2), atol=1e-5
            )
    det = load_artifact(tmp_path / "det", kind="detector")
    assert det.manifest.params["source"] == "openood:resnet18_32x32"
    assert det.manifest.inputs[0]["fingerprint"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert (
        load_artifact(tmp_path / "s" / "energy")
        .manifest.params["label"]
        .startswith("openood:resnet18_32x32+")
    )


def _plant(monkeypatch, tmp_path: Path, weights, state: dict[str, torch.Tensor]) -> Path:
    """``state`` saved in a temporary torch hub cache under a name that carries its hash,
    and ``weights`` pointed at it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()
    path = Path(torch.hub.get_dir()) / "checkpoints" / f"resnet18-{sha[:8]}.pth"
    path.parent.mkdir(parents=True)
    raw.rename(path)
    monkeypatch.setattr(weights.value, "url", f"https://download.pytorch.org/models/{path.name}")
    return path


def test_torchvision_named_weights_come_from_the_cache_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.models import ResNet18_Weights, resnet18

    from oodkit.data.classes import imagenet1k

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    r = _cli("import", "detector", "torchvision:resnet18:IMAGENET1K_V1", "--out", tmp_path / "a")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "resnet18-f37072fd.pth" in r.output and "not downloaded" in r.output
    assert not (tmp_path / "a").exists()

    ref = resnet18().eval()
    state = _randomise(ref, 2)
    path = _plant(monkeypatch, tmp_path, ResNet18_Weights.IMAGENET1K_V1, state)
    r = _cli("import", "detector", "torchvision:resnet18:IMAGENET1K_V1", "--out", tmp_path / "d")
    assert r.exit_code == 0, r.output
    model = load_detector(tmp_path / "d")
    c = model.config
    assert (c.resize, c.image_size, c.interpolation, c.resize_square) == (
        256,
        224,
        "bilinear",
        False,
    )
    assert c.class_ids == [w for w, _ in imagenet1k()] and c.mean == [0.485, 0.456, 0.406]
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out["logits"], ref(x))
        ref.fc = torch.nn.Identity()
        torch.testing.assert_close(out["features"], ref(x))

    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # not the file the hash names
    r = _cli("import", "detector", "torchvision:resnet18:IMAGENET1K_V1", "--out", tmp_path / "e")
    assert r.exit_code == 2 and "does not have the SHA-256" in r.output


def test_timm_model_from_a_weights_file(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("resnet18", num_classes=7).eval()
    save_file(_randomise(ref, 3), str(tmp_path / "w.safetensors"))
    r = _cli("import", "detector", "timm:resnet18", "--weights", tmp_path / "w.safetensors",
             "--out", tmp_path / "d")  # fmt: skip
    assert r.exit_code == 0, r.output
    model = load_detector(tmp_path / "d")
    # timm's eval preprocessing of resnet18: 224 crop of floor(224 / 0.95) = 235, bicubic
    assert (model.config.resize, model.config.image_size) == (235, 224)
    assert model.config.interpolation == "bicubic" and model.config.num_classes == 7
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out["logits"], ref(x))
        pre = ref.forward_head(ref.forward_features(x), pre_logits=True)
        torch.testing.assert_close(out["features"], pre)
    r = _cli("import", "detector", "timm:resnet18", "--out", tmp_path / "hub")  # offline
    assert r.exit_code == 2 and "not in the Hugging Face cache" in r.output
    assert not (tmp_path / "hub").exists()


def test_pytorch_ood_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry gives architecture, 200 classes and the square 256 resize + 224 crop;
    weights from a file in torchvision's layout (pytorch-ood's ResNet18 is torchvision's)."""
    from torchvision.models import resnet18

    from oodkit.data.classes import imagenet200_wnids

    key = "resnet-18/imagenet200/crossentropy/s1"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    r = _cli("import", "detector", f"pytorch-ood:{key}", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "huggingface.co/kkirchheim" in r.output
    r = _cli(
        "import",
        "detector",
        "pytorch-ood:resnet-18/imagenet200/crossentropy",
        "--out",
        tmp_path / "a",
    )
    assert r.exit_code == 2 and "ambiguous" in r.output and "Available" not in r.output

    ref = resnet18(num_classes=200).eval()
    torch.save(_randomise(ref, 4), tmp_path / "w.pt")
    r = _cli("import", "detector", f"pytorch-ood:{key}", "--weights", tmp_path / "w.pt",
             "--out", tmp_path / "d")  # fmt: skip
    assert r.exit_code == 0, r.output
    model = load_detector(tmp_path / "d")
    c = model.config
    assert (c.resize, c.resize_square, c.image_size) == (256, True, 224)
    assert c.class_ids == imagenet200_wnids()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["logits"], ref(x))


def test_eval_transform_follows_the_imported_preprocessing(tmp_path: Path) -> None:
    """Resize (shorter side or square, with its filter) → crop → normalise, as torchvision's
    v1 transforms do on a PIL image."""
    from torchvision import transforms as T

    from oodkit.data.images import eval_transform
    from oodkit.models.detector import DetectorConfig

    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    for square, interp in ((False, "bilinear"), (True, "bicubic")):
        c = DetectorConfig(image_size=224, resize=256, resize_square=square, interpolation=interp)
        mode = T.InterpolationMode(interp)
        ref = T.Compose([
            T.Resize((256, 256) if square else 256, interpolation=mode),
            T.CenterCrop(224), T.ToTensor(), T.Normalize(c.mean, c.std),
        ])  # fmt: skip
        got = eval_transform(c)(im)
        assert got.shape == (3, 224, 224)
        torch.testing.assert_close(got, ref(im), atol=1e-5, rtol=0)  # both resize with PIL


def _imagenet200_root(root: Path) -> Path:
    """An OpenOOD v1.5 ImageNet-200 data root of random 48×40 images (3 per list)."""
    rng = np.random.default_rng(1)
    lists = root / "benchmark_imglist" / "imagenet200"
    lists.mkdir(parents=True)
    sets = {"train_imagenet200": "images_largescale", "test_imagenet200": "images_largescale"}
    for name in ("ssb_hard", "ninco", "inaturalist", "openimage_o"):
        sets[f"test_{name}"] = "images_largescale"
    sets["test_textures"] = "images_classic"
    for name, folder in sets.items():
        lines = []
        for i in range(3):
            rel = f"{name}/{i}.png"
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                root / folder / rel
            )
            lines.append(f"{rel} {(i * 71) % 200 if 'imagenet200' in name else -1}")
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_a_1000_class_classifier_scores_imagenet200_on_its_200_classes(tmp_path: Path) -> None:
    """Logits are the 200 ImageNet-200 columns of the 1000 (by WordNet id), as OpenOOD."""
    from torchvision.models import resnet18

    from oodkit.data.classes import imagenet1k, imagenet200_wnids
    from oodkit.data.images import eval_transform
    from oodkit.stages.score.run import score

    ref = resnet18().eval()
    torch.save(_randomise(ref, 5), tmp_path / "w.pt")
    root = _imagenet200_root(tmp_path / "openood")
    r = _cli("import", "detector", "torchvision:resnet18", "--weights", tmp_path / "w.pt",
             "--trained-on", "imagenet", "--out", tmp_path / "d")  # fmt: skip
    assert r.exit_code == 0, r.output
    arts = score(tmp_path / "d", "imagenet200", "energy,msp", tmp_path / "s", data_root=root)
    energy, msp = (a.dataset() for a in arts)
    columns = [[w for w, _ in imagenet1k()].index(w) for w in imagenet200_wnids()]
    model = load_detector(tmp_path / "d")
    prep = eval_transform(model.config)
    images = [
        Image.open(root / "images_largescale" / "test_imagenet200" / f"{i}.png") for i in range(3)
    ]
    with torch.no_grad():
        logits = ref(torch.stack([prep(im.convert("RGB")) for im in images]))[:, columns]
    rows = [i for i, d in enumerate(energy["dataset"]) if d == "imagenet200"]
    np.testing.assert_allclose(
        [energy["id_score"][i] for i in rows], torch.logsumexp(logits, 1), atol=1e-4
    )
    np.testing.assert_allclose(
        [msp["id_score"][i] for i in rows], torch.softmax(logits, 1).amax(1), atol=1e-5
    )
    assert [energy["pred"][i] for i in rows] == logits.argmax(1).tolist()
    assert any(i["kind"] == "class-map" for i in arts[0].manifest.inputs)

    torch.save(_randomise(resnet18(num_classes=200), 6), tmp_path / "w200.pt")
    r = _cli("import", "detector", "torchvision:resnet18", "--weights", tmp_path / "w200.pt",
             "--resize", "256", "--crop", "224", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5",
             "--out", tmp_path / "d200")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = _cli("score", "--detector", tmp_path / "d200", "-b", "cifar10", "--data-root", tmp_path,
             "--method", "energy", "--out", tmp_path / "s2")  # fmt: skip
    assert r.exit_code == 2 and "no WordNet ids map" in r.output, r.output


def test_configs_checkpoints_and_outputs_are_checked(tmp_path: Path) -> None:
    """A trained detector's config keeps the old fields only; an unknown field is one line;
    a checkpoint without BatchNorm counters loads; a network whose output is not its
    classifier layer's is refused."""
    import json

    from oodkit.errors import OodkitError
    from oodkit.models.detector import DetectorConfig
    from oodkit.models.imported import ImportedClassifier, import_classifier, parse_source

    DetectorConfig().save(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "source" not in saved and "class_ids" not in saved
    (tmp_path / "config.json").write_text(json.dumps({**saved, "lineage": 1}))
    with pytest.raises(OodkitError, match="fields this oodkit does not know"):
        DetectorConfig.load(tmp_path)

    state = _randomise(ResNet18_32x32(10), 7)
    legacy = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "old.pt")
    imp = import_classifier(parse_source("openood:resnet18_32x32"), tmp_path / "old.pt")
    assert torch.equal(imp.net.layer1[0].bn1.running_var, state["layer1.0.bn1.running_var"])

    class Doubled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x.flatten(1)[:, :4]) * 2  # not the head's own output

    config = DetectorConfig(arch="x", num_classes=3, image_size=2)
    config.source = {"library": "timm", "name": "x", "head": "fc"}
    with pytest.raises(OodkitError, match="not its classifier layer"):
        ImportedClassifier(config, Doubled())(torch.zeros(1, 1, 2, 2))


BUILDER = "oodkit.testing.tiny_models:tiny_classifier"


def test_a_module_built_in_python_is_a_detector(tmp_path: Path) -> None:
    """``import_module`` keeps the module's weights and its builder; the loaded detector gives
    the module's logits and its penultimate features; the CLI takes the same builder with a
    weights file; unbuildable or unimportable builders are one line, nothing written."""
    from oodkit.errors import OodkitError
    from oodkit.stages.import_detector.run import import_module
    from oodkit.testing.tiny_models import tiny_classifier

    torch.manual_seed(0)
    net = tiny_classifier(num_classes=3)
    net.load_state_dict(_randomise(net, 7))
    net.eval()
    prep = {"resize": 20, "crop": 16, "mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25"}
    art = import_module(
        net, BUILDER, tmp_path / "d", builder_kwargs={"num_classes": 3},
        class_names=["cat", "dog", "eel"], **prep,
    )  # fmt: skip
    assert art.manifest.params["source"] == f"python:{BUILDER}"
    assert art.manifest.params["builder_kwargs"] == {"num_classes": 3}
    det = load_detector(tmp_path / "d")
    assert det.config.class_names == ["cat", "dog", "eel"]
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        out = det(x)
        ref = net(x)
        feats = net.avgpool(net.features(x)).flatten(1)
    torch.testing.assert_close(out["logits"], ref)
    torch.testing.assert_close(out["features"], feats)
    assert isinstance(det.config.source, dict) and det.config.source["kwargs"] == {"num_classes": 3}

    torch.save(net.state_dict(), tmp_path / "w.pt")
    r = _cli("import", "detector", f"python:{BUILDER}", "--weights", tmp_path / "w.pt",
             "--builder-kwargs", '{"num_classes": 3}', "--resize", "20", "--crop", "16",
             "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--out", tmp_path / "c")  # fmt: skip
    assert r.exit_code == 0, r.output
    with torch.no_grad():
        torch.testing.assert_close(load_detector(tmp_path / "c")(x)["logits"], ref)

    with pytest.raises(OodkitError, match="does not fit python:"):
        import_module(net, BUILDER, tmp_path / "e", builder_kwargs={"num_classes": 5}, **prep)
    r = _cli("import", "detector", "python:no_such_pkg.nets:build", "--weights", tmp_path / "w.pt",
             "--crop", "16", "--resize", "20", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5",
             "--out", tmp_path / "f")  # fmt: skip
    assert r.exit_code == 2 and "builder no_such_pkg.nets:build cannot be imported" in r.output
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()
    r = _cli("import", "detector", "python::build", "--out", tmp_path / "g")
    assert r.exit_code == 2 and "expected python:MODULE:CALLABLE" in r.output, r.output
