"""TumorSynthesisd: gate, no-tumour rule, MONAI seeding, types and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep.synthesis import SynthesisConfig, TumorSynthesisd


def sample(with_tumour: bool = False) -> dict:
    image, label = liver_case(shape=(48, 44, 40), radii=(18, 16, 14))
    if with_tumour:
        label[24, 22, 20] = 2
    affine = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0], dtype=torch.float64))
    return {
        "image": MetaTensor(torch.from_numpy(image)[None], affine=affine),
        "label": MetaTensor(torch.from_numpy(label.astype(np.float32))[None], affine=affine),
    }


def count_tumour(d: dict) -> int:
    return int((d["label"] == 2).sum())


def test_gate_probability_and_identity_when_disabled():
    transform = TumorSynthesisd(config=SynthesisConfig(prob=0.5)).set_random_state(0)
    applied = [count_tumour(transform(sample())) > 0 for _ in range(40)]
    assert 10 <= sum(applied) <= 30
    off = TumorSynthesisd(config=SynthesisConfig(enabled=False, prob=1.0))
    data = sample()
    out = off(data)
    assert torch.equal(out["image"], data["image"]) and count_tumour(out) == 0


def test_skips_samples_that_already_have_tumours():
    transform = TumorSynthesisd(config=SynthesisConfig(prob=1.0)).set_random_state(0)
    data = sample(with_tumour=True)
    out = transform(data)
    assert count_tumour(out) == 1 and torch.equal(out["image"], data["image"])


def test_keeps_types_and_meta_and_seeds_differ():
    config = SynthesisConfig(prob=1.0)
    outs = [TumorSynthesisd(config=config).set_random_state(s)(sample()) for s in (1, 1, 2)]
    assert isinstance(outs[0]["image"], MetaTensor) and outs[0]["image"].shape == (1, 48, 44, 40)
    assert float(outs[0]["image"].affine[2, 2]) == 2.5
    assert outs[0]["label"].dtype == torch.float32
    assert torch.equal(outs[0]["label"], outs[1]["label"])
    assert not torch.equal(outs[0]["label"], outs[2]["label"])


def test_picklable_and_works_in_cache_dataset():
    transform = pickle.loads(pickle.dumps(TumorSynthesisd(config=SynthesisConfig(prob=1.0))))
    dataset = CacheDataset([sample(), sample()], transform=Compose([transform]), progress=False)
    assert all(count_tumour(dataset[i]) > 0 for i in range(2))
    assert count_tumour(dataset.data[0]) == 0  # the cached input is never modified


def test_writes_into_the_sample_in_place_or_copies_once_when_asked():
    config = SynthesisConfig(prob=1.0)
    data = sample()
    image_ptr, label_ptr = data["image"].data_ptr(), data["label"].data_ptr()
    out = TumorSynthesisd(config=config).set_random_state(3)(data)
    assert out["image"].data_ptr() == image_ptr and out["label"].data_ptr() == label_ptr
    assert count_tumour(data) > 0  # the sample's own tensors hold the tumours
    data = sample()
    out = TumorSynthesisd(config=config, inplace=False).set_random_state(3)(data)
    assert count_tumour(out) > 0 and count_tumour(data) == 0
    assert torch.equal(data["image"], sample()["image"])
