"""data.real_fraction: the share of training samples from real-tumour cases (their own labels)
versus healthy cases with synthesis; the sampler's share, the trial's two arms, the aliases of
the two ends, refusals, report labels and the shipped study."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tumorsweep.config import TrialConfig, make_config
from tumorsweep.data.cases import REAL_TUMOR_KEY, CaseLists, resolve_cases
from tumorsweep.data.loaders import MixSampler
from tumorsweep.data.transforms import resampled_pair
from tumorsweep.errors import TumorsweepError
from tumorsweep.report.labels import knob_qualifier
from tumorsweep.report.reference import match_published
from tumorsweep.search_space import load_search_space
from tumorsweep.session import LocalSession
from tumorsweep.synthesis import SynthesisConfig, TumorSynthesisd
from tumorsweep.tracking import NullLogger
from tumorsweep.train import build, check_trial, train_epoch, training_cases, uses_synthesis

SMALL = {
    "data.spacing": (2.0, 2.0, 2.0),
    "schedule.patch_size": (32, 32, 32),
    "schedule.epochs": 2,
    "schedule.warmup_epochs": 1,
    "schedule.batch_size": 2,
    "schedule.crops_per_volume": 2,
    "data.loader_workers": 0,
}


@pytest.fixture(scope="module")
def cases(phantom_dir: Path) -> CaseLists:
    return resolve_cases(make_config("demo", {"data.root": str(phantom_dir)}).data)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_the_sampler_draws_the_share_exactly_in_expectation_and_within_one_per_epoch(
    fraction: float,
) -> None:
    is_real = [True] * 3 + [False] * 8  # 3 real-tumour cases, 8 healthy
    length, epochs = 11, 2000
    sampler = MixSampler(is_real, fraction, length, seed=5)
    counts = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == length
        n_real = sum(is_real[i] for i in drawn)
        assert n_real in (math.floor(fraction * length), math.ceil(fraction * length))
        for arm, count in (([0, 1, 2], n_real), (range(3, 11), length - n_real)):
            seen = [i for i in drawn if i in arm]
            # each arm is walked in a random order: no case repeats before all are drawn
            assert len(set(seen)) == min(count, len(arm))
        counts.append(n_real)
    # n_real - f*L is a Bernoulli(p) minus p with p the fractional part of f*L: its mean over
    # the epochs has standard error sqrt(p(1-p)/E); 4 standard errors (+ the float slack)
    p = fraction * length - math.floor(fraction * length)
    bound = 4 * math.sqrt(p * (1 - p) / epochs) + 1e-9
    assert abs(np.mean(counts) - fraction * length) <= bound
    sampler.set_epoch(7)
    again = MixSampler(is_real, fraction, length, seed=5)
    again.set_epoch(7)
    assert list(sampler) == list(again)
    again.set_epoch(8)
    assert list(sampler) != list(again)


def test_the_sampler_refuses_an_arm_with_no_case() -> None:
    with pytest.raises(TumorsweepError, match="no real-tumour case"):
        MixSampler([False, False], 0.5, 2, seed=0)
    with pytest.raises(TumorsweepError, match="no healthy case"):
        MixSampler([True, True], 0.5, 2, seed=0)


def test_a_mixed_trial_trains_on_both_arms_through_the_sampler(cases: CaseLists) -> None:
    torch.manual_seed(0)
    cfg = make_config("demo", {**SMALL, "data.real_fraction": 0.5})
    assert uses_synthesis(cfg)
    trainer = build(cfg, cases, LocalSession(None), NullLogger())
    sampler = trainer.loader.sampler
    assert isinstance(sampler, MixSampler)
    images = [item["image"] for item in trainer.loader.dataset.data]
    real = {e["image"] for e in cases.train_tumor}
    healthy = {e["image"] for e in cases.train}
    assert {images[i] for i in sampler.real} == real
    assert {images[i] for i in sampler.healthy} == healthy
    assert len(sampler) == len(real) + len(healthy)  # an epoch as long as the cases
    assert math.isfinite(train_epoch(trainer, 0)["train_loss"])


def test_the_two_ends_are_the_synthetic_and_real_arms(cases: CaseLists) -> None:
    synthetic = make_config("demo", {"data.real_fraction": 0.0})
    real = make_config("demo", {"data.real_fraction": 1.0})
    # the old spelling, as a config logged before the merge holds it, reads as real_fraction 1
    logged = make_config("demo").model_dump(mode="json")
    logged["data"] = {**logged["data"], "real_tumors": True}
    logged["data"].pop("real_fraction")
    alias = TrialConfig.model_validate(logged)
    healthy = tuple({**e, REAL_TUMOR_KEY: False} for e in cases.train)
    tumour = tuple({**e, REAL_TUMOR_KEY: True} for e in cases.train_tumor)
    assert training_cases(synthetic, cases) == healthy and uses_synthesis(synthetic)
    assert training_cases(real, cases) == tumour and not uses_synthesis(real)
    assert training_cases(alias, cases) == tumour and alias.data.real_fraction == 1.0
    torch.manual_seed(0)
    trainer = build(make_config("demo", {**SMALL, "data.real_fraction": 0.0}), cases,
                    LocalSession(None), NullLogger())  # fmt: skip
    assert not isinstance(trainer.loader.sampler, MixSampler)


def test_real_tumour_samples_keep_their_own_labels(cases: CaseLists) -> None:
    """The synthesis transform of the mix leaves a case that has tumours untouched (Hu's rule),
    even when it always fires: the real arm trains on real labels only."""
    pair = resampled_pair((2.0, 2.0, 2.0))(dict(cases.train_tumor[0]))
    assert int(pair["label"].max()) == 2
    transform = TumorSynthesisd(keys=("image", "label"), config=SynthesisConfig(prob=1.0))
    transform.set_random_state(0)
    out = transform({"image": pair["image"].clone(), "label": pair["label"].clone()})
    assert torch.equal(torch.as_tensor(out["image"]), torch.as_tensor(pair["image"]))
    assert torch.equal(torch.as_tensor(out["label"]), torch.as_tensor(pair["label"]))


def test_mixes_the_study_cannot_run_are_refused(cases: CaseLists) -> None:
    # the old field in an override names the new one; in a config it must agree with it
    with pytest.raises(TumorsweepError, match="data.real_tumors is gone: set data.real_fraction"):
        make_config("demo", {"data.real_tumors": True})
    both = make_config("demo").model_dump(mode="json")
    both["data"] = {**both["data"], "real_tumors": True, "real_fraction": 0.5}
    with pytest.raises(ValidationError, match="set only data.real_fraction"):
        TrialConfig.model_validate(both)
    with pytest.raises(TumorsweepError, match="real_fraction"):
        make_config("demo", {"data.real_fraction": 1.5})
    no_real = CaseLists(**{**cases.__dict__, "train_tumor": ()})
    with pytest.raises(TumorsweepError, match=r"no real-tumour training cases.*needs both"):
        check_trial(make_config("demo", {"data.real_fraction": 0.3}), no_real)


def test_report_labels_and_published_faq_figures() -> None:
    assert knob_qualifier("data.real_fraction", 0.1) == "Real:Synthetic 1:9"
    assert knob_qualifier("data.real_fraction", 0.7) == "Real:Synthetic 7:3"
    assert knob_qualifier("data.real_fraction", 0.0) == "Synthetic"
    assert knob_qualifier("data.real_fraction", 1.0) == "Real"
    ours = {"synthesis.style": "hu", "synthesis.location": "uniform",
            "synthesis.sphere_ratio": 0.0, "data.real_fraction": 0.5}  # fmt: skip
    row = match_published("unet", "hu-val", ours, ["data.real_fraction"])
    assert row[["metric", "value", "source"]].values.tolist() == [["tumor_dice", 0.566, "faq"]]


def test_the_shipped_study_sweeps_the_faq_ratios() -> None:
    space = load_search_space("real_synthetic_mix")
    assert space.sweep["data.real_fraction"]["grid"] == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    assert space.baseline == {"data.real_fraction": 0.0}
    demo = load_search_space("real_synthetic_mix", preset="demo")
    assert demo.seeds == 1 and len(demo.sweep["data.real_fraction"]["grid"]) == 5
