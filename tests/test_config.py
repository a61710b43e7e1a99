"""TrialConfig: presets, dotted overrides, validation messages, flattening."""

from __future__ import annotations

import math

import pytest

from core.config import (
    TrialConfig,
    apply_overrides,
    flatten,
    make_config,
    parse_assignment,
)
from core.errors import TumorsweepError


def test_paper_preset_is_the_published_protocol() -> None:
    cfg = make_config("paper")
    assert cfg.schedule.epochs == 4000
    assert cfg.schedule.warmup_epochs == 100
    assert cfg.schedule.lr == 2e-4
    assert cfg.schedule.batch_size == 2
    assert cfg.schedule.patch_size == (96, 96, 96)
    assert cfg.data.window == (-21.0, 189.0)
    assert cfg.eval.overlap == 0.75
    assert cfg.synthesis.prob == 0.9
    assert cfg.synthesis.sphere_ratio == 0.0


def test_demo_preset_changes_only_values() -> None:
    cfg = make_config("demo", {"synthesis.sphere_ratio": 0.25})
    assert cfg.schedule.patch_size == (32, 32, 32)
    assert cfg.synthesis.sphere_ratio == 0.25
    assert cfg.data.spacing == (2.0, 2.0, 2.0)


def test_override_sets_nested_field_and_flatten_names_it() -> None:
    cfg = apply_overrides(TrialConfig(), {"synthesis.texture.hu_drop_min": 50.0, "seed": 4})
    flat = flatten(cfg)
    assert flat["synthesis.texture.hu_drop_min"] == 50.0
    assert flat["seed"] == 4
    assert flat["model.name"] == "unet"
    assert flat["synthesis.type_probs.tiny"] == 0.2


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("synthesis.sphere_ratio", 1.5, "synthesis.sphere_ratio = 1.5"),
        ("synthesis.sphere_ratoi", 0.1, "unknown config field 'synthesis.sphere_ratoi'"),
        ("model.name", "resnet", "unknown backbone 'resnet'"),
        ("schedule.patch_size", [96, 96, 80], "multiples of 32"),
        ("synthesis.texture.hu_drop_min", 500.0, "hu_drop_min (500.0) must be <= hu_drop_max"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object, needle: str) -> None:
    with pytest.raises(TumorsweepError) as err:
        apply_overrides(TrialConfig(), {field: value}, source="flags")
    assert needle in str(err.value)
    assert str(err.value).startswith("flags:")


def test_unknown_preset() -> None:
    with pytest.raises(TumorsweepError, match="unknown preset 'fast'"):
        make_config("fast")


def test_parse_assignment_reads_yaml_values() -> None:
    assert parse_assignment("synthesis.sphere_ratio=0.1") == ("synthesis.sphere_ratio", 0.1)
    assert parse_assignment("schedule.patch_size=[64, 64, 32]") == (
        "schedule.patch_size",
        [64, 64, 32],
    )
    assert parse_assignment("model.pretrained=null") == ("model.pretrained", None)
    with pytest.raises(TumorsweepError, match="field=value"):
        parse_assignment("synthesis.sphere_ratio")


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    from core.optim import lr_factor

    factors = [lr_factor(e, warmup_epochs=4, epochs=20) for e in range(20)]
    assert factors[0] == pytest.approx(0.2)
    assert factors[3] == pytest.approx(0.8)
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert lr_factor(20, warmup_epochs=4, epochs=20) == pytest.approx(0.0)
