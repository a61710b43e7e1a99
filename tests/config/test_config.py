"""TrialConfig: presets, dotted overrides, validation messages, flattening."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from tumorsweep.config import (
    PRESETS,
    TrialConfig,
    apply_overrides,
    flatten,
    make_config,
    parse_assignment,
)
from tumorsweep.errors import TumorsweepError


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
    assert cfg.schedule.amp_dtype == "float16"  # torch.cuda.amp with a GradScaler


def test_amp_precision_follows_the_setting_and_the_gpu() -> None:
    from tumorsweep.train import amp_precision

    assert amp_precision("float16", True) is torch.float16
    assert amp_precision("auto", True) is torch.bfloat16
    assert amp_precision("auto", False) is torch.float16
    assert amp_precision("bfloat16", True) is torch.bfloat16
    with pytest.raises(TumorsweepError, match="does not support bfloat16"):
        amp_precision("bfloat16", False)


def test_demo_preset_changes_only_values() -> None:
    cfg = make_config("demo", {"synthesis.sphere_ratio": 0.25})
    assert cfg.schedule.patch_size == (32, 32, 32)
    assert cfg.synthesis.sphere_ratio == 0.25
    assert cfg.data.spacing == (2.0, 2.0, 2.0)


def test_override_sets_nested_field_and_flatten_names_it() -> None:
    cfg = apply_overrides(TrialConfig(), {"synthesis.texture.hu_drop.low": 50.0, "seed": 4})
    flat = flatten(cfg)
    assert flat["synthesis.texture.hu_drop.low"] == 50.0
    assert flat["synthesis.texture.hu_drop.high"] == 145.0  # the other end keeps its default
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
        ("synthesis.texture.hu_drop.low", 500.0, "low (500) must be <= high (145)"),
        ("synthesis.texture.hu_drop", [150, 100], "hu_drop = [150, 100]: Value error, low (150)"),
        ("synthesis.texture.hu_drop", [1, 2, 3], "a range is [low, high], got [1, 2, 3]"),
        ("synthesis.texture.u0.high", 1.5, "synthesis.texture.u0: Value error, high (1.5) must"),
        ("synthesis.ca.seeds", [0, 3], "low (0) must be >= 1"),
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


def _published_schedule(base: float, warmup: int, epochs: int, start: float, eta_min: float):
    """lr per epoch of LinearWarmupCosineAnnealingLR as published (its recursive get_lr, one
    scheduler.step() per epoch after training, as in Hu et al.'s monai_trainer.py)."""
    lrs = [start]
    for last in range(1, epochs):
        previous = lrs[-1]
        if last < warmup:
            lrs.append(previous + (base - start) / (warmup - 1))
        elif last == warmup:
            lrs.append(base)
        elif (last - 1 - epochs) % (2 * (epochs - warmup)) == 0:
            lrs.append(
                previous + (base - eta_min) * (1 - math.cos(math.pi / (epochs - warmup))) / 2
            )
        else:
            ratio = (1 + math.cos(math.pi * (last - warmup) / (epochs - warmup))) / (
                1 + math.cos(math.pi * (last - warmup - 1) / (epochs - warmup))
            )
            lrs.append(ratio * (previous - eta_min) + eta_min)
    return lrs


@pytest.mark.parametrize(
    ("warmup", "epochs", "start", "eta_min"),
    [(100, 4000, 0.0, 0.0), (5, 40, 1e-5, 1e-6), (2, 32, 0, 0)],
)
def test_trainer_schedule_is_the_published_warmup_cosine(warmup, epochs, start, eta_min) -> None:
    """The scheduler the trainer builds trains each epoch at the published schedule's lr."""
    from tumorsweep.optim import build_optimisation

    cfg = make_config(
        "paper",
        {
            "schedule.epochs": epochs,
            "schedule.warmup_epochs": warmup,
            "schedule.lr": 4e-4,
            "schedule.warmup_start_lr": start,
            "schedule.min_lr": eta_min,
        },
    )
    _, optimizer, scheduler = build_optimisation(cfg, torch.nn.Linear(2, 2))
    ours = []
    for _ in range(epochs):
        ours.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = _published_schedule(4e-4, warmup, epochs, start, eta_min)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-15)
    assert ours[0] == start and max(ours) == pytest.approx(4e-4)


