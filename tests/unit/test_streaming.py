"""No stage loads a whole image table into RAM: the outlier judge streams a table whose
decoded images are several times the memory the run may grow by."""

from __future__ import annotations

import os
import subprocess
import sys

JUDGE = """
import resource, sys
from pathlib import Path
import datasets, numpy as np, torch
from oodkit.data.images import encode_image
from oodkit.models.detector import Detector, DetectorConfig, save_detector
from oodkit.stages.generate.judge import judge_predictions

root = Path(sys.argv[1])
n, side = 240, 512  # 240 × 512² × 3 bytes = 180 MiB decoded
rng = np.random.default_rng(0)
cells = [
    encode_image(torch.from_numpy(rng.integers(0, 255, (3, side, side), dtype=np.uint8)), "png", 0)
    for _ in range(8)
]
features = datasets.Features({"image": datasets.Image(), "sample_id": datasets.Value("string")})
datasets.Dataset.from_dict(
    {"image": [cells[i % 8] for i in range(n)], "sample_id": [str(i) for i in range(n)]},
    features=features,
).save_to_disk(str(root / "table"))
table = datasets.load_from_disk(str(root / "table"))
config = DetectorConfig.for_data(
    "resnet18", 3, 3, 16, heads=[], arch_kwargs={"channels": [4, 8, 8, 8], "stem_width": 4}
)
(root / "det").mkdir()
save_detector(Detector(config).eval(), root / "det")
judge_predictions(root / "det", table.select(range(16)), batch_size=16)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pred = judge_predictions(root / "det", table, batch_size=16)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(pred), (after - before) * 1024)
"""


def test_the_judge_streams_a_table_larger_than_its_memory_share(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", JUDGE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, grew = (int(v) for v in proc.stdout.split())
    assert n == 240
    assert grew < 60 * 2**20, f"peak RSS grew by {grew / 2**20:.0f} MiB for a 180 MiB table"
