"""Artifacts: manifest round trip, refusal of bad directories, overwrite rules, shard resume."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from oodkit.artifacts import (
    MANIFEST_NAME,
    ShardedWriter,
    check_output,
    fingerprint_dataset,
    load_artifact,
    write_artifact,
)
from oodkit.errors import OodkitError

FEATURES = datasets.Features(
    {
        "sample_id": datasets.Value("string"),
        "image": datasets.Image(),
        "value": datasets.Value("float64"),
    }
)


def table(n: int = 5) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "image": [None] * n,
            "value": [i / 3 for i in range(n)],
        },
        features=FEATURES,
    )


def test_round_trip_preserves_rows_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "art"
    params = {"method": "sona", "lam": 0.1, "seed": 3}
    inputs = [{"kind": "detector", "path": "/x", "fingerprint": "abc"}]
    written = write_artifact(
        out,
        "outliers",
        params,
        inputs,
        dataset=table(),
        summary={"count": 5},
        write_files=lambda d: (d / "extra.txt").write_text("hi"),
    )
    loaded = load_artifact(out, kind="outliers")
    assert loaded.manifest == written.manifest
    assert loaded.manifest.params == params and loaded.manifest.inputs == inputs
    assert loaded.manifest.summary == {"count": 5}
    assert loaded.manifest.format_version == 1 and loaded.manifest.created.endswith("+00:00")
    assert loaded.dataset().to_dict() == table().to_dict()
    assert (out / "extra.txt").read_text() == "hi"
    assert not list(tmp_path.glob("art.tmp-*"))


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    a = write_artifact(tmp_path / "a", "scores", {}, dataset=table())
    b = write_artifact(tmp_path / "b", "scores", {"other": 1}, dataset=table())
    c = write_artifact(tmp_path / "c", "scores", {}, dataset=table(6))
    assert a.manifest.fingerprint == b.manifest.fingerprint != c.manifest.fingerprint
    # the fingerprint ignores how rows are chunked
    chunked = datasets.concatenate_datasets([table().select(range(2)), table().select(range(2, 5))])
    assert fingerprint_dataset(chunked) == fingerprint_dataset(table())


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def boom(_: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_artifact(tmp_path / "art", "scores", {}, dataset=table(), write_files=boom)
    assert list(tmp_path.iterdir()) == []


def test_refuses_missing_corrupt_and_wrong_kind(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(OodkitError, match="oodkit.json is missing"):
        load_artifact(plain)
    with pytest.raises(OodkitError, match="no such directory"):
        load_artifact(tmp_path / "absent", kind="scores")
    write_artifact(tmp_path / "s", "scores", {}, dataset=table())
    with pytest.raises(OodkitError, match="is a scores artifact, expected detector"):
        load_artifact(tmp_path / "s", kind="detector")
    (tmp_path / "s" / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(OodkitError, match="corrupt"):
        load_artifact(tmp_path / "s")
    (tmp_path / "s" / MANIFEST_NAME).write_text(json.dumps({"kind": "scores"}))
    with pytest.raises(OodkitError, match="corrupt"):
        load_artifact(tmp_path / "s")
    manifest = json.loads(
        (write_artifact(tmp_path / "t", "scores", {}).path / MANIFEST_NAME).read_text()
    )
    manifest["format_version"] = 99
    (tmp_path / "t" / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(OodkitError, match="format_version 99"):
        load_artifact(tmp_path / "t")


def test_check_output_rules(tmp_path: Path) -> None:
    out = tmp_path / "art"
    assert check_output(out, "scores", {"a": 1}) is None
    write_artifact(out, "scores", {"a": 1}, dataset=table())
    assert check_output(out, "scores", {"a": 1}) is not None  # up to date: nothing to do
    with pytest.raises(OodkitError, match=r"different parameters \(a: 1 -> 2\).*--overwrite"):
        check_output(out, "scores", {"a": 2})
    with pytest.raises(OodkitError, match="it is a scores artifact"):
        check_output(out, "metrics", {"a": 1})
    with pytest.raises(OodkitError, match="different inputs"):
        check_output(out, "scores", {"a": 1}, [{"kind": "x", "path": "p", "fingerprint": "f"}])
    assert check_output(out, "scores", {"a": 2}, overwrite=True) is None
    write_artifact(out, "scores", {"a": 2}, dataset=table(2))
    assert len(load_artifact(out).dataset()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    other = tmp_path / "user-data"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(OodkitError, match="not an oodkit artifact"):
        check_output(other, "scores", {}, overwrite=True)


def _rows_for(keys: list[str], seed: int) -> datasets.Dataset:
    """Deterministic per-key rows (two rows per key, with an image), as a generator would make."""
    rows: dict[str, list] = {"sample_id": [], "image": [], "value": []}
    for k in keys:
        rng = np.random.default_rng([seed, int(k[1:])])
        for _ in range(2):
            rows["sample_id"].append(k)
            rows["image"].append(Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)))
            rows["value"].append(float(rng.normal()))
    return datasets.Dataset.from_dict(rows, features=FEATURES)


class Killed(Exception):
    pass


def _run(
    out: Path, keys: list[str], shard: int, kill_after: int | None = None, **kw
) -> ShardedWriter:
    writer = ShardedWriter(out, kind="outliers", keys=keys, params={"seed": 1}, **kw)
    todo = writer.pending()
    for n, start in enumerate(range(0, len(todo), shard)):
        if kill_after is not None and n == kill_after:
            raise Killed
        chunk = todo[start : start + shard]
        writer.write_shard(chunk, _rows_for(chunk, seed=1))
    return writer


def test_resume_after_kill_equals_uninterrupted_run(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(11)]
    whole = _run(tmp_path / "whole", keys, shard=5).finalize(summary={"n": 11})

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        _run(out, keys, shard=3, kill_after=2)
    assert not out.exists()  # nothing loads as complete
    partial = out.with_name("resumed.partial")
    (partial / ".tmp-shard-leftover").mkdir()  # a shard cut off mid-write is ignored
    resumed = _run(out, keys, shard=4)
    assert resumed.pending() == []
    art = resumed.finalize(summary={"n": 11})

    assert not partial.exists()
    assert art.manifest.fingerprint == whole.manifest.fingerprint
    got, want = art.dataset(), whole.dataset()
    assert got["sample_id"] == want["sample_id"] == [k for k in keys for _ in range(2)]
    assert got["value"] == want["value"]
    assert [np.asarray(i).tolist() for i in got["image"]] == [
        np.asarray(i).tolist() for i in want["image"]
    ]


def test_resume_with_other_parameters_is_refused(tmp_path: Path) -> None:
    keys = ["k0", "k1", "k2"]
    with pytest.raises(Killed):
        _run(tmp_path / "a", keys, shard=1, kill_after=1)
    with pytest.raises(OodkitError, match="different parameters"):
        ShardedWriter(tmp_path / "a", kind="outliers", keys=keys, params={"seed": 2})
    fresh = ShardedWriter(
        tmp_path / "a", kind="outliers", keys=keys, params={"seed": 2}, overwrite=True
    )
    assert fresh.pending() == keys


def test_finalize_refuses_unfinished_work(tmp_path: Path) -> None:
    writer = ShardedWriter(tmp_path / "a", kind="outliers", keys=["k0", "k1"], params={})
    writer.write_shard(["k0"], _rows_for(["k0"], 0))
    with pytest.raises(OodkitError, match="1 samples are not done"):
        writer.finalize()
    with pytest.raises(ValueError, match="outside this shard"):
        writer.write_shard(["k1"], _rows_for(["k0"], 0))


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_artifacts import _rows_for
from oodkit.artifacts import ShardedWriter
keys = [f"k{{i}}" for i in range(9)]
w = ShardedWriter({out!r}, kind="outliers", keys=keys, params={{"seed": 1}})
for n, start in enumerate(range(0, 9, 2)):
    if n == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    w.write_shard(keys[start:start + 2], _rows_for(keys[start:start + 2], seed=1))
"""


