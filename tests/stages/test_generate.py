"""Generation end to end with a tiny offline Stable Diffusion and a tiny class-conditional UNet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from oodkit.artifacts import load_artifact
from oodkit.cli import app
from oodkit.diffusion import denoisers
from oodkit.errors import OodkitError
from oodkit.stages.generate.run import GenerateOptions, generate
from oodkit.testing import build_tiny_ddpm, build_tiny_dit

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


def test_the_ood_class_list_is_an_input_by_content(bench, tiny_sd, tmp_path) -> None:
    """The prompts' class list shapes every outlier: its digest is a manifest input, so an
    edited list makes a rerun into the same folder a different run, not "nothing to do"."""
    import hashlib

    names = tmp_path / "ood.txt"
    names.write_text("car\ntree\n")
    opts = GenerateOptions(method="sona", steps=10, t_start=1, limit=2, batch_size=2)
    run = dict(ood_classes=str(names), quiet=True, device="cpu")
    art = generate(str(bench / "bench.json"), str(tiny_sd), tmp_path / "o", opts, **run)
    [entry] = [i for i in art.manifest.inputs if i["kind"] == "class-list"]
    assert entry["fingerprint"] == hashlib.sha256(names.read_bytes()).hexdigest()
    names.write_text("car\nboat\n")
    with pytest.raises(OodkitError, match=r"different inputs \(.*ood.txt changed\)"):
        generate(str(bench / "bench.json"), str(tiny_sd), tmp_path / "o", opts, **run)


def test_each_sample_starts_at_its_own_step(bench, tiny_sd, tmp_path, monkeypatch) -> None:
    calls = _count_unet_calls(monkeypatch)
    art = _sona(bench, tiny_sd, tmp_path / "o")
    starts = art.dataset()["t_start"]
    assert len(set(starts)) > 3 and all(1 <= s <= 10 for s in starts)
    # full batches of 4 cut from the start-sorted samples; a row enters the forward (3 rows:
    # ∅, ID, OOD) from its own start on, so each step sees exactly the samples that need it
    grid = [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    ordered = sorted(starts)
    expected = []
    for batch in (ordered[i : i + 4] for i in range(0, len(ordered), 4)):
        for j in range(10 - max(batch), 10):
            active = sum(s >= 10 - j for s in batch)
            expected.append((3 * active, [grid[j]] * 3 * active))
    assert calls == expected
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
    bench, tiny_sd, tmp_path, interrupt_shards
) -> None:
    whole = _sona(bench, tiny_sd, tmp_path / "whole", batch_size=2)
    restart = interrupt_shards(2)
    with pytest.raises(KeyboardInterrupt):
        _sona(bench, tiny_sd, tmp_path / "resumed", batch_size=2, shard_size=2)
    restart()
    assert not (tmp_path / "resumed").exists()
    resumed = _sona(bench, tiny_sd, tmp_path / "resumed", batch_size=2, shard_size=2)
    assert resumed.manifest.fingerprint == whole.manifest.fingerprint


def _sona_cli(bench: Path, tiny_sd: Path, *extra: str) -> list[str]:
    """``generate`` arguments of a small SONA run: batches and shards of 2."""
    return [
        *("generate", "--method", "sona", "--id", str(bench / "bench.json")),
        *("--model", str(tiny_sd), "--ood-classes", str(bench / "ood.txt"), "--steps", "10"),
        *("--batch-size", "2", "--shard-size", "2", *extra, "--quiet"),
    ]


def test_two_processes_and_five_shards_give_the_identical_artifact(
    bench, tiny_sd, tmp_path, torchrun
) -> None:
    """torchrun with the default --device auto: 10 samples in 5 shards split over 2 ranks."""
    args = _sona_cli(bench, tiny_sd)
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        load_artifact(tmp_path / "two").manifest.fingerprint
        == load_artifact(tmp_path / "one").manifest.fingerprint
    )


@pytest.mark.slow
def test_sigterm_stops_a_two_process_run_and_one_process_resumes_it(
    bench, tiny_sd, tmp_path
) -> None:
    """A real SIGTERM to torchrun (as Slurm preemption sends) mid-run: each rank stops after
    its batch with one line saying how to resume, no temporaries or lock are left, and one
    process resumes it to the artifact of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    args = _sona_cli(bench, tiny_sd, "--per-image", "6")
    single = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    out = tmp_path / "two"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*launch, "-m", "oodkit.cli", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    partial = tmp_path / "two.partial"
    deadline = time.monotonic() + 240
    while len(list(partial.glob("shard-*"))) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 2 and all("rerun the same command to resume" in x for x in lines)
    assert not out.exists() and not (tmp_path / "two.lock").exists()
    assert not list(partial.glob(".tmp-*")) and list((partial / "claims").iterdir()) == []
    done = len(list(partial.glob("shard-*")))
    assert 4 <= done < 30
    resumed = runner.invoke(app, [*args, "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert (
        load_artifact(out).manifest.fingerprint
        == load_artifact(tmp_path / "one").manifest.fingerprint
    )
    assert not partial.exists()


def test_a_changed_model_is_a_changed_input(bench, tiny_sd, tmp_path, monkeypatch) -> None:
    """A diffusers folder is fingerprinted by content (hashed once, then by size and mtime)."""
    import shutil

    import torch
    from diffusers import UNet2DConditionModel

    from oodkit import hashing

    model = tmp_path / "sd"
    shutil.copytree(tiny_sd, model)
    args = [
        "generate",
        "--method",
        "reconstruct",
        "--id",
        str(bench / "bench.json"),
        "--model",
        str(model),
        "--steps",
        "4",
        "--limit",
        "2",
        "--out",
        str(tmp_path / "o"),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    hashed: list[str] = []
    real = hashing._sha256
    monkeypatch.setattr(hashing, "_sha256", lambda p: hashed.append(p.name) or real(p))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "complete: nothing to do" in again.output
    assert hashed == []  # nothing re-hashed: the cache knew every file
    unet = UNet2DConditionModel.from_pretrained(str(model / "unet"))
    with torch.no_grad():
        unet.conv_out.bias.add_(0.1)
    unet.save_pretrained(str(model / "unet"))  # "retrained" in place
    line = _fail(args)
    assert f"different inputs ({model} changed)" in line
    assert "diffusion_pytorch_model.safetensors" in hashed
    redo = runner.invoke(app, [*args, "--overwrite"])
    assert redo.exit_code == 0, redo.output
    new = load_artifact(tmp_path / "o")
    assert new.manifest.inputs[-1]["kind"] == "diffusers-model"
    assert new.manifest.params["data_root"] is None and new.manifest.params["dtype"] == "fp32"


def test_vae_mode_is_the_vae_round_trip(bench, tiny_sd, tmp_path) -> None:
    import torch
    from diffusers import AutoencoderKL

    from oodkit.data.images import fit_square, tensor_to_pil
    from oodkit.data.sources import resolve_id

    opts = GenerateOptions(method="reconstruct", mode="vae", batch_size=3, limit=5)
    art = generate(
        str(bench / "bench.json"), str(tiny_sd), tmp_path / "v", opts, quiet=True, device="cpu"
    )
    ds = art.dataset()
    assert ds["t_start"] == [0] * 5 and ds["start_timestep"] == [-1] * 5
    assert ds["id_condition"][0] == "a photo of a cat"
    vae = AutoencoderKL.from_pretrained(str(tiny_sd / "vae")).eval()
    x, _ = fit_square(resolve_id(str(bench / "bench.json")).train["image"][:5], 16, 3)
    with torch.no_grad():
        want = ((vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample + 1) / 2).clamp(0, 1)
    for got, ref in zip(ds["image"], want, strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(tensor_to_pil(ref)))
    assert art.manifest.params["guidance_convention"] == "decode(encode(x).mode())"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Sources of mixed sizes and aspect ratios, grayscale and RGB, in one ID set."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    shapes = [(16, 16), (24, 12), (10, 30), (40, 40), (13, 17)]
    for c in ("ant", "bee"):
        (root / "data" / c).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            arr = rng.integers(0, 255, (h, w), dtype=np.uint8)
            img = Image.fromarray(arr) if i % 2 else Image.fromarray(np.stack([arr] * 3, -1))
            img.save(root / "data" / c / f"{i}.png")
    spec = {
        "id_train": "data",
        "id_test": "data",
        "ood": [{"name": "o", "group": "far", "data": "data/ant"}],
        "class_names": ["ant", "bee"],
    }
    (root / "bench.json").write_text(json.dumps(spec))
    (root / "ood.txt").write_text("car\ntree\n")
    return root


@pytest.mark.parametrize("policy", ["crop", "pad", "squash"])
def test_mixed_sizes_and_grayscale_sources(mixed, tiny_sd, tmp_path, policy) -> None:
    opts = GenerateOptions(method="sona", steps=4, batch_size=10, resize=policy, size=20)
    art = generate(
        str(mixed / "bench.json"),
        str(tiny_sd),
        tmp_path / policy,
        opts,
        ood_classes=str(mixed / "ood.txt"),
        quiet=True,
        device="cpu",
    )
    ds = art.dataset()
    assert all(np.isfinite(ds["ssim"])) and all(np.isfinite(ds["psnr"]))
    assert {im.mode for im in ds["image"]} == {"RGB"}  # grayscale sources made RGB
    sizes = [im.size for im in ds["image"]]
    if policy == "pad":  # long side 20, aspect kept: 24×12 → (w, h) = (10, 20), 10×30 → (20, 6)
        assert (10, 20) in sizes and (20, 6) in sizes and all(max(s) == 20 for s in sizes)
    else:
        assert set(sizes) == {(20, 20)}
    assert ds["id_condition"][0] == "a photo of an ant" and ds["ood_condition"][0] in {
        "a photo of a car",
        "a photo of a tree",
    }
    assert art.manifest.summary["mean_ssim"] is not None


@pytest.mark.parametrize("method", ["sd", "global", "reconstruct"])
def test_class_conditional_methods(class_model, tmp_path, method, monkeypatch) -> None:
    calls = _count_unet_calls(monkeypatch)
    opts = (
        GenerateOptions(method="sd", limit=6, batch_size=6)
        if method == "sd"
        else GenerateOptions(method=method, limit=6, batch_size=6, steps=10, t_start=3)
    )
    art = generate("digits", str(class_model), tmp_path / method, opts, quiet=True, device="cpu")
    ds = art.dataset()
    assert len(ds) == 6 and ds[0]["image"].mode == "L" and ds[0]["image"].size == (16, 16)
    assert all(rows == 12 for rows, _ in calls)  # two condition rows (∅ and c) × 6
    assert len(calls) == (11 if method == "sd" else 3)
    src = [int(x) for x in ds["source_label"]]
    cond = [int(x) for x in ds["condition"]]
    assert ds["id_condition"] == [str(s) for s in src]
    if method == "reconstruct":
        assert cond == src and ds["ood_condition"] == [None] * 6
    else:
        assert all(c != s and 0 <= c < 5 for c, s in zip(cond, src, strict=True))
        assert ds["ood_condition"] == [str(c) for c in cond]


def test_sona_away_from_the_source_class_needs_no_ood_row(class_model, tmp_path, monkeypatch):
    calls = _count_unet_calls(monkeypatch)
    opts = GenerateOptions(
        method="sona", limit=6, batch_size=6, steps=10, t_start=3, ood_condition="away"
    )
    art = generate("digits", str(class_model), tmp_path / "o", opts, quiet=True, device="cpu")
    ds = art.dataset()
    assert len(calls) == 3 and all(rows == 12 for rows, _ in calls)  # ∅ and c_ID only
    assert ds["condition"] == [f"away:{s}" for s in ds["source_label"]]
    assert ds["ood_condition"] == [None] * 6
    params = art.manifest.params
    assert params["ood_condition"] == "away" and params["guidance_convention"].endswith(
        "(psi_ood = -psi_id)"
    )
    drawn = generate(
        "digits", str(class_model), tmp_path / "c", opts, ood_condition="class", quiet=True,
        device="cpu",
    )  # fmt: skip
    assert drawn.manifest.fingerprint != art.manifest.fingerprint


def test_sd_start_is_training_timestep_s_on_diffusers_grid(class_model, tmp_path, monkeypatch):
    """--t-start S noises to timestep S (add_noise) and visits every later grid step to 0."""
    import torch
    from diffusers import DDIMScheduler

    from oodkit.data.sources import resolve_id
    from oodkit.seeding import per_sample_randn, sample_generators

    inputs: list[torch.Tensor] = []
    original = denoisers.load_denoiser

    def wrapped(*args, **kwargs):
        d = original(*args, **kwargs)
        d.unet.register_forward_pre_hook(lambda m, a: inputs.append((a[0].clone(), a[1])))
        return d

    monkeypatch.setattr(denoisers, "load_denoiser", wrapped)
    opts = GenerateOptions(method="sd", limit=4, batch_size=4, t_start=100, seed=3)
    art = generate("digits", str(class_model), tmp_path / "sd", opts, quiet=True, device="cpu")
    sched = DDIMScheduler.from_pretrained(str(class_model / "scheduler"))
    sched.set_timesteps(100)
    grid = [t for t in sched.timesteps.tolist() if t <= 100]
    assert grid[0] == 100 and grid[-1] == 0 and len(grid) == 11
    assert [int(t[0]) for _, t in inputs] == grid
    ds = art.dataset()
    assert ds["t_start"] == [11] * 4 and ds["start_timestep"] == [100] * 4
    train = resolve_id("digits").train
    pixels = [np.asarray(train[i]["image"], dtype=np.float32) / 255 for i in range(4)]
    x0 = torch.from_numpy(np.stack(pixels))[:, None] * 2 - 1
    noise = per_sample_randn(
        x0.shape[1:], sample_generators(3, ds["sample_id"]), "cpu", torch.float32
    )
    want = sched.add_noise(x0, noise, torch.full((4,), 100))
    assert torch.allclose(inputs[0][0][:4], want, atol=1e-5)


def _fail(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_bad_input_is_refused_before_the_model_loads(
    bench, tiny_sd, class_model, tmp_path, monkeypatch
) -> None:
    """One line, exit 2, nothing on disk, and no weights loaded for any of these."""

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(denoisers, "load_denoiser", no_load)
    sd_bench = ["--id", str(bench / "bench.json"), "--ood-classes", str(bench / "ood.txt")]
    sona = ["--method", "sona", *sd_bench, "--model", str(tiny_sd)]
    sd = ["--method", "sd", "--id", "digits", "--model", str(class_model)]
    one_class = tmp_path / "one" / "only"
    one_class.mkdir(parents=True)
    Image.new("L", (16, 16)).save(one_class / "a.png")
    leak = tmp_path / "leak.txt"
    leak.write_text("car\nCat\n")
    cases = [
        (["--method", "sona", *sd_bench, "--model", str(tmp_path)], "unknown model folder"),
        (["--method", "sd", *sd_bench, "--model", str(tiny_sd)], "takes prompts, not class ids"),
        ([*sona, "--t-start", "0"], "outside 1..50"),
        ([*sona, "--t-start", "51"], "outside 1..50"),
        ([*sd, "--t-start", "0"], "training timestep ≥ 1"),
        ([*sd, "--t-start", "99"], "not on the 100-step DDIM grid (0, 10, …, 990)"),
        ([*sd, "--steps", "0"], "must be positive"),
        ([*sd, "--limit", "0"], "--limit must be positive"),
        ([*sona, "--size", "0"], "--size must lie in [1, 9459]"),
        ([*sona, "--shard-size", "0"], "must be positive"),
        ([*sona, "--resize", "stretch"], "--resize must be one of crop, pad, squash"),
        ([*sona, "--dtype", "fp8"], "--dtype must be one of auto, fp32, fp16, bf16"),
        ([*sona, "--mode", "vae"], "use --method reconstruct"),
        (["--method", "reconstruct", "--mode", "vae", *sd[2:]], "needs a latent model"),
        (
            ["--method", "sd", "--id", str(tmp_path / "one"), "--model", str(class_model)],
            "one class",
        ),
        (
            ["--method", "sona", "--id", str(bench / "bench.json"), "--model", str(tiny_sd)],
            "pass --ood-classes",
        ),
        (
            [
                "--method",
                "sona",
                "--id",
                str(bench / "bench.json"),
                "--ood-classes",
                str(leak),
                "--model",
                str(tiny_sd),
            ],
            "coincide with ID",
        ),
        (
            ["--method", "sona", *sd_bench, "--model", "someone/not-cached-model"],
            "cannot read the Hub model someone/not-cached-model (HF_HUB_OFFLINE is set",
        ),
        (
            ["--method", "sona", *sd_bench, "--model", str(build_tiny_ddpm(tmp_path / "ddpm"))],
            "an unconditional model takes no class or prompt",
        ),
    ]
    for n, (args, message) in enumerate(cases):
        line = _fail(["generate", *args, "--quiet", "--out", str(tmp_path / f"o{n}")])
        assert message in line, (args, line)
    assert not [p for p in tmp_path.glob("o*") if p.name != "one"]


def test_wrong_class_outliers_with_a_dit_model(bench, tmp_path) -> None:
    """A DiTPipeline folder (latent, class-conditional, learned σ) runs the sd method and the
    VAE round trips; the null class is the transformer's extra label row."""
    dit = build_tiny_dit(tmp_path / "dit", image_size=16, num_classes=5)
    ref = str(bench / "bench.json")
    art = generate(ref, str(dit), tmp_path / "o", method="sd", steps=10, t_start=200, quiet=True)
    table = art.dataset()
    assert len(table) == 10 and set(table["start_timestep"]) == {200}
    pairs = zip(table["ood_condition"], table["source_label"], strict=True)
    assert all(int(c) != s for c, s in pairs) and set(table["t_start"]) == {3}
    vae = generate(ref, str(dit), tmp_path / "v", method="reconstruct", mode="vae", quiet=True)
    assert set(vae.dataset()["start_timestep"]) == {-1}
    assert art.manifest.inputs[-1]["kind"] == "diffusers-model"


def test_semantic_shift_per_start_step_is_the_hand_count() -> None:
    """A stub judge's predictions: the shares are counted by hand."""
    from oodkit.stages.generate.judge import semantic_summary, targets

    start = np.array([1, 2, 3, 9, 10, 10])  # buckets of 10 steps / 5: 1-2, 3-4, 9-10
    source = np.array([0, 1, 2, 3, -1, 4])  # one source without a known class
    target = targets(["1", "cat", None, "2", "0", "dog"], ["zero", "cat", "x", "y", "dog"])
    assert target.tolist() == [1, 1, -1, 2, 0, 4]
    pred = np.array([1, 1, 0, 2, 0, 4])
    s = semantic_summary(start, source, target, pred, steps=10)
    # left source: rows 0 (1≠0), 2 (0≠2), 3 (2≠3) of the 5 known → 3/5; row 5 stays
    assert s["left_source"] == pytest.approx(3 / 5)
    # reached target: rows 0, 1, 3, 4, 5 of the 5 aimed → 5/5
    assert s["reached_target"] == pytest.approx(1.0)
    assert s["by_start_step"] == {
        "1-2": {"left_source": 0.5, "reached_target": 1.0},
        "3-4": {"left_source": 1.0, "reached_target": None},
        "9-10": {"left_source": 0.5, "reached_target": 1.0},
    }


def test_a_judge_adds_semantic_shift_to_the_diagnostics(class_model, ce_detector, tmp_path):
    from oodkit.data.images import eval_transform
    from oodkit.models.detector import load_detector

    opts = GenerateOptions(method="sd", limit=6, batch_size=6, judge=str(ce_detector))
    art = generate("digits", str(class_model), tmp_path / "sd", opts, quiet=True, device="cpu")
    s = art.manifest.summary
    assert s["judge"] == str(ce_detector) and (art.path / "diagnostics.png").is_file()
    assert any(i["kind"] == "detector" for i in art.manifest.inputs)
    ds = art.dataset()
    model = load_detector(ce_detector)
    t = eval_transform(model.config)
    with torch.no_grad():
        pred = model(torch.stack([t(im) for im in ds["image"]]))["logits"].argmax(1).numpy()
    src = np.asarray(ds["source_label"])
    cond = np.asarray([int(c) for c in ds["condition"]])
    assert s["left_source"] == pytest.approx(float((pred != src).mean()))
    assert s["reached_target"] == pytest.approx(float((pred == cond).mean()))
    (bucket,) = s["by_start_step"].values()  # sd: one fixed start
    assert {"n", "ssim", "psnr", "left_source", "reached_target"} <= set(bucket)
    info = CliRunner().invoke(app, ["info", str(art.path)], env={"COLUMNS": "200"})
    assert "diagnostics per start step" in info.output and "left source class" in info.output
    wrong = GenerateOptions(method="sd", limit=6, judge=str(class_model))
    with pytest.raises(OodkitError, match="is a diffusion-model artifact, expected detector"):
        generate("digits", str(class_model), tmp_path / "x", wrong, quiet=True, device="cpu")


class _PointMassDenoiser:
    """A class-conditional stub whose ε is exact for data that is one image μ_c per class:
    ε(x_t, t, c) = (x_t − √ᾱ_t·μ_c) / √(1 − ᾱ_t), so ε − noise = √(ᾱ/(1 − ᾱ))·(x₀ − μ_c)."""

    image_size, channels, class_names = 4, 1, None

    def __init__(self, levels: list[float]) -> None:
        from diffusers import DDIMScheduler

        self.scheduler_config = DDIMScheduler().config
        self.alphas = DDIMScheduler().alphas_cumprod.double()
        self.mu = torch.tensor(levels, dtype=torch.float32) * 2 - 1  # model space

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * 2 - 1

    def condition(self, values):
        return torch.tensor(values)

    def eps(self, x, t, cond):
        a = self.alphas[t].float().view(-1, 1, 1, 1)
        mu = self.mu[cond].view(*cond.shape, 1, 1, 1)
        return (x[None] - a.sqrt() * mu) / (1 - a).sqrt()


def test_the_models_posterior_judge_is_the_hand_computed_denoising_error() -> None:
    from diffusers import DDIMScheduler

    from oodkit.diffusion.posterior import denoising_errors, judge_timesteps
    from oodkit.seeding import sample_generators
    from oodkit.stages.generate.judge import model_predictions

    stub = _PointMassDenoiser([0.1, 0.5, 0.9])
    assert judge_timesteps(1000, 4) == [125, 375, 625, 875]
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    ts = judge_timesteps(1000, 4)
    alphas = DDIMScheduler().alphas_cumprod
    errors = denoising_errors(stub, x, [0, 1, 2], alphas, ts, sample_generators(0, list("abcde")))
    a = alphas.double()[ts]
    weight = float((a / (1 - a)).mean())  # the noise cancels: error = mean_t ᾱ/(1−ᾱ)·(x₀−μ)²
    x0 = x * 2 - 1
    want = torch.stack([((x0 - m) ** 2).mean(dim=(1, 2, 3)) for m in stub.mu], 1) * weight
    assert torch.allclose(errors, want, rtol=1e-4, atol=1e-6)
    # nearest class level; the candidate classes may be a subset, reported by their ids
    levels = [0.05, 0.45, 0.62, 0.95]
    images = [Image.fromarray(np.full((4, 4), round(v * 255), np.uint8)) for v in levels]
    import datasets

    table = datasets.Dataset.from_dict(
        {"image": images, "sample_id": [str(i) for i in range(4)]},
        features=datasets.Features(
            {"image": datasets.Image(), "sample_id": datasets.Value("string")}
        ),
    )
    opts = {"seed": 0, "policy": "crop", "batch_size": 3}
    assert model_predictions(stub, table, [0, 1, 2], **opts).tolist() == [0, 1, 1, 2]
    assert model_predictions(stub, table, [0, 2], **opts).tolist() == [0, 0, 2, 2]


def test_the_model_judges_its_own_outliers(class_model, tmp_path) -> None:
    opts = GenerateOptions(method="sd", limit=6, batch_size=4, judge="model")
    art = generate("digits", str(class_model), tmp_path / "sd", opts, quiet=True, device="cpu")
    s = art.manifest.summary
    assert s["judge"].startswith("model") and 0 <= s["left_source"] <= 1
    assert 0 <= s["reached_target"] <= s["left_source"]  # reaching c_r means leaving the source
    assert not any(i["kind"] == "detector" for i in art.manifest.inputs)
    assert (art.path / "diagnostics.png").is_file()
