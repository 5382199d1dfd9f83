"""The host side of generation at ImageNet-200 scale, simulated on the CPU.

A synthetic OpenOOD v1.5 data root (``benchmark_imglist/imagenet200/train_imagenet200.txt``
at the list length of ImageNet-200's training set, each line a hard link to one of a few
distinct 500×375 JPEGs), and a class-conditional pixel model artifact at 512 px whose UNet
forward is replaced by a near-free stand-in (``_standin_rank.py``: ε = 0.1·x), so that what
is measured is everything around the denoiser: start-up, source decoding, the sampler's
arithmetic, quality metrics, encoding, writing, claiming, finishing.

For each N (``--sizes``): ``torchrun --nproc_per_node 2 _standin_rank.py generate --method
sd --limit N`` (oodkit's CLI) with ``OMP_NUM_THREADS=1`` per rank, timed and sampled (RSS per
rank, disk of ``--out`` and its partial folder, every 0.2 s); then the same command again on
the finished artifact (start-up of a complete artifact), and a resume after SIGTERM (the
wall time of the resumed run, its start-up until its first claim, and until its first new
shard).

Then, in this process: the host work of one 512-px outlier (PNG encoding, row building) in a
pool of 1 and of 2 threads, and bytes per 512-px image for PNG / JPEG / WebP.

``--full-list-startup`` also builds a complete artifact for the whole list with a 16-px
stand-in (the payload is not what this measures) and times recognising it, per rank.

    python benchmarks/bench_scale.py [--sizes 1000,2000,4000] [--lines 259200]
        [--full-list-startup] [--root DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

STANDIN = str(Path(__file__).with_name("_standin_rank.py"))
LINES = 259_200  # ImageNet-200's training list: 200 classes × ~1,300 images
DISTINCT = 64  # distinct JPEG files behind the list


def write_root(root: Path, lines: int, distinct: int = DISTINCT) -> Path:
    """The OpenOOD v1.5 layout with ``lines`` training images, hard links to ``distinct``
    JPEGs; returns the data root."""
    from PIL import Image

    imgs = root / "images_largescale"
    lists = root / "benchmark_imglist" / "imagenet200"
    lists.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    originals = []
    for i in range(distinct):
        base = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)  # smooth: a photo's spectrum
        im = Image.fromarray(base).resize((500, 375), Image.BICUBIC)
        noisy = np.clip(np.asarray(im) + rng.normal(0, 6, (375, 500, 3)), 0, 255).astype(np.uint8)
        path = root / "originals" / f"{i}.JPEG"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(noisy).save(path, quality=90)
        originals.append(path)
    out = []
    for n in range(lines):
        cls = n % 200
        rel = f"imagenet_1k/train/n{cls:08d}/n{cls:08d}_{n}.JPEG"
        path = imgs / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(originals[n % distinct], path)
        out.append(f"{rel} {cls}")
    (lists / "train_imagenet200.txt").write_text("\n".join(out) + "\n")
    (lists / "val_imagenet200.txt").write_text("\n".join(out[:1000]) + "\n")
    return root


def write_model(folder: Path, size: int) -> Path:
    """A class-conditional pixel model artifact (200 classes + the null class) at ``size``
    px, one narrow resolution level: the cheapest UNet diffusers builds at that size."""
    from diffusers import DDIMScheduler, UNet2DModel

    from oodkit.artifacts import write_artifact

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8,),
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        norm_num_groups=4,
        num_class_embeds=201,
    )
    info = {"num_classes": 200, "null_class": 200, "channels": 3, "image_size": size}

    def files(f: Path) -> None:
        unet.save_pretrained(str(f / "unet"))
        DDIMScheduler(clip_sample=False).save_pretrained(str(f / "scheduler"))
        (f / "oodkit_model.json").write_text(json.dumps({**info, "class_names": None}))

    return write_artifact(folder, "diffusion-model", {"size": size}, write_files=files).path


class Sampler:
    """Peak RSS of every process under a parent, and the peak disk use of some folders."""

    def __init__(self, pid: int, folders: list[Path]) -> None:
        self.proc, self.folders = psutil.Process(pid), folders
        self.rss: dict[int, int] = {}
        self.disk = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _disk(self) -> int:
        total = 0
        for folder in self.folders:
            for dirpath, _, names in os.walk(folder):
                for n in names:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(dirpath, n)).st_size
        return total

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for p in self.proc.children(recursive=True):
                    if STANDIN in " ".join(p.cmdline()):
                        self.rss[p.pid] = max(self.rss.get(p.pid, 0), p.memory_info().rss)
            except psutil.Error:
                pass
            self.disk = max(self.disk, self._disk())
            time.sleep(0.2)

    def close(self) -> tuple[list[int], int]:
        self.stop.set()
        self.thread.join()
        return sorted(self.rss.values()), self.disk


def _generate(args: list[str], out: Path, procs: int = 2):
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [*launch, STANDIN, "generate", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait(proc, what: str) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        errors = [line for line in err.splitlines() if line.startswith(("error:", "interrupted:"))]
        raise SystemExit(f"{what} failed ({proc.returncode}): {errors or err[-2000:]}")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_size(root: Path, model: Path, work: Path, n: int, shard: int) -> dict:
    """One N: a full run, a rerun on the finished artifact, a resume after SIGTERM."""
    from oodkit.artifacts import load_artifact

    args = [
        "--method", "sd", "--id", "imagenet200", "--data-root", str(root), "--model", str(model),
        "--limit", str(n), "--steps", "10", "--t-start", "100", "--batch-size", "16",
        "--shard-size", str(shard), "--quiet",
    ]  # fmt: skip
    out = work / f"n{n}"
    partial = out.with_name(out.name + ".partial")
    start = time.perf_counter()
    proc = _generate(args, out)
    sampler = Sampler(proc.pid, [out, partial, work / f"n{n}.tmp"])
    _wait(proc, f"generate N={n}")
    wall = time.perf_counter() - start
    rss, disk = sampler.close()
    payload = _size(out / "data")
    art = load_artifact(out)
    ranks = art.manifest.summary["ranks_this_run"]
    start = time.perf_counter()
    _wait(_generate(args, out), "rerun")
    complete = time.perf_counter() - start
    # resume: SIGTERM once half the shards are written, then rerun
    again = work / f"r{n}"
    proc = _generate(args, again)
    part = again.with_name(again.name + ".partial")
    total = -(-n // shard)
    while len(list(part.glob("shard-*"))) < total // 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate()
    done = len(list(part.glob("shard-*")))
    start = time.perf_counter()
    proc = _generate(args, again)
    first = claimed = None
    while proc.poll() is None:
        now = time.perf_counter() - start
        if claimed is None and any((part / "claims").glob("shard-*")):
            claimed = now
        if first is None and len(list(part.glob("shard-*"))) > done:
            first = now
        time.sleep(0.02)
    _wait(proc, "resume")
    resumed = time.perf_counter() - start
    same = load_artifact(again).manifest.fingerprint == art.manifest.fingerprint
    per_rank = [
        {
            **r,
            "host_images_per_s": round(r["samples"] / r["seconds"], 2) if r["seconds"] else None,
            "outside_denoiser_ms_per_image": round(
                1000 * (r["seconds"] - r["denoise_s"]) / r["samples"], 2
            )
            if r["samples"]
            else None,
        }
        for r in ranks
    ]
    return {
        "n": n,
        "wall_s": round(wall, 2),
        "s_per_1k": round(1000 * wall / n, 2),
        "s_per_1k_after_startup": round(1000 * (wall - complete) / n, 2),
        "peak_rss_mib_per_rank": [round(r / 2**20) for r in rss],
        "payload_mib": round(payload / 2**20, 1),
        "bytes_per_image": round(payload / n),
        "disk_peak_over_payload": round(disk / payload, 3),
        "startup_complete_s": round(complete, 2),
        "resume_wall_s": round(resumed, 2),
        "resume_first_claim_s": None if claimed is None else round(claimed, 2),
        "resume_first_shard_s": None if first is None else round(first, 2),
        "resumed_after_shards": done,
        "resumed_fingerprint_equal": same,
        "ranks": per_rank,
    }


def host_pool(images: int = 48) -> dict:
    """Host work of 512-px outliers (PNG level 6 encoding and row building, as the pool runs
    it) with 1 and 2 threads; bytes per image per format."""
    from concurrent.futures import ThreadPoolExecutor

    from oodkit.data.images import encode_image

    torch.manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(images, 3, 16, 16), size=512, mode="bicubic")
    imgs = ((base + 0.03 * torch.randn_like(base)).clamp(0, 1) * 255).round().to(torch.uint8)
    out: dict = {}
    for fmt in ("png", "jpeg", "webp"):
        cells = [encode_image(im, fmt) for im in imgs[:8]]
        out[f"bytes_per_512px_{fmt}"] = round(np.mean([len(c["bytes"]) for c in cells]))
    for workers in (1, 2):
        with ThreadPoolExecutor(workers) as pool:
            start = time.perf_counter()
            cpu = time.process_time()
            list(pool.map(lambda im: encode_image(im, "png"), imgs))
            seconds = time.perf_counter() - start
            out[f"png_cpu_ms_per_image_{workers}_threads"] = round(
                1000 * (time.process_time() - cpu) / images, 2
            )
        out[f"png_images_per_s_{workers}_threads"] = round(images / seconds, 2)
    out["pool_scaling_1_to_2"] = round(
        out["png_images_per_s_2_threads"] / out["png_images_per_s_1_threads"], 3
    )
    from oodkit.similarity import ssim_psnr

    a = imgs[:16].float() / 255
    b = (a + 0.02 * torch.randn_like(a)).clamp(0, 1)
    torch.set_num_threads(1)
    start = time.process_time()
    ssim_psnr(a, b)
    out["quality_cpu_ms_per_image_1_thread"] = round(1000 * (time.process_time() - start) / 16, 2)
    return out


def full_list_startup(root: Path, work: Path) -> dict:
    """A complete artifact over the whole list (16-px stand-in), then the time to recognise
    it from a fresh two-process launch, and to resume it with its last shard removed (until
    that shard is claimed)."""
    model = write_model(work / "model16", 16)
    args = [
        "--method", "sd", "--id", "imagenet200", "--data-root", str(root), "--model", str(model),
        "--steps", "10", "--t-start", "100", "--batch-size", "256", "--shard-size", "1024",
        "--quiet",
    ]  # fmt: skip
    out = work / "full"
    start = time.perf_counter()
    _wait(_generate(args, out), "full list")
    build = time.perf_counter() - start
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        _wait(_generate(args, out), "full list rerun")
        timings.append(round(time.perf_counter() - start, 2))
    # a resume: the same run interrupted before its last shard (a fresh run's partial folder)
    again = work / "full-resume"
    proc = _generate(args, again)
    part = again.with_name(again.name + ".partial")
    shards = -(-_list_lines(root) // 1024)
    while len(list(part.glob("shard-*"))) < shards - 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate()
    start = time.perf_counter()
    proc = _generate(args, again)
    claimed = None
    while proc.poll() is None:
        if claimed is None and any((part / "claims").glob("shard-*")):
            claimed = round(time.perf_counter() - start, 2)
        time.sleep(0.02)
    _wait(proc, "full list resume")
    return {
        "full_list_build_s": round(build, 1),
        "full_list_startup_complete_s": timings,
        "full_list_resume_first_claim_s": claimed,
        "full_list_resume_wall_s": round(time.perf_counter() - start, 2),
    }


def _list_lines(root: Path) -> int:
    path = root / "benchmark_imglist" / "imagenet200" / "train_imagenet200.txt"
    with path.open() as fh:
        return sum(1 for line in fh if line.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,2000,4000")
    ap.add_argument("--lines", type=int, default=LINES)
    ap.add_argument("--shard", type=int, default=256)
    ap.add_argument("--root", type=Path, help="keep the data root here (reused)")
    ap.add_argument("--full-list-startup", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="oodkit-scale-") as tmp:
        tmp = Path(tmp)
        root = a.root or tmp / "root"
        list_file = root / "benchmark_imglist" / "imagenet200" / "train_imagenet200.txt"
        start = time.perf_counter()
        if not list_file.is_file():
            write_root(root, a.lines)
        made = time.perf_counter() - start
        model = write_model(tmp / "model", 512)
        report: dict = {
            "list_lines": a.lines,
            "distinct_files": DISTINCT,
            "data_root_s": round(made, 1),
            "cpus": os.cpu_count(),
            "processes": 2,
            "threads_per_rank": 1,
            "torch": torch.__version__,
        }
        sizes = [run_size(root, model, tmp, int(n), a.shard) for n in a.sizes.split(",") if n]
        if sizes:
            report["sizes"] = sizes
            for key in ("s_per_1k", "s_per_1k_after_startup"):
                per = [s[key] for s in sizes]
                report[f"{key}_spread"] = round(max(per) / min(per) - 1, 3)
            peaks = [max(s["peak_rss_mib_per_rank"]) for s in sizes]
            report["rss_spread"] = round(max(peaks) / min(peaks) - 1, 3)
            report["host"] = host_pool()
        if a.full_list_startup:
            report.update(full_list_startup(root, tmp))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