def test_sigkilled_process_resumes(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    keys = [f"k{i}" for i in range(9)]
    writer = ShardedWriter(out, kind="outliers", keys=keys, params={"seed": 1})
    assert writer.pending() == keys[4:]
    writer.write_shard(writer.pending(), _rows_for(writer.pending(), seed=1))
    whole = _run(tmp_path / "whole", keys, shard=9).finalize()
    assert writer.finalize().manifest.fingerprint == whole.manifest.fingerprint


def test_empty_table_round_trips(tmp_path: Path) -> None:
    art = write_artifact(tmp_path / "empty", "outliers", {}, dataset=table(0))
    assert len(load_artifact(art.path).dataset()) == 0


def _verify(path: Path):
    from typer.testing import CliRunner

    from oodkit.cli import app

    return CliRunner().invoke(app, ["verify", str(path)])


def test_the_manifest_lists_every_file_with_its_size(tmp_path: Path) -> None:
    art = write_artifact(tmp_path / "a", "outliers", {}, dataset=table())
    on_disk = {
        p.relative_to(art.path).as_posix(): p.stat().st_size
        for p in art.path.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }
    assert art.manifest.files == on_disk and any(f.endswith(".arrow") for f in on_disk)
    ok = _verify(art.path)
    assert ok.exit_code == 0 and "intact" in ok.output and art.manifest.fingerprint in ok.output


def test_verify_detects_a_flipped_byte_and_every_load_a_truncated_file(tmp_path: Path) -> None:
    import struct

    art = write_artifact(tmp_path / "a", "outliers", {}, dataset=table())
    arrow = next((art.path / "data").glob("*.arrow"))
    raw = bytearray(arrow.read_bytes())
    at = raw.find(struct.pack("<d", 2 / 3))  # one value of the table, in place
    assert at > 0
    raw[at + 7] ^= 0x01
    arrow.write_bytes(bytes(raw))
    assert load_artifact(art.path)  # same size: the cheap check on load cannot see it ...
    flipped = _verify(art.path)  # ... the fingerprint can
    assert flipped.exit_code == 2 and len(flipped.stderr.splitlines()) == 1
    assert "fails verification: its content fingerprint is" in flipped.stderr

    arrow.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(OodkitError, match=r"is damaged: data/.*\.arrow has \d+ bytes"):
        load_artifact(art.path)
    truncated = _verify(art.path)
    assert truncated.exit_code == 2 and "is damaged" in truncated.stderr

    extra = write_artifact(tmp_path / "b", "outliers", {}, dataset=table())
    (extra.path / "data" / "cache-123.arrow").write_bytes(b"x")
    added = _verify(extra.path)
    assert added.exit_code == 2 and "cache-123.arrow is not in the manifest" in added.stderr


def test_an_unreadable_table_is_one_line(tmp_path: Path) -> None:
    art = write_artifact(tmp_path / "a", "outliers", {}, dataset=table())
    (art.path / "data" / "state.json").write_text("{")
    with pytest.raises(OodkitError, match=r"data cannot be read \(.*\); run oodkit verify"):
        art.dataset()
