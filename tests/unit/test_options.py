"""Options are written once: the CLI is generated from the options dataclasses and the method
registries, and this checks the generated commands against them."""

from __future__ import annotations

import dataclasses
import json
import runpy
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from oodkit.cli import app
from oodkit.demo import DemoOptions
from oodkit.methods import REGISTRIES
from oodkit.options import cli_fields
from oodkit.stages.evaluate.options import EvalOptions
from oodkit.stages.generate.options import GenerateOptions
from oodkit.stages.pseudo_label.options import PseudoLabelOptions
from oodkit.stages.score.options import ScoreOptions
from oodkit.stages.train_detector.options import TrainOptions
from oodkit.stages.train_diffusion.options import DiffusionOptions

COMMANDS = {
    ("train", "detector"): TrainOptions,
    ("train", "diffusion"): DiffusionOptions,
    ("generate",): GenerateOptions,
    ("pseudo-label",): PseudoLabelOptions,
    ("score",): ScoreOptions,
    ("eval",): EvalOptions,
    ("demo",): DemoOptions,
}


def _command(path: tuple[str, ...]):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _library_default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p))
def test_cli_defaults_and_help_equal_the_options_dataclass(path) -> None:
    options_cls = COMMANDS[path]
    params = {p.name: p for p in _command(path).params}
    for f in cli_fields(options_cls):
        assert f.name in params, f"--{f.name} is missing from oodkit {' '.join(path)}"
        param = params[f.name]
        if f.metadata.get("required"):
            assert param.required, f"{f.name} should be required on the command line"
            continue
        cli = param.default
        expected = _library_default(f)
        if cli is None and expected in ([], {}):  # list / JSON options: nothing given
            cli = expected
        assert cli == expected, f"{' '.join(path)} {f.name}: CLI {cli!r} vs library {expected!r}"
        assert param.help == f.metadata["help"]
    hidden = {f.name for f in dataclasses.fields(options_cls)} - {
        f.name for f in cli_fields(options_cls)
    }
    assert not hidden & set(params), "fields marked cli=False must not appear"


def test_every_registered_method_loads_and_is_listed() -> None:
    result = CliRunner().invoke(app, ["info", "--methods"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for registry in REGISTRIES:
        for method in registry:
            assert callable(method.load()), method.target
            assert method.name in result.output
    # the --method / --loss help texts come from the registries
    for path, registry in ((("score",), "score"), (("generate",), "generate")):
        help_text = CliRunner().invoke(app, [*path, "--help"], terminal_width=300).output
        reg = next(r for r in REGISTRIES if r.stage == registry)
        assert all(name in help_text for name in reg.names())


def test_unknown_method_names_the_registered_ones() -> None:
    from oodkit.errors import OodkitError
    from oodkit.methods import SCORE

    with pytest.raises(OodkitError, match="must be one of msp, energy, maxlogit, knn, sd-vote"):
        SCORE.parse("energy,nope")
    assert [m.name for m in SCORE.parse("knn, energy,knn")] == ["knn", "energy"]


def test_command_line_equals_the_snapshot() -> None:
    """Every flag, default and required mark of every command equals the golden snapshot
    (``tests/unit/cli_snapshot.json``, first taken from the hand-written CLI; refresh it with
    ``python tools/cli_snapshot.py`` only for a deliberate CLI change)."""
    root = Path(__file__).parents[2]
    snapshot = runpy.run_path(str(root / "tools" / "cli_snapshot.py"))["snapshot"]()
    expected = json.loads((Path(__file__).parent / "cli_snapshot.json").read_text())
    assert snapshot.keys() == expected.keys()
    for command in expected:
        assert snapshot[command] == expected[command], command
