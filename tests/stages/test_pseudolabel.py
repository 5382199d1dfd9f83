"""Pseudo-labelling: losses and metrics against hand computation, SCAN on digits, resume, bad input."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from oodkit.cli import app
from oodkit.demo import DEMO_ARCH_KWARGS
from oodkit.metrics import clustering_metrics, hungarian_accuracy
from oodkit.stages.pseudo_label import features as FT
from oodkit.stages.pseudo_label import run as R
from oodkit.stages.pseudo_label import scan as S
from oodkit.stages.pseudo_label.losses import nt_xent, scan_loss, self_label_loss
from oodkit.stages.pseudo_label.run import PseudoLabelOptions, pseudo_label

runner = CliRunner()
SMALL = DEMO_ARCH_KWARGS


def test_scan_loss_by_hand() -> None:
    a = torch.log(torch.tensor([[0.7, 0.3], [0.2, 0.8]]))
    n = torch.log(torch.tensor([[0.6, 0.4], [0.1, 0.9]]))
    inner = [0.7 * 0.6 + 0.3 * 0.4, 0.2 * 0.1 + 0.8 * 0.9]
    consistency = -(math.log(inner[0]) + math.log(inner[1])) / 2
    mean_p = [0.45, 0.55]
    ent = -sum(p * math.log(p) for p in mean_p)
    total, cons, h = scan_loss(a, n, entropy_weight=5.0)
    assert cons.item() == pytest.approx(consistency, abs=1e-6)
    assert h.item() == pytest.approx(ent, abs=1e-6)
    assert total.item() == pytest.approx(consistency - 5 * ent, abs=1e-5)


def test_self_label_loss_by_hand() -> None:
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 10.0], [10.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    strong = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    # rows 0-2 are confident (p > 0.99); row 3 is not and is ignored
    ce = [
        F.cross_entropy(strong[i : i + 1], torch.tensor([t])).item()
        for i, t in [(0, 0), (1, 2), (2, 0)]
    ]
    assert self_label_loss(weak, strong, 0.99, balance=False).item() == pytest.approx(
        sum(ce) / 3, abs=1e-6
    )
    # balanced: class 0 has frequency 2/3 (weight 1.5), class 2 has 1/3 (weight 3)
    w = [1.5, 3.0, 1.5]
    want = (w[0] * ce[0] + w[1] * ce[1] + w[2] * ce[2]) / sum(w)
    assert self_label_loss(weak, strong, 0.99, balance=True).item() == pytest.approx(want, abs=1e-6)
    assert self_label_loss(weak * 0, strong, 0.99).item() == 0.0


def test_nt_xent_matches_transcription() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(8):
        j = (i + 4) % 8
        others = [k for k in range(8) if k != i]
        denom = sum(math.exp(float(z[i] @ z[k]) / 0.1) for k in others)
        total += -math.log(math.exp(float(z[i] @ z[j]) / 0.1) / denom)
    assert nt_xent(z1, z2, 0.1).item() == pytest.approx(total / 8, rel=1e-5)


@pytest.mark.parametrize("k", [2, 4, 6])
def test_hungarian_accuracy_equals_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    true = rng.integers(0, k, 200)
    pred = np.where(rng.random(200) < 0.6, (true + 1) % k, rng.integers(0, k, 200))
    best = max(np.mean(np.array(perm)[pred] == true) for perm in itertools.permutations(range(k)))
    assert hungarian_accuracy(pred, true) == pytest.approx(best)
    m = clustering_metrics(pred, true)
    assert m["accuracy"] == pytest.approx(best) and 0 <= m["nmi"] <= 1 and -1 <= m["ari"] <= 1


def test_neighbour_mining_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(60, 16, generator=g)
    idx = S.mine_neighbors(f, 5)
    assert idx[:, 0].tolist() == list(range(60))  # the anchor itself is first
    n = F.normalize(f, dim=1)
    ref = (n @ n.T).topk(5, dim=1).indices
    assert torch.equal(idx, ref)


def test_stage_resume_gives_the_same_labels(tmp_path: Path, monkeypatch) -> None:
    o = PseudoLabelOptions(
        method="scan",
        num_clusters=5,
        arch_kwargs=SMALL,
        pretext_epochs=2,
        scan_epochs=2,
        selflabel_epochs=1,
        num_heads=2,
        pretext_batch_size=128,
        scan_batch_size=128,
    )
    whole = pseudo_label("digits", tmp_path / "whole", o, quiet=True)
    real_scan = S.train_scan

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "train_scan", crash)
    with pytest.raises(KeyboardInterrupt):
        pseudo_label("digits", tmp_path / "r", o, quiet=True)
    assert (tmp_path / "r.partial" / "pretext.safetensors").exists()
    monkeypatch.setattr(S, "train_scan", real_scan)
    monkeypatch.setattr(R, "train_simclr", crash)  # the finished pretext stage must be reused
    resumed = pseudo_label("digits", tmp_path / "r", o, quiet=True)
    assert resumed.manifest.fingerprint == whole.manifest.fingerprint


def test_kmeans_method_and_cli_report(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "pseudo-label",
            "--method",
            "kmeans",
            "--id",
            "digits",
            "-c",
            "5",
            "--out",
            str(tmp_path / "km"),
            "--pretext-epochs",
            "1",
            "--arch-kwargs",
            '{"channels": [16, 32, 64, 128], "stem_width": 16}',
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    from oodkit.artifacts import load_artifact

    art = load_artifact(tmp_path / "km", kind="pseudo-labels")
    assert art.manifest.summary["accuracy"] == art.manifest.summary["kmeans"]["accuracy"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "1"], "--num-clusters must be at least 2"),
        (["-c", "600"], "larger than the 501 ID samples"),
        (["-c", "5", "-k", "501"], "--num-neighbors 501 must lie in 1..500"),
        (
            ["-c", "5", "--features", "timm:resnet18", "--weights", "/nonexistent/w.safetensors"],
            "does not exist",
        ),
        (["-c", "5", "--features", "timm:resnet18"], "needs --weights"),
        (["-c", "5", "--method", "spectral"], "--method must be one of"),
    ],
)
def test_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["pseudo-label", "--id", "digits", "--out", str(tmp_path / "x"), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_frozen_pretrained_backbone_keeps_its_weights(tmp_path: Path) -> None:
    """timm:NAME + --weights: only the heads train; BatchNorm statistics stay as loaded."""
    import timm
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", num_classes=0, in_chans=1, **SMALL)
    with torch.no_grad():  # non-trivial running statistics, so a BN update would show
        for m in backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(weights))
    o = PseudoLabelOptions(
        num_clusters=5,
        features="timm:resnet18",
        arch_kwargs=SMALL,
        scan_epochs=2,
        scan_lr=1e-3,
        selflabel_epochs=1,
        num_heads=2,
    )
    art = pseudo_label("digits", tmp_path / "pl", o, weights=str(weights), quiet=True)
    loaded, saved = load_file(str(weights)), load_file(str(art.path / "clustering.safetensors"))
    assert all(torch.equal(saved[f"backbone.{k}"], v) for k, v in loaded.items())
    assert not torch.equal(saved["heads.0.weight"], saved["heads.1.weight"])
    assert not (art.path / "pretext.safetensors").exists()
    assert len(set(art.dataset()["cluster"])) >= 2


TINY_NO_BN = '{"channels": [8, 16, 16, 16], "stem_width": 8, "norm_layer": "groupnorm1"}'


def test_two_processes_match_one(tmp_path: Path, torchrun) -> None:
    """2 CPU processes = one process (a BatchNorm-free backbone,
    since CPU BatchNorm cannot be synchronised): same losses per epoch, same clusters."""
    import json

    from oodkit.artifacts import load_artifact

    args = [
        "pseudo-label",
        "--id",
        "digits",
        "-c",
        "5",
        "--arch-kwargs",
        TINY_NO_BN,
        "--pretext-epochs",
        "2",
        "--pretext-batch-size",
        "128",
        "--scan-epochs",
        "2",
        "--scan-lr",
        "1e-3",
        "--num-heads",
        "2",
        "--selflabel-epochs",
        "1",
        "--threshold",
        "0.25",
        "--device",
        "cpu",
        "--quiet",
    ]
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (load_artifact(tmp_path / d, kind="pseudo-labels") for d in ("one", "two"))
    log1, log2 = (json.loads((a.path / "log.json").read_text()) for a in (one, two))
    assert log1["selflabel_loss"][0] > 0  # some samples passed the confidence threshold
    for key in ("pretext_loss", "scan_head_losses", "selflabel_loss"):
        np.testing.assert_allclose(log2[key], log1[key], rtol=1e-3, err_msg=key)
    assert one.dataset()["cluster"] == two.dataset()["cluster"]
    np.testing.assert_allclose(one.dataset()["confidence"], two.dataset()["confidence"], atol=1e-3)


def test_batch_that_does_not_split_over_processes_is_refused_up_front(
    tmp_path: Path, torchrun
) -> None:
    args = ["pseudo-label", "--id", "digits", "-c", "5", "--scan-batch-size", "127"]
    proc = torchrun([*args, "--device", "cpu", "--out", str(tmp_path / "x")])
    assert proc.returncode != 0
    assert "error: --scan-batch-size 127 does not split over 2 processes" in proc.stderr
    assert 'File "' + str(Path(FT.__file__)) not in proc.stderr  # no traceback of ours
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
