"""Options are written once: the CLI is generated from the options dataclasses and the method
registries, and this checks the generated commands against them."""

from __future__ import annotations

import dataclasses
import json
import runpy
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from oodkit.cli import app
from oodkit.demo import DemoOptions
from oodkit.methods import REGISTRIES
from oodkit.options import cli_fields, flags_of
from oodkit.scoring.options import ScoreOptions
from oodkit.stages.evaluate.options import EvalOptions
from oodkit.stages.generate.options import GenerateOptions
from oodkit.stages.pseudo_label.options import PseudoLabelOptions
from oodkit.stages.train_detector.options import TrainOptions
from oodkit.stages.train_diffusion.options import DiffusionOptions
from oodkit.sweep import SweepOptions

COMMANDS = {
    ("train", "detector"): TrainOptions,
    ("train", "diffusion"): DiffusionOptions,
    ("generate",): GenerateOptions,
    ("pseudo-label",): PseudoLabelOptions,
    ("score",): ScoreOptions,
    ("eval",): EvalOptions,
    ("demo",): DemoOptions,
    ("sweep",): SweepOptions,
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
        if f.metadata.get("required"):  # checked after --config is read (test below)
            assert param.default is None and param.help.endswith("Required, here or in --config.")
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


LIBRARY = {
    ("train", "detector"): ("oodkit.stages.train_detector.run", "train_detector"),
    ("train", "diffusion"): ("oodkit.stages.train_diffusion.run", "train_diffusion"),
    ("generate",): ("oodkit.stages.generate.run", "generate"),
    ("pseudo-label",): ("oodkit.stages.pseudo_label.run", "pseudo_label"),
    ("score",): ("oodkit.stages.score.run", "score"),
    ("eval",): ("oodkit.stages.evaluate.run", "evaluate"),
    ("demo",): ("oodkit.demo", "run_demo"),
    ("sweep",): ("oodkit.sweep", "sweep"),
}
FIXED = {
    ("train", "detector"): ["--id", "digits", "--out", "o"],
    ("train", "diffusion"): ["--id", "digits", "--out", "o"],
    ("generate",): ["--id", "digits", "--model", "m", "--out", "o"],
    ("pseudo-label",): ["--id", "digits", "--out", "o"],
    ("score",): ["--detector", "d", "-b", "digits", "--method", "energy", "--out", "o"],
    ("eval",): ["s", "--out", "o"],
    ("demo",): [],
    ("sweep",): ["--id", "digits", "--model", "m", "--grid", "g.yaml", "--out", "o"],
}


def _other_value(f: dataclasses.Field, hint) -> object:
    """A value of the field's type that differs from its default."""
    from oodkit.options import _plain

    base, _ = _plain(hint)
    default = _library_default(f)
    if f.metadata.get("parse") == "auto":  # a number or the word auto
        return "auto"
    if base is bool:
        return not default
    if base is int:
        return (default or 0) + 3
    if base is float:
        return (default or 0.0) * 2 + 0.25
    if base is str:
        return f"{default or 'x'}-other"
    if typing.get_origin(base) is list:
        return ["a", "b"]
    return {"drop_rate": 0.1}


def _capture(monkeypatch, path) -> list:
    import importlib
    from types import SimpleNamespace

    module, name = LIBRARY[path]
    seen: list = []

    def fake(*args, **kwargs):
        seen.append(next(a for a in args if dataclasses.is_dataclass(a)))
        if name in ("evaluate", "run_demo"):
            return SimpleNamespace(path="o"), []
        if name == "sweep":
            return {"chosen": 0, "outliers_help": True, "cells": [{"cell": 0, "score": 0.5}]}
        from oodkit.outcome import NOT_MAIN

        return [] if name == "score" else NOT_MAIN  # prints nothing, as a non-main rank

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    return seen


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p))
def test_config_files_round_trip_every_option(path, tmp_path, monkeypatch) -> None:
    import yaml

    from oodkit.options import config_of

    options_cls = COMMANDS[path]
    hints = typing.get_type_hints(options_cls)
    opts = options_cls(**{f.name: _other_value(f, hints[f.name]) for f in cli_fields(options_cls)})
    required = [f for f in cli_fields(options_cls) if f.metadata.get("required")]
    seen = _capture(monkeypatch, path)
    for suffix, dump in ((".yaml", yaml.safe_dump), (".json", json.dumps)):
        config = tmp_path / f"c{suffix}"
        config.write_text(dump({" ".join(path): config_of(opts)}))  # a section per command
        args = [*path, *FIXED[path], "--config", str(config)]  # required options from it too
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert seen.pop() == opts
    for f in required:  # neither on the command line nor in the file: one line
        config.write_text(json.dumps({k: v for k, v in config_of(opts).items() if k != f.name}))
        result = CliRunner().invoke(app, [*path, *FIXED[path], "--config", str(config)])
        assert result.exit_code == 2 and result.stderr == (
            f"error: missing option {flags_of(f)[0]} (on the command line or in --config)\n"
        )
        assert not seen


