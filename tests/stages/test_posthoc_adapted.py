"""The post-hoc methods adapted from pytorch-ood equal pytorch-ood's own detectors run end to
end (``fit(loader)`` + ``predict(images)`` on the network) on a random-weight detector.

oodkit fits each method once on cached features / logits and the classifier layer; the
references below go through the network with pytorch-ood's own APIs. One test per family
of needs: logits, features (+ the classifier layer), the network (input gradients).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_ood import detector as pood
from torch.utils.data import DataLoader, TensorDataset

from oodkit.artifacts import write_artifact
from oodkit.data.images import eval_transform
from oodkit.data.sources import get_benchmark
from oodkit.models.detector import Detector, DetectorConfig, load_detector, save_detector
from oodkit.stages.score.run import score

SETS = {"id_test": "digits-0-4", "digits-5-9": "digits-5-9", "photo-patches": "photo-patches"}


@pytest.fixture(scope="module")
def random_detector(tmp_path_factory) -> Path:
    """A random-weight ResNet on digits whose classifier layer holds the ID-train class means
    of its features (so every class is predicted correctly somewhere: SHE, OpenMax)."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = DetectorConfig.for_data(
        "resnet18", 5, 1, 16, heads=["cls"], arch_kwargs={"channels": [8, 16, 32, 64]}
    )
    model = Detector(config).eval()
    x, y = _images("id_train", config)
    with torch.no_grad():
        f = model.backbone(x)
        means = torch.stack([f[y == c].mean(0) for c in range(5)])
        model.cls.weight.copy_(means / means.norm(dim=1, keepdim=True) * 10)
        model.cls.bias.copy_(torch.randn(5) * 0.1)
    out = tmp_path_factory.mktemp("random") / "det"
    write_artifact(
        out, "detector", {"loss": "random"}, write_files=lambda d: save_detector(model, d)
    )
    return out


def _images(key: str, config) -> tuple[torch.Tensor, torch.Tensor]:
    ds = get_benchmark("digits").load(key)
    transform = eval_transform(config)
    return torch.stack([transform(im) for im in ds["image"]]), torch.tensor(ds["label"])


def _scores(art) -> dict[str, np.ndarray]:
    from oodkit.artifacts import column
    from oodkit.schemas import table_of

    t = table_of(art)
    sets, values = np.asarray(column(t, "dataset")), np.asarray(column(t, "id_score"))
    return {name: values[sets == name] for name in SETS.values()}


def _check(ours: dict[str, np.ndarray], reference, rtol: float = 1e-4, atol: float = 1e-5):
    """oodkit's id_score is minus pytorch-ood's outlier score on every set; the scores vary
    (a flipped sign could not pass) and rank ID above OOD as pytorch-ood's do below it."""
    for key, name in SETS.items():
        ref = reference(key).detach().double().numpy()
        assert np.ptp(ref) > 1e-4, name
        np.testing.assert_allclose(ours[name], -ref, rtol=rtol, atol=atol, err_msg=name)


def _run(det: Path, methods: str, tmp_path: Path, **kw) -> dict[str, dict[str, np.ndarray]]:
    arts = score(det, "digits", methods, tmp_path / "s", cache=False, **kw)
    return {a.manifest.params["method"]: _scores(a) for a in arts}


def test_logit_methods_equal_pytorch_ood(random_detector: Path, tmp_path: Path) -> None:
    got = _run(random_detector, "entropy,gen,klm,openmax", tmp_path)
    model = load_detector(random_detector)
    logits = lambda x: model(x)["logits"]  # noqa: E731
    images = {k: _images(k, model.config)[0] for k in SETS}
    x_val, y_val = _images("id_val", model.config)
    x_tr, y_tr = _images("id_train", model.config)
    with torch.no_grad():
        klm = pood.KLMatching(logits).fit(DataLoader(TensorDataset(x_val, y_val), batch_size=64))
        z_tr = logits(x_tr)
        right = z_tr.argmax(1) == y_tr  # OpenOOD fits OpenMax on correct predictions only
        openmax = pood.OpenMax(logits, tailsize=20, alpha=3, euclid_weight=1.0)
        openmax.fit_logits(z_tr[right], y_tr[right])
        refs = {
            "entropy": pood.Entropy(logits),
            "gen": pood.GEN(logits, gamma=0.1, M=100),
            "klm": klm,
            "openmax": openmax,
        }
        for name, d in refs.items():
            _check(got[name], lambda k, d=d: d.predict(images[k]))


