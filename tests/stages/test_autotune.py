"""``--t-start auto`` / ``--scale auto``: the smallest setting at which a judge sees the target
shift, found on a probe; checked on stub judges whose shift curve is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oodkit.errors import OodkitError
from oodkit.options import with_overrides
from oodkit.stages.generate import run as generate_run
from oodkit.stages.generate.autotune import SCALES, probe_rows, smallest_reaching
from oodkit.stages.generate.run import GenerateOptions, generate

pytestmark = pytest.mark.threads(1)


def _expected(candidates, curve, target):
    return min((c for c in candidates if curve(c) >= target), default=None)


@pytest.mark.parametrize("target", [0.05, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_the_search_finds_the_smallest_candidate_of_a_monotone_curve(target) -> None:
    candidates = list(range(1, 1000, 10))  # a DDIM grid of 100 timesteps
    curve = lambda t: 1 - math.exp(-t / 250)  # noqa: E731 - the share that left, rising
    calls = []

    def measure(t):
        calls.append(t)
        return {"left_source": curve(t)}

    search = smallest_reaching(candidates, measure, target)
    assert search.chosen == _expected(candidates, curve, target)
    assert len(calls) == len(set(calls)) <= 8 + 7  # the coarse scan, then bisection
    assert [p["value"] for p in search.curve] == calls


def test_the_scan_stops_at_the_first_coarse_candidate_that_reaches() -> None:
    # a curve that dips after its first peak: the smallest reaching value is found, never a
    # larger one past it
    values = list(range(100))
    curve = {v: (0.95 if 10 <= v < 20 else 0.2 if v < 10 else 0.5) for v in values}
    search = smallest_reaching(values, lambda v: {"left_source": curve[v]}, 0.9, coarse=12)
    assert search.chosen == 10


def test_an_unreachable_target_chooses_nothing() -> None:
    search = smallest_reaching([1, 2, 3], lambda v: {"left_source": v / 10}, 0.9)
    assert search.chosen is None and [p["value"] for p in search.curve] == [1, 2, 3]


def test_the_probe_is_a_seeded_draw_of_distinct_rows() -> None:
    rows = probe_rows(1000, 64, seed=3)
    assert rows == sorted(set(rows)) and len(rows) == 64 and rows == probe_rows(1000, 64, 3)
    assert rows != probe_rows(1000, 64, 4) and probe_rows(10, 64, 0) == list(range(10))


def _stub_judge(monkeypatch, curve, option: str) -> list:
    """The judge of every probe: it sees ``curve(value)`` of the outliers leave their source
    (the first rows of the table; the rest keep it). ``value`` is what the probe runs with."""
    seen: list = []
    init = generate_run.BatchGenerator.__init__

    def recording(self, denoiser, opts, capture=None):
        seen.append(getattr(opts, option))
        init(self, denoiser, opts, capture)

    monkeypatch.setattr(generate_run.BatchGenerator, "__init__", recording)

    def judgement(judge, denoiser, classes, o):
        def predict(ds):
            src = np.asarray(ds["label" if "label" in ds.column_names else "source_label"])
            moved = src.copy()
            k = round(curve(seen[-1]) * len(src))
            moved[:k] = (src[:k] + 1) % 5
            return moved

        return "stub", predict, None

    monkeypatch.setattr(generate_run, "_judgement", judgement)
    return seen


def test_auto_start_picks_the_smallest_grid_timestep_that_reaches_the_shift(
    class_model, tmp_path, monkeypatch
) -> None:
    from diffusers import DDIMScheduler

    curve = lambda s: min(1.0, s / 600)  # noqa: E731 - the stub's share that left, by S
    seen = _stub_judge(monkeypatch, curve, "t_start")
    opts = GenerateOptions(
        method="sd", t_start="auto", target_shift=0.5, judge="model", probe_size=10, limit=4,
        steps=25,
    )  # fmt: skip
    art = generate("digits", str(class_model), tmp_path / "o", opts, quiet=True, device="cpu")
    grid = DDIMScheduler(clip_sample=False)
    grid.set_timesteps(25)
    candidates = sorted(int(t) for t in grid.timesteps if t >= 1)
    # the probe's share is round(curve · 10) / 10: the smallest S with round(S / 60) ≥ 5
    want = _expected(candidates, lambda s: round(curve(s) * 10) / 10, 0.5)
    auto = art.manifest.summary["auto"]
    assert auto["chosen"] == want and auto["option"] == "t_start" and auto["judge"] == "stub"
    assert auto["target_shift"] == 0.5 and auto["probe"]["size"] == 10
    assert [p["value"] for p in auto["curve"]] == seen[:-1]  # the last runner makes the artifact
    assert all(0 <= p["mean_ssim"] <= 1 for p in auto["curve"])
    assert art.manifest.params["t_start"] == "auto"
    assert set(art.dataset()["start_timestep"]) == {want}
    from typer.testing import CliRunner

    from oodkit.cli import app

    info = CliRunner().invoke(app, ["info", str(art.path)], env={"COLUMNS": "200"})
    assert f"t_start auto: chose {want} — the smallest that reaches 50 % left" in " ".join(
        info.output.split()
    )


def test_a_resume_keeps_the_first_run_s_choice(
    class_model, tmp_path, monkeypatch, interrupt_shards
) -> None:
    """Killed after one shard, resumed where the probe would now choose another start (as a
    nondeterministic GPU could): the resume does not probe again, and every sample and the
    summary keep the first choice."""
    opts = GenerateOptions(
        method="sd", t_start="auto", target_shift=0.5, judge="model", probe_size=10, limit=4,
        steps=25, shard_size=1, batch_size=1,
    )  # fmt: skip
    _stub_judge(monkeypatch, lambda s: min(1.0, s / 600), "t_start")
    restart = interrupt_shards(1)
    with pytest.raises(KeyboardInterrupt):
        generate("digits", str(class_model), tmp_path / "o", opts, quiet=True, device="cpu")
    restart()
    first = generate("digits", str(class_model), tmp_path / "x", opts, quiet=True, device="cpu")
    chosen = first.manifest.summary["auto"]["chosen"]
    seen = _stub_judge(monkeypatch, lambda s: min(1.0, s / 200), "t_start")  # chooses earlier
    other = generate("digits", str(class_model), tmp_path / "y", opts, quiet=True, device="cpu")
    assert other.manifest.summary["auto"]["chosen"] < chosen  # the probe itself has changed
    before = len(seen)
    art = generate("digits", str(class_model), tmp_path / "o", opts, quiet=True, device="cpu")
    assert seen[before:] == [chosen]  # no probe: the one runner makes the remaining samples
    assert art.manifest.summary["auto"]["chosen"] == chosen
    assert set(art.dataset()["start_timestep"]) == {chosen}
    # the samples of the uninterrupted run (the verdicts differ: the stub judge has changed)
    rows = lambda a: [(r["sample_id"], r["image"].tobytes()) for r in a.dataset()]  # noqa: E731
    assert rows(art) == rows(first)


def test_auto_scale_picks_the_smallest_sona_scale_that_reaches_the_shift(
    class_model, tmp_path, monkeypatch
) -> None:
    curve = lambda s: min(1.0, s / 8)  # noqa: E731
    _stub_judge(monkeypatch, curve, "scale")
    opts = GenerateOptions(
        method="sona",
        t_start=5,
        steps=10,
        scale="auto",
        target_shift=0.75,
        judge="model",
        probe_size=8,
        limit=2,
    )
    art = generate("digits", str(class_model), tmp_path / "o", opts, quiet=True, device="cpu")
    want = _expected(SCALES, lambda s: round(curve(s) * 8) / 8, 0.75)  # 2^2.5: round(s) ≥ 6
    assert art.manifest.summary["auto"]["chosen"] == pytest.approx(want)
    assert art.manifest.params["scale"] == "auto"


def test_an_unreachable_target_is_refused_before_anything_is_written(
    class_model, tmp_path, monkeypatch
) -> None:
    _stub_judge(monkeypatch, lambda s: 0.2, "t_start")
    opts = GenerateOptions(
        method="sd",
        t_start="auto",
        target_shift=0.9,
        judge="model",
        probe_size=5,
        limit=2,
        steps=10,
    )
    with pytest.raises(OodkitError, match=r"no t_start reaches --target-shift 0.9 .*0.20"):
        generate("digits", str(class_model), tmp_path / "o", opts, quiet=True, device="cpu")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"t_start": "auto", "judge": "model"}, "needs --target-shift"),
        ({"t_start": "auto", "target_shift": 0.9}, "needs --judge"),
        ({"target_shift": 0.9}, "applies with --t-start auto or --scale auto"),
        ({"scale": "auto", "target_shift": 0.9, "judge": "model"}, "does not apply to --method sd"),
        ({"t_start": "soon"}, "--t-start must be a number or auto"),
    ],
)
def test_auto_options_are_checked(kw, message) -> None:
    with pytest.raises(OodkitError, match=message):
        with_overrides(GenerateOptions, None, {"method": "sd", **kw}).resolved()


def test_both_automatic_is_refused() -> None:
    o = GenerateOptions(method="sona", t_start="auto", scale="auto", target_shift=0.5, judge="m")
    with pytest.raises(OodkitError, match="search one, fix the other"):
        o.resolved()


@pytest.mark.slow
def test_two_processes_choose_the_same_start_and_make_the_identical_artifact(
    class_model, tmp_path, torchrun
) -> None:
    """Every rank runs the same seeded probe: one process and two give one artifact."""
    import json

    from typer.testing import CliRunner

    from oodkit.artifacts import load_artifact
    from oodkit.cli import app

    args = [
        *("generate", "--method", "sd", "--id", "digits", "--model", str(class_model)),
        *("--t-start", "auto", "--target-shift", "0.2", "--judge", "model", "--steps", "20"),
        *("--probe-size", "6", "--limit", "6", "--batch-size", "2", "--shard-size", "2", "-q"),
    ]
    single = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = load_artifact(tmp_path / "one"), load_artifact(tmp_path / "two")
    assert two.manifest.fingerprint == one.manifest.fingerprint
    assert json.dumps(two.manifest.summary["auto"]) == json.dumps(one.manifest.summary["auto"])