def test_the_command_line_wins_over_the_config_and_bad_configs_are_one_line(
    tmp_path, monkeypatch
) -> None:
    seen = _capture(monkeypatch, ("train", "detector"))
    config = tmp_path / "c.yaml"
    config.write_text("batch-size: 64\nepochs: 7\nnesterov: false\nouts: 1\n")
    base = ["train", "detector", "--id", "digits", "--out", "o", "--config", str(config)]
    bad = CliRunner().invoke(app, base)
    assert bad.exit_code == 2 and bad.stderr == f"error: --config {config}: unknown option 'outs'\n"
    config.write_text("batch-size: 64\nepochs: 7\nnesterov: false\n")
    ok = CliRunner().invoke(app, [*base, "--epochs", "2"])
    assert ok.exit_code == 0, ok.output
    o = seen.pop()
    assert (o.batch_size, o.epochs, o.nesterov) == (64, 2, False)
    for text, message in (
        ("epochs: many\n", "--epochs must be an integer, got 'many'"),
        ("[1, 2]\n", "a config file holds one mapping"),
        ("a: !!python/object/apply:os.system ['true']\n", "cannot parse"),
    ):
        config.write_text(text)
        result = CliRunner().invoke(app, base)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_a_number_or_auto_option_parses_text_and_keeps_the_word() -> None:
    from oodkit.errors import OodkitError
    from oodkit.options import auto_number

    assert auto_number("300", int | str | None, "--t-start") == 300
    assert auto_number(300, int | str | None, "--t-start") == 300
    assert auto_number("auto", int | str | None, "--t-start") == "auto"
    assert auto_number(None, int | str | None, "--t-start") is None
    assert auto_number(" 2.5", float | str | None, "--scale") == 2.5
    assert auto_number(4, float | str | None, "--scale") == 4.0
    for bad, hint in [("3.5", int), (3.5, int), (True, int), ("Auto", float), ("", float)]:
        with pytest.raises(OodkitError, match="must be an? .* or auto"):
            auto_number(bad, hint | str | None, "--x", "--config c.yaml")


def test_a_loss_fills_in_its_own_defaults_and_leaves_the_others_unset() -> None:
    """The values the objectives and the manifest see (docs/methods.md §3–§5 defaults)."""
    sona = TrainOptions(loss="sona", club_steps=2).resolved()
    assert (sona.beta, sona.club_weight, sona.club_steps, sona.club_lr) == (0.5, 1.0, 2, 1e-4)
    assert (sona.outlier_weight, sona.outlier_filter, sona.sd_lambda, sona.m_in) == (
        "uniform",
        None,
        None,
        None,
    )
    energy = TrainOptions(loss="energy", m_out=-5.0).resolved()
    assert (energy.energy_weight, energy.m_in, energy.m_out, energy.beta) == (
        0.1,
        -25.0,
        -5.0,
        None,
    )
    ce = TrainOptions().resolved()
    assert all(getattr(ce, f) is None for f in ("beta", "sd_lambda", "outlier_weight"))
    assert ce.resolved() == ce  # resolving twice changes nothing
    helps = {f.name: f.metadata["help"] for f in cli_fields(TrainOptions)}
    assert helps["beta"] == "OE weight β (oe, sona: 0.5)."
    assert helps["m_in"] == "ID energy margin (energy -25.0)."
