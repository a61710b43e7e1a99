"""Correctness of the synthesis engine on small ellipsoidal liver phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from core.errors import TumorsweepError
from core.synthesis import SynthesisConfig, synthesize_tumors

ALL_TYPES = ("tiny", "small", "medium", "large", "mix")


def only(tumor_type: str, **kwargs) -> SynthesisConfig:
    probs = {t: float(t == tumor_type) for t in ALL_TYPES}
    return SynthesisConfig(type_probs=probs, **kwargs)


def liver_case(
    shape=(72, 64, 56), radii=(28, 24, 20), centre=None, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid liver at ~110 HU with 10 HU noise in a -60 HU body."""
    centre = centre or tuple(n // 2 for n in shape)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) < 1
    rng = np.random.default_rng(seed)
    image = np.where(inside, 110.0, -60.0) + rng.normal(0, 10, shape)
    return image.astype(np.float32), inside.astype(np.uint8)


@pytest.mark.parametrize("tumor_type", ALL_TYPES)
def test_tumours_stay_in_liver_and_ct_changes_only_there(tumor_type):
    image, label = liver_case()
    new_image, new_label = synthesize_tumors(
        image, label, only(tumor_type), np.random.default_rng(1)
    )
    assert set(np.unique(new_label)) <= {0, 1, 2}
    assert (new_label == 2).sum() > 0
    assert np.all(label[new_label == 2] == 1)
    assert np.array_equal(new_label == 0, label == 0)
    assert np.array_equal(new_image[label == 0], image[label == 0])
    assert new_label.dtype == label.dtype and new_image.dtype == image.dtype
    # inputs untouched
    assert label.max() == 1


def test_hu_drop_within_configured_range():
    image, label = liver_case()
    config = only("medium")
    drops = []
    for seed in range(6):
        new_image, new_label = synthesize_tumors(image, label, config, np.random.default_rng(seed))
        drop = image - new_image
        core = new_label == 2
        assert drop.min() >= -1e-3  # the CT only darkens
        assert drop[core].max() <= config.texture.hu_drop_max + 1e-3
        drops.append(np.median(drop[core]))
    # texture mean ~0.52 times blur (~0.8-1 inside) times delta in [65, 145]
    assert 0.3 * 65 < np.median(drops) < 0.6 * 145


def test_same_seed_same_tumours_different_seed_different():
    image, label = liver_case()
    a = synthesize_tumors(image, label, SynthesisConfig(), np.random.default_rng(7))
    b = synthesize_tumors(image, label, SynthesisConfig(), np.random.default_rng(7))
    c = synthesize_tumors(image, label, SynthesisConfig(), np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_liver_touching_volume_border_and_tiny_liver_large_tumours():
    image, label = liver_case(shape=(40, 36, 30), radii=(22, 20, 16), centre=(5, 30, 2))
    for seed in range(5):
        _, new_label = synthesize_tumors(image, label, only("large"), np.random.default_rng(seed))
        assert np.all(label[new_label == 2] == 1)


@pytest.mark.parametrize(
    ("image_dtype", "label", "message"),
    [
        (np.int16, None, "image dtype int16"),
        (np.float32, "empty", "no liver"),
        (np.float32, "speck", "too small"),
        (np.float32, "three", "label values"),
    ],
)
def test_bad_input_raises_clear_error(image_dtype, label, message):
    image, good = liver_case(shape=(24, 24, 24), radii=(8, 8, 8))
    if label == "empty":
        good = np.zeros_like(good)
    elif label == "speck":
        good = np.zeros_like(good)
        good[10:12, 10:12, 10:12] = 1
    elif label == "three":
        good = good * 3
    with pytest.raises(TumorsweepError, match=message):
        synthesize_tumors(
            image.astype(image_dtype), good, SynthesisConfig(), np.random.default_rng(0)
        )


def test_config_rejects_bad_knobs_naming_the_field():
    with pytest.raises(ValidationError, match="sphere_ratio"):
        SynthesisConfig(sphere_ratio=1.5)
    with pytest.raises(ValidationError, match="huge"):
        SynthesisConfig(type_probs={"huge": 1.0})
    with pytest.raises(ValidationError, match="hu_drop_min"):
        SynthesisConfig(texture={"hu_drop_min": 150.0, "hu_drop_max": 100.0})


def test_liver_box_same_for_every_label_layout():
    from core.synthesis.synthesize import _liver_box

    _, label = liver_case(shape=(50, 44, 40), radii=(15, 12, 10), centre=(20, 25, 18))
    expected = _liver_box(label)
    for variant in (
        label.astype(np.int16),
        label.astype(bool),
        label.astype(np.float32),
        np.asfortranarray(label),
        label[:, :, :37],
    ):
        assert _liver_box(variant) == expected


def test_uniform_centres_are_uniform_over_the_eroded_slice():
    from scipy import ndimage

    from core.synthesis.location import uniform_centre

    _, label = liver_case(shape=(40, 36, 20), radii=(14, 10, 8))
    rng = np.random.default_rng(0)
    z_levels = np.flatnonzero(label.any(axis=(0, 1)))
    centres = np.array([uniform_centre(label, rng, z_levels, {}) for _ in range(3000)])
    z = np.bincount(centres[:, 2]).argmax()
    eroded = ndimage.binary_erosion(label[:, :, z] > 0, np.ones((5, 5), bool), border_value=1)
    picks = centres[centres[:, 2] == z]
    assert np.all(eroded[picks[:, 0], picks[:, 1]])
    # every eroded pixel about equally likely: the pick counts are Poisson-like
    counts = np.bincount(np.ravel_multi_index(picks[:, :2].T, eroded.shape), minlength=eroded.size)
    counts = counts[eroded.ravel()]
    assert counts.var() < 2.0 * counts.mean()