def test_feature_methods_equal_pytorch_ood(random_detector: Path, tmp_path: Path) -> None:
    methods = "mahalanobis,rmd,vim,dice,she,nnguide,react,ash,gradnorm"
    got = _run(random_detector, methods, tmp_path)
    model = load_detector(random_detector)
    encoder = model.backbone
    fc = model.cls
    images = {k: _images(k, model.config)[0] for k in SETS}
    x_train, y_train = _images("id_train", model.config)
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=64)
    # NNGuide's bank: OpenOOD's α = 0.01 of ID train, at least k = 100 rows, evenly spaced
    n = len(x_train)
    rows = [i * n // 100 for i in range(100)]
    bank = DataLoader(TensorDataset(x_train[rows], y_train[rows]), batch_size=64)
    val = DataLoader(TensorDataset(*_images("id_val", model.config)), batch_size=64)
    maps = lambda x: encoder(x)[:, :, None, None]  # noqa: E731 - pooled features as 1×1 maps
    head = lambda m: fc(m.flatten(1))  # noqa: E731

    class Logits(torch.nn.Module):  # GradNorm differentiates the network's own parameters
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x)["logits"]

    with torch.no_grad():
        refs = {
            "mahalanobis": pood.Mahalanobis(encoder).fit(train),
            "rmd": pood.RMD(encoder).fit(train),
            "vim": pood.ViM(encoder, 32, fc.weight, fc.bias).fit(train),  # 64 features: d 32
            "dice": pood.DICE(encoder, fc.weight, fc.bias, p=0.9).fit(train),
            "she": pood.SHE(encoder, fc).fit(train),
            "nnguide": pood.NNGuide(encoder, fc, k=100).fit(bank),
            "react": pood.ReAct(maps, head, percentile=0.9).fit(val),
            "ash": pood.ASH(maps, head, "ash-b", percentile=0.9),
        }
    refs["gradnorm"] = pood.GradNorm(Logits(), param_filter=lambda n: n == "net.cls.weight")
    for name, d in refs.items():
        _check(got[name], lambda k, d=d: d.predict(images[k]), rtol=2e-4, atol=2e-5)


def test_nnguide_with_the_whole_id_train_as_its_bank(random_detector: Path, tmp_path) -> None:
    """``--nnguide-alpha 1``: the bank is every ID-train row (pytorch-ood fitted on all), and
    the scores differ from the default bank's (the option reaches the fit)."""
    got = _run(random_detector, "nnguide", tmp_path / "all", nnguide_alpha=1.0, k=10)
    small = _run(random_detector, "nnguide", tmp_path / "small", nnguide_alpha=0.05, k=10)
    model = load_detector(random_detector)
    train = DataLoader(TensorDataset(*_images("id_train", model.config)), batch_size=64)
    with torch.no_grad():
        d = pood.NNGuide(model.backbone, model.cls, k=10).fit(train)
    _check(got["nnguide"], lambda k: d.predict(_images(k, model.config)[0]), rtol=2e-4, atol=2e-5)
    near = "digits-5-9"
    assert np.abs(got["nnguide"][near] - small["nnguide"][near]).max() > 1e-3


def test_network_method_odin_equals_pytorch_ood(random_detector: Path, tmp_path: Path) -> None:
    got = _run(random_detector, "odin", tmp_path, temperature=100.0, odin_eps=0.004)
    model = load_detector(random_detector)
    logits = lambda x: model(x)["logits"]  # noqa: E731
    d = pood.ODIN(logits, eps=0.004, temperature=100.0, norm_std=model.config.std)
    images = {k: _images(k, model.config)[0] for k in SETS}
    _check(got["odin"], lambda k: d.predict(images[k]))
    plain = _run(random_detector, "odin", tmp_path / "plain", temperature=100.0, odin_eps=0.0)
    before, after = plain["odin"]["digits-0-4"], got["odin"]["digits-0-4"]
    assert np.abs(after - before).max() > 0.05 * np.ptp(before)  # the perturbation applies
