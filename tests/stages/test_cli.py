"""The console script: start-up time, lazy imports, info, help layout, error handling."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oodkit import cli
from oodkit.cli import app, redact

runner = CliRunner()
SCRIPT = shutil.which("oodkit", path=str(Path(sys.executable).parent)) or shutil.which("oodkit")


def _timed(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60)
    return time.perf_counter() - start, proc


@pytest.mark.parametrize("args", [("--help",), ("eval", "--help")])
def test_help_is_fast_through_the_real_console_script(args: tuple[str, ...]) -> None:
    assert SCRIPT, "the oodkit console script is not installed"
    _timed(*args)  # first run may compile bytecode
    best = min(_timed(*args)[0] for _ in range(3))
    elapsed, proc = _timed(*args)
    assert proc.returncode == 0 and "Usage" in proc.stdout
    assert best < 1.5, f"oodkit {' '.join(args)} took {best:.2f} s"


def test_cli_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, oodkit.cli; "
        "print([m for m in ('torch', 'datasets', 'numpy', 'sklearn', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_from_the_console_script_are_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [SCRIPT, "eval", str(tmp_path / "nope"), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: no such directory (expected a scores artifact)"
    ]
    debug = subprocess.run(
        [SCRIPT, "eval", str(tmp_path / "nope"), "--out", str(tmp_path / "m"), "--debug"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "OodkitError" in debug.stderr


def test_info_on_an_artifact(make_scores) -> None:
    scores = make_scores("s", {"test": ("id", [1.0, 2.0]), "far": ("far", [0.0])})
    result = runner.invoke(app, ["info", str(scores)])
    assert result.exit_code == 0, result.output
    for text in (
        "scores artifact",
        '"kind": "scores"',
        "3 rows",
        "id_score",
        "float64",
        '"method": "energy"',
    ):
        assert text in result.output


def test_info_on_a_benchmark() -> None:
    result = runner.invoke(app, ["info", "--benchmark", "digits"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("digits-5-9", "796", "photo-patches-train", "outlier pool", "1 channel"):
        assert text in result.output
    offline = runner.invoke(app, ["info", "--benchmark", "imagenet200"], env={"COLUMNS": "200"})
    assert offline.exit_code == 0 and "ssb_hard" in offline.output and "49000" in offline.output
    assert "OODKIT_OPENOOD_ROOT" in offline.output
    both = runner.invoke(app, ["info"])
    assert (
        both.exit_code == 2
        and "an artifact directory, --benchmark NAME or --methods" in both.stderr
    )
    unknown = runner.invoke(app, ["info", "--benchmark", "mnist"])
    assert unknown.exit_code == 2 and "unknown benchmark 'mnist'" in unknown.stderr


def test_command_line_is_recorded_without_secrets(
    monkeypatch: pytest.MonkeyPatch, make_scores, tmp_path
) -> None:
    assert redact(
        ["push", "x", "--token", "hf_secret", "--hub-token=abc", "hf_bare", "--seed", "1"]
    ) == [
        "push",
        "x",
        "--token",
        "***",
        "--hub-token=***",
        "***",
        "--seed",
        "1",
    ]
    scores = make_scores("s", {"test": ("id", [1.0, 2.0]), "far": ("far", [0.0])})
    out = tmp_path / "m"
    monkeypatch.setattr(
        sys, "argv", ["oodkit", "eval", str(scores), "--out", str(out), "--no-plots", "--debug"]
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    manifest = json.loads((out / "oodkit.json").read_text())
    assert manifest["command"] == f"oodkit --debug eval {scores} --out {out} --no-plots"


def test_warnings_are_dropped_with_a_refusal_kept_with_debug_and_after_success(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import warnings

    import oodkit.stages.info as info
    from oodkit.errors import OodkitError

    def refusing(*args, **kwargs):
        warnings.warn("third-party noise", FutureWarning, stacklevel=1)
        raise OodkitError("bad input")

    def working():
        warnings.warn("worth knowing", UserWarning, stacklevel=1)
        return "all methods"

    monkeypatch.setattr(info, "benchmark_info", refusing)
    monkeypatch.setattr(info, "methods_info", working)
    runs = {}
    for name, args in {
        "refused": ["info", "--benchmark", "x"],
        "debug": ["--debug", "info", "--benchmark", "x"],
        "ok": ["info", "--methods"],
    }.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = runner.invoke(app, args)
        runs[name] = (result, [str(w.message) for w in caught])
    refused, debug, ok = runs["refused"], runs["debug"], runs["ok"]
    assert refused[0].exit_code == 2 and refused[0].stderr == "error: bad input\n"
    assert refused[1] == []
    assert debug[0].exit_code == 1 and debug[1] == ["third-party noise"]
    assert ok[0].exit_code == 0 and "all methods" in ok[0].output and ok[1] == ["worth knowing"]


def test_help_lists_commands_in_pipeline_order_and_flags_without_a_value() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    order = [line.split()[1] for line in result.output.splitlines() if line.startswith("│ ")]
    commands = [
        c
        for c in order
        if c
        in {"pseudo-label", "train", "generate", "score", "eval", "info", "verify", "push", "demo"}
    ]
    assert commands == [
        "pseudo-label",
        "train",
        "generate",
        "score",
        "eval",
        "info",
        "verify",
        "push",
        "demo",
    ]
    detector = runner.invoke(app, ["train", "detector", "--help"], env={"COLUMNS": "160"})
    flags = [line for line in detector.output.splitlines() if "--overwrite" in line]
    assert flags and "<bool>" not in detector.output and "<int>" in detector.output


def test_no_arguments_show_the_help_without_an_error_line() -> None:
    for args in ([], ["train"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Usage" in result.output and result.stderr == ""
