"""Every flag of every command says what it is, its unit where it has one, and its default;
flags are grouped; every command ends its help with an example (issue 25)."""

from __future__ import annotations

import argparse

import pytest

from tumorsweep.cli import build_parser
from tumorsweep.cli.study import build_parser as study_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {**sub.choices, "sweeps/<study>.py": study_parser("sphere_ratio")}


COMMANDS = _commands()


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS and "-h" not in a.option_strings
    ]


def test_every_command_is_walked() -> None:
    names = set(COMMANDS)
    wanted = {"phantom", "check-data", "synthesize", "fit-location", "train-generator"}
    assert names >= wanted | {"evaluate", "predict", "report", "config", "sweeps/<study>.py"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_help_with_its_default(name: str) -> None:
    parser = COMMANDS[name]
    lacking = [a.option_strings[0] for a in _flags(parser) if not (a.help or "").strip()]
    assert lacking == [], f"{name}: flags without help"
    valued = [
        a for a in _flags(parser) if not a.required and not isinstance(a, argparse._StoreTrueAction)
    ]
    no_default = [a.option_strings[0] for a in valued if "default" not in a.help]
    assert no_default == [], f"{name}: optional flags whose help does not say the default"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_groups_its_flags_and_shows_an_example(name: str) -> None:
    parser = COMMANDS[name]
    titled = [
        g for g in parser._action_groups if g.title not in ("options", "positional arguments")
    ]
    grouped = {a.dest for g in titled for a in g._group_actions}
    loose = [a.option_strings[0] for a in _flags(parser) if a.dest not in grouped]
    assert titled and loose == [], f"{name}: flags outside a titled group"
    text = parser.format_help()
    assert "example" in text.split("\n\n")[-1].lower(), f"{name}: no example at the end"
    prog = "python sweeps/" if name.startswith("sweeps") else f"tumorsweep {name}"
    assert prog in parser.epilog


def test_top_level_help_names_the_study_scripts() -> None:
    text = build_parser().format_help()
    assert "sweeps/" in text and "--dry-run" in text


def test_split_has_the_same_choices_everywhere() -> None:
    choices = {
        name: tuple(a.choices or ())
        for name, parser in COMMANDS.items()
        for a in parser._actions
        if "--split" in a.option_strings
    }
    assert len(choices) >= 4 and len(set(choices.values())) == 1
    assert "hu-val" in choices["check-data"]


def test_one_naming_for_workers_and_gpus_old_spellings_still_parse() -> None:
    study = COMMANDS["sweeps/<study>.py"]
    generator = COMMANDS["train-generator"]
    for parser in (study, generator):
        shown = {s for a in _flags(parser) for s in a.option_strings}
        assert {"--gpus-per-worker", "--cpus-per-worker"} <= shown
        assert "--gpus-per-trial" not in shown
    old = study.parse_args(["--gpus-per-trial", "2"])
    assert old.gpus_per_trial == 2 == study.parse_args(["--gpus-per-worker", "2"]).gpus_per_trial
    assert study.parse_args([]).gpus_per_trial == 0
    base = ["train-generator", "--out", "g"]
    assert build_parser().parse_args([*base, "--workers-per-trial", "3"]).workers == 3
    assert build_parser().parse_args(base).workers == 1
