"""`benchmarks/fidelity.py`'s draw recorder: it notes each event's HU difference and edge-blur
sigma without changing what the synthesis draws (the fidelity's drop/diff rows rest on it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tumorsweep.data import make_phantom_case
from tumorsweep.synthesis import SynthesisConfig, synthesize_tumors

# Loaded by file under its own name: putting benchmarks/ on sys.path would let its
# `synthesis.py` shadow the tests' `synthesis` folder for every test collected after this one.
_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"
_SPEC = importlib.util.spec_from_file_location("benchmark_fidelity", _SCRIPT)
fidelity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fidelity)


def test_recorder_draws_as_default_rng_and_notes_the_events_difference() -> None:
    image, label = make_phantom_case(np.random.default_rng(0), (96, 96, 64))
    label = (label >= 1).astype(np.uint8)
    depth = fidelity.liver_depth(label)
    config = SynthesisConfig(type_probs={"tiny": 0, "small": 1, "medium": 0, "large": 0, "mix": 0})
    recorder = fidelity._DrawRecorder(5, (65.0, 145.0), (1.0, 2.0))
    plain = np.random.default_rng(5)
    differences = []
    for _ in range(3):
        recorder.new_event()
        image_a, label_a = synthesize_tumors(image, label, config, recorder)
        image_b, label_b = synthesize_tumors(image, label, config, plain)
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(label_a, label_b)
        difference, sigma = recorder.drawn["difference"], recorder.drawn["edge_sigma"]
        assert 65 <= difference <= 145 and 1 <= sigma <= 2
        # drop = difference x texture x blur, the last two in [0, 1] (texture ~0.5 inside)
        ratio = fidelity.event_stats(image, image_a, label_a, depth)["hu_drop"] / difference
        assert 0.05 < ratio <= 1
        differences.append(difference)
    assert len(set(differences)) == 3  # one fresh draw per event
