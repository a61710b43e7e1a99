"""Zhang et al.'s (Sim2Real, JBHI 2023) texture step: a deformed, blurred region of the scan as
the texture source, and the contrast the paper's ranges imply (alpha ~ U(0.2, 0.8), mean
divided by f ~ U(1, 3)) at the tumours' cores."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep.synthesis import SynthesisConfig, synthesize_tumors
from tumorsweep.synthesis.config import TUMOR_TYPES


def zhang(**knobs) -> SynthesisConfig:
    return SynthesisConfig(
        style="zhang", type_probs={t: float(t == "small") for t in TUMOR_TYPES}, zhang=knobs
    )


def test_core_contrast_matches_the_papers_ranges():
    """Per event the core drop is alpha (L - L / f) for liver mean L (the texture's own grain
    averages out over the core); over events its mean is L E[alpha] (1 - E[1/f]) =
    L * 0.5 * (1 - ln 3 / 2). Tolerance: 4 standard errors of the events' mean."""
    image, label = liver_case()
    liver_mean = float(image[label == 1].mean())
    expected = liver_mean * 0.5 * (1 - math.log(3) / 2)
    drops = []
    for seed in range(40):
        new_image, new_label = synthesize_tumors(image, label, zhang(), np.random.default_rng(seed))
        core = ndimage.binary_erosion(new_label == 2, iterations=3)
        if core.any():
            drops.append(float((image - new_image)[core].mean()))
    drops = np.array(drops)
    assert len(drops) >= 30
    error = drops.std(ddof=1) / math.sqrt(len(drops))
    assert abs(drops.mean() - expected) < 4 * error, (drops.mean(), expected, error)
    assert 15 < expected < 35  # ~25 HU on a 110 HU liver: fainter than Hu's ~45 HU


def test_texture_source_is_deformed_and_reproducible():
    image, label = liver_case()
    runs = {
        name: synthesize_tumors(image, label, zhang(**knobs), np.random.default_rng(3))
        for name, knobs in {
            "region": {},
            "again": {},
            "undeformed": {"deform_magnitude": 0.0},
            "in_place": {"texture_source": "in_place"},
        }.items()
    }
    assert np.array_equal(runs["region"][0], runs["again"][0])
    tumour = runs["region"][1] == 2
    assert tumour.sum() > 50
    # same shapes (drawn before the texture), other textures
    for other in ("undeformed", "in_place"):
        assert np.array_equal(runs[other][1], runs["region"][1])
        # the liver is 10 HU white noise: blurred (sigma 1-2) and blended, textures differ by
        # a fraction of an HU on average
        assert np.abs(runs[other][0] - runs["region"][0])[tumour].mean() > 0.2
    # outside the liver nothing changes
    assert np.array_equal(runs["region"][0][label == 0], image[label == 0])
