"""Generation end to end with a tiny offline Stable Diffusion and a tiny class-conditional UNet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from oodkit.artifacts import ShardedWriter, load_artifact
from oodkit.cli import app
from oodkit.diffusion import denoisers
from oodkit.stages.generate.run import GenerateOptions, generate

runner = CliRunner()


pytestmark = pytest.mark.threads(1)  # a tiny SD runs ~40× faster on one thread than on two


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / "data" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                root / "data" / c / f"{i}.png"
            )
    spec = {
        "id_train": "data",
        "id_test": "data",
        "ood": [{"name": "o", "group": "far", "data": "data/cat"}],
        "class_names": ["cat", "dog"],
        "image_size": 16,
    }
    (root / "bench.json").write_text(json.dumps(spec))
    (root / "ood.txt").write_text("car\ntree\nhouse\n")
    return root


def _sona(bench: Path, tiny_sd: Path, out: Path, save_masks: int = 0, **kw):
    opts = GenerateOptions(**{"method": "sona", "steps": 10, "batch_size": 4, **kw})
    return generate(
        str(bench / "bench.json"),
        str(tiny_sd),
        out,
        opts,
        ood_classes=str(bench / "ood.txt"),
        quiet=True,
        device="cpu",
        save_masks=save_masks,
    )


def _count_unet_calls(monkeypatch) -> list[tuple[int, list[int]]]:
    calls: list[tuple[int, list[int]]] = []
    original = denoisers.load_denoiser

    def wrapped(*args, **kwargs):
        d = original(*args, **kwargs)
        d.unet.register_forward_pre_hook(
            lambda m, a, kw: calls.append((a[0].shape[0], a[1].tolist())), with_kwargs=True
        )
        return d

    monkeypatch.setattr(denoisers, "load_denoiser", wrapped)
    return calls


def test_sona_makes_one_forward_of_3b_rows_per_ddim_step(
    bench, tiny_sd, tmp_path, monkeypatch
) -> None:
    calls = _count_unet_calls(monkeypatch)
    art = _sona(bench, tiny_sd, tmp_path / "o", t_start=10, batch_size=10, save_masks=2)
    assert len(art.dataset()) == 10
    assert len(calls) == 10  # one UNet call per step, every sample starting at step 10
    assert all(rows == 30 for rows, _ in calls)  # 3 condition rows (∅, ID, OOD) × B = 10
    # DDIM's 10-step grid with steps_offset 1, although the folder ships PNDM
    assert [t[0] for _, t in calls] == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert (art.path / "preview.png").exists() and (art.path / "masks.png").exists()
    assert art.manifest.params["scheduler"] == "DDIMScheduler"


def test_each_sample_starts_at_its_own_step(bench, tiny_sd, tmp_path, monkeypatch) -> None:
    calls = _count_unet_calls(monkeypatch)
    art = _sona(bench, tiny_sd, tmp_path / "o")
    starts = art.dataset()["t_start"]
    assert len(set(starts)) > 3 and all(1 <= s <= 10 for s in starts)
    # batches are grouped by start step: each batch runs exactly its start's steps
    per_start = {s: starts.count(s) for s in set(starts)}
    expected = sum(s * -(-n // 4) for s, n in per_start.items())
    assert len(calls) == expected
    summary = art.manifest.summary
    assert summary["count"] == 10 and set(summary["by_start_step"]) <= {
        "1-2",
        "3-4",
        "5-6",
        "7-8",
        "9-10",
    }
    conditions = set(art.dataset()["condition"])
    assert conditions <= {"a photo of a car", "a photo of a tree", "a photo of a house"}


def test_same_seed_same_images_other_seed_other_images(bench, tiny_sd, tmp_path) -> None:
    a = _sona(bench, tiny_sd, tmp_path / "a", seed=1)
    b = _sona(bench, tiny_sd, tmp_path / "b", seed=1)
    c = _sona(bench, tiny_sd, tmp_path / "c", seed=2)
    assert a.manifest.fingerprint == b.manifest.fingerprint != c.manifest.fingerprint


def test_kill_and_resume_gives_the_identical_artifact(
    bench, tiny_sd, tmp_path, monkeypatch
) -> None:
    whole = _sona(bench, tiny_sd, tmp_path / "whole", batch_size=2)
    original = ShardedWriter.write_shard
    count = {"n": 0}

    def dying(self, keys, rows):
        if count["n"] == 2:
            raise KeyboardInterrupt
        count["n"] += 1
        return original(self, keys, rows)

    monkeypatch.setattr(ShardedWriter, "write_shard", dying)
    opts = GenerateOptions(method="sona", steps=10, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        generate(
            str(bench / "bench.json"),
            str(tiny_sd),
            tmp_path / "resumed",
            opts,
            ood_classes=str(bench / "ood.txt"),
            quiet=True,
            device="cpu",
            shard_size=2,
        )
    monkeypatch.setattr(ShardedWriter, "write_shard", original)
    assert not (tmp_path / "resumed").exists()
    resumed = generate(
        str(bench / "bench.json"),
        str(tiny_sd),
        tmp_path / "resumed",
        opts,
        ood_classes=str(bench / "ood.txt"),
        quiet=True,
        device="cpu",
        shard_size=2,
    )
    assert resumed.manifest.fingerprint == whole.manifest.fingerprint


def test_accelerate_two_processes_give_the_identical_artifact(
    bench, tiny_sd, tmp_path, torchrun
) -> None:
    args = [
        "generate",
        "--method",
        "sona",
        "--id",
        str(bench / "bench.json"),
        "--model",
        str(tiny_sd),
        "--ood-classes",
        str(bench / "ood.txt"),
        "--steps",
        "10",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ]
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        load_artifact(tmp_path / "two").manifest.fingerprint
        == load_artifact(tmp_path / "one").manifest.fingerprint
    )


@pytest.mark.parametrize("method", ["sd", "global", "reconstruct"])
def test_class_conditional_methods(class_model, tmp_path, method, monkeypatch) -> None:
    calls = _count_unet_calls(monkeypatch)
    # sd: default 100-step grid, --t-start 100 of 1000 training timesteps = the last 10 steps
    opts = (
        GenerateOptions(method="sd", limit=6, batch_size=6)
        if method == "sd"
        else GenerateOptions(method=method, limit=6, batch_size=6, steps=10, t_start=3)
    )
    art = generate("digits", str(class_model), tmp_path / method, opts, quiet=True, device="cpu")
    ds = art.dataset()
    assert len(ds) == 6 and ds[0]["image"].mode == "L" and ds[0]["image"].size == (16, 16)
    assert all(rows == 12 for rows, _ in calls)  # two condition rows (∅ and c) × 6
    assert len(calls) == (10 if method == "sd" else 3)
    src = [int(x) for x in ds["source_label"]]
    cond = [int(x) for x in ds["condition"]]
    if method == "reconstruct":
        assert cond == src
    else:
        assert all(c != s and 0 <= c < 5 for c, s in zip(cond, src, strict=True))


def _fail(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_bad_input(bench, tiny_sd, class_model, tmp_path) -> None:
    base = [
        "generate",
        "--id",
        str(bench / "bench.json"),
        "--ood-classes",
        str(bench / "ood.txt"),
        "--quiet",
    ]
    assert "unknown model folder" in _fail(
        [*base, "--method", "sona", "--model", str(tmp_path), "--out", str(tmp_path / "a")]
    )
    assert "takes prompts, not class ids" in _fail(
        [*base, "--method", "sd", "--model", str(tiny_sd), "--out", str(tmp_path / "b")]
    )
    for bad in ("0", "51"):
        assert "outside 1..50" in _fail(
            [
                *base,
                "--method",
                "sona",
                "--model",
                str(tiny_sd),
                "--t-start",
                bad,
                "--out",
                str(tmp_path / "c"),
            ]
        )
    assert "multiple of 10" in _fail(
        [
            "generate",
            "--method",
            "sd",
            "--id",
            "digits",
            "--model",
            str(class_model),
            "--t-start",
            "0",
            "--out",
            str(tmp_path / "d"),
        ]
    )
    one_class = tmp_path / "one" / "only"
    one_class.mkdir(parents=True)
    Image.new("L", (16, 16)).save(one_class / "a.png")
    assert "one class" in _fail(
        [
            "generate",
            "--method",
            "sd",
            "--id",
            str(tmp_path / "one"),
            "--model",
            str(class_model),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    leak = tmp_path / "leak.txt"
    leak.write_text("car\nCat\n")
    assert "coincide with ID" in _fail(
        [
            "generate",
            "--id",
            str(bench / "bench.json"),
            "--ood-classes",
            str(leak),
            "--method",
            "sona",
            "--model",
            str(tiny_sd),
            "--out",
            str(tmp_path / "f"),
        ]
    )
    assert "cannot load Stable Diffusion parts" in _fail(
        [
            *base,
            "--method",
            "sona",
            "--model",
            "someone/not-cached-model",
            "--out",
            str(tmp_path / "g"),
        ]
    )
    assert not any((tmp_path / n).exists() for n in "abcdefg")