def test_trainer_loss_is_the_published_dice_ce() -> None:
    """DiceCE with squared predictions, smooth_nr 0, smooth_dr 1e-6, written out from its
    definition: 1 - mean over (batch, class) of 2 sum(p g) / (sum p^2 + sum g^2 + 1e-6), plus
    the mean cross-entropy of the logits."""
    from tumorsweep.optim import build_optimisation

    loss_fn, _, _ = build_optimisation(make_config("paper"), torch.nn.Linear(2, 2))
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 6, 5, 4), generator=generator)
    labels[1][labels[1] == 2] = 1  # one sample without class 2: smooth_nr = 0 matters there
    p = torch.softmax(logits, dim=1)
    g = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 4, 1, 2, 3).double()
    dims = (2, 3, 4)
    dice = 1 - 2 * (p * g).sum(dims) / ((p * p).sum(dims) + (g * g).sum(dims) + 1e-6)
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0])
    assert float(loss_fn(logits, labels)) == pytest.approx(float(dice.mean() + ce), rel=1e-8)


def test_paper_preset_selects_on_mean_dice_of_the_validation_list() -> None:
    cfg = make_config("paper")
    assert (cfg.eval.select_metric, cfg.eval.select_on) == ("val_mean_dice", "validation")
    with pytest.raises(TumorsweepError, match="unknown selection metric 'val_tumour_dice'"):
        make_config("paper", {"eval.select_metric": "val_tumour_dice"})


def test_a_range_is_one_field_set_whole_or_by_its_ends() -> None:
    cfg = apply_overrides(TrialConfig(), {"synthesis.texture.hu_drop": [40, 90]})
    assert (cfg.synthesis.texture.hu_drop.low, cfg.synthesis.texture.hu_drop.high) == (40, 90)
    name, value = parse_assignment("synthesis.ca.steps=[20, 60]")
    cfg = apply_overrides(cfg, {name: value})
    assert (cfg.synthesis.ca.steps.low, cfg.synthesis.ca.steps.high) == (20, 60)
    cfg = apply_overrides(cfg, {"synthesis.ca.steps.high": 80})
    assert (cfg.synthesis.ca.steps.low, cfg.synthesis.ca.steps.high) == (20, 80)
    assert "synthesis.texture.hu_drop_min" not in flatten(cfg)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("synthesis.texture.hu_drop_min", "synthesis.texture.hu_drop.low"),
        ("synthesis.zhang.mean_factor_max", "synthesis.zhang.mean_factor.high"),
        ("synthesis.difftumor.blur_max", "synthesis.difftumor.blur.high"),
        ("synthesis.ca.necrosis_points_min", "synthesis.ca.necrosis_points.low"),
    ],
)
def test_old_range_names_are_refused_naming_the_new_key(old: str, new: str) -> None:
    with pytest.raises(TumorsweepError) as err:
        apply_overrides(TrialConfig(), {old: 1.0}, source="--set")
    assert str(err.value).startswith(f"--set: {old} is now {new} ")


def test_a_pair_that_is_no_range_is_still_a_field() -> None:
    # organ_hu_min has no _max: it is a field of its own, not a range end
    cfg = apply_overrides(TrialConfig(), {"synthesis.ca.organ_hu_min": 90.0})
    assert cfg.synthesis.ca.organ_hu_min == 90.0


def test_a_config_logged_with_min_max_pairs_is_still_read() -> None:
    logged = TrialConfig().model_dump(mode="json")
    texture = logged["synthesis"]["texture"]
    del texture["hu_drop"], texture["u0"]
    # a u0 other than the public bank's needs per-event draws (synthesis.texture.draws)
    texture |= {"hu_drop_min": 30.0, "hu_drop_max": 70.0, "u0_max": 0.6, "draws": "per_event"}
    logged["synthesis"]["ca"] |= {"steps_min": 7, "steps_max": 9}
    del logged["synthesis"]["ca"]["steps"]
    cfg = TrialConfig.model_validate(yaml.safe_load(yaml.safe_dump(logged)))
    assert (cfg.synthesis.texture.hu_drop.low, cfg.synthesis.texture.hu_drop.high) == (30, 70)
    assert (cfg.synthesis.texture.u0.low, cfg.synthesis.texture.u0.high) == (0.5, 0.6)
    assert (cfg.synthesis.ca.steps.low, cfg.synthesis.ca.steps.high) == (7, 9)
    logged["synthesis"]["ca"]["steps"] = [7, 9]
    with pytest.raises(ValidationError, match="steps is given both as one range and as"):
        TrialConfig.model_validate(logged)


def test_a_preset_naming_an_old_range_end_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRESETS, "old", {"synthesis.difftumor.blur_max": 2.0})
    with pytest.raises(TumorsweepError, match="blur_max is now synthesis.difftumor.blur.high"):
        make_config("old")
