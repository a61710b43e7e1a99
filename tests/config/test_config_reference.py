"""The configuration reference: every field described, docs/config.md current, and
`tumorsweep config` listing fields and what a preset changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tumorsweep.cli import main
from tumorsweep.config import PRESETS, TrialConfig, flatten, make_config
from tumorsweep.config_reference import fields, reference_markdown
from tumorsweep.generative.config import GeneratorConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_every_trial_field_has_a_description() -> None:
    docs = fields(TrialConfig)
    names = {d.name for d in docs}
    # every MLflow param is a documented field, or an entry of a documented dict field
    for param in flatten(TrialConfig()):
        assert param in names or param.rsplit(".", 1)[0] in names, param
    assert [d.name for d in docs if not d.description.strip()] == []


def test_the_generated_page_is_current() -> None:
    assert DOC.read_text() == reference_markdown() + "\n", (
        "docs/config.md is stale: run `tumorsweep config --markdown > docs/config.md`"
    )


def test_the_page_lists_every_field_of_both_models_with_its_default() -> None:
    text = DOC.read_text()
    for model in (TrialConfig, GeneratorConfig):
        for doc in fields(model):
            assert f"| `{doc.name}` |" in text
    assert "| `schedule.lr` | float | `0.0002` |" in text


def test_cli_lists_fields_and_preset_changes(capsys: pytest.CaptureFixture) -> None:
    assert main(["config"]) == 0
    listing = capsys.readouterr().out
    assert "schedule.lr" in listing and "base learning rate of AdamW" in listing
    assert main(["config", "--preset", "demo"]) == 0
    demo = capsys.readouterr().out.splitlines()
    changed = dict(line.split(None, 1) for line in demo)
    # what the listing says the demo preset changes is what make_config gives
    config = flatten(make_config("demo"))
    assert changed["schedule.epochs"] == str(config["schedule.epochs"])
    assert changed["eval.overlap"] == str(config["eval.overlap"])
    assert set(changed) >= {k for k in PRESETS["demo"] if "." in k and k in config}


def test_every_generator_field_has_a_description() -> None:
    docs = fields(GeneratorConfig)
    assert len(docs) >= 30
    assert [d.name for d in docs if not d.description.strip()] == []
