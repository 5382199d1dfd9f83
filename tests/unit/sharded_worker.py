"""A rank of a synthetic sharded run, as its own process (tests/unit/test_sharding.py).

``python sharded_worker.py OUT RANK DELAY [DIE_AFTER]``: runs the shards it can claim of a
12-shard job over ``OUT.partial`` (opened by the test), each batch taking DELAY seconds;
with DIE_AFTER it SIGKILLs itself in the middle of its DIE_AFTER-th batch. With GATE in the
environment, its first batch waits until that file exists (the test then knows every rank
holds a claim, so its SIGTERM handler is in place). Prints the shards it computed as one JSON
line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import datasets
import numpy as np
import torch

from oodkit.artifacts import ShardedWriter
from oodkit.errors import Interrupted
from oodkit.sharding import Claims, ShardWork, cut_shards, run_shards

N, BATCH, SHARD = 48, 2, 4
KEYS = [f"k{i:03d}" for i in range(N)]
FEATURES = datasets.Features(
    {"sample_id": datasets.Value("string"), "value": datasets.Value("float64")}
)


def writer(out: str) -> ShardedWriter:
    return ShardedWriter(
        out, kind="outliers", keys=KEYS, params={"job": "synthetic"}, layout={"shard_size": SHARD}
    )


def work(delay: float, die_after: int | None) -> ShardWork:
    batches = [list(range(i, min(i + BATCH, N)))[::-1] for i in range(0, N, BATCH)]  # not key order
    count = {"n": 0}

    gate = os.environ.get("GATE")

    def compute(batch: list[int], inputs: torch.Tensor) -> torch.Tensor:
        count["n"] += 1
        while gate is not None and not os.path.exists(gate):
            time.sleep(0.01)
        if die_after is not None and count["n"] == die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(delay)
        return inputs * 0.5

    def host(batch: list[int], _inputs, result: torch.Tensor) -> dict[str, list]:
        return {"sample_id": [KEYS[i] for i in batch], "value": result.tolist()}

    shards = cut_shards(batches, BATCH, SHARD)
    return ShardWork(
        shards=shards,
        key_of=lambda i: KEYS[i],
        load=lambda batch: torch.tensor([float(np.sin(i)) for i in batch], dtype=torch.float64),
        compute=compute,
        host=host,
        features=FEATURES,
        host_workers=2,
    )


def main() -> None:
    out, rank, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    die_after = int(sys.argv[4]) if len(sys.argv) > 4 else None
    w = writer(out)
    done: list[int] = []
    job = work(delay, die_after)
    names = [w.shard_name([KEYS[i] for b in s for i in b]) for s in job.shards]
    claims = Claims(w.partial, rank)
    original = claims.release

    def released(name: str) -> None:
        if w.is_done(name):
            done.append(names.index(name))
        original(name)

    claims.release = released  # type: ignore[method-assign]
    try:
        run_shards(job, w, claims)
    except Interrupted as exc:
        print(json.dumps(sorted(set(done))), flush=True)
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print(json.dumps(sorted(set(done))), flush=True)


if __name__ == "__main__":
    main()
