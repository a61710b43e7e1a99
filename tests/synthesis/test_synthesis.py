"""Correctness of the synthesis engine on small ellipsoidal liver phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from synthesis_util import ALL_TYPES, liver_case, only  # tests/ is on the path

from tumorsweep.errors import TumorsweepError
from tumorsweep.synthesis import SynthesisConfig, synthesize_tumors


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
        (np.float32, "three", "0, 1 or 2"),
        (np.float32, "bool", "label dtype bool"),
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
    elif label == "bool":
        good = good.astype(bool)
    with pytest.raises(TumorsweepError, match=message):
        synthesize_tumors(
            image.astype(image_dtype), good, SynthesisConfig(), np.random.default_rng(0)
        )


def test_config_rejects_bad_knobs_naming_the_field():
    with pytest.raises(ValidationError, match="sphere_ratio"):
        SynthesisConfig(sphere_ratio=1.5)
    with pytest.raises(ValidationError, match="huge"):
        SynthesisConfig(type_probs={"huge": 1.0})
    with pytest.raises(
        ValidationError, match=r"texture\.hu_drop\n.*low \(150\) must be <= high \(100\)"
    ):
        SynthesisConfig(texture={"hu_drop": [150.0, 100.0]})


def reference_scan(label: np.ndarray) -> tuple:
    """The public code's liver box (np.any per axis, [first + 1, last - 1)), whether the label
    has tumour, and the liver's first and last z-slice inside that box."""
    spans = [
        np.flatnonzero(np.any(label, axis=tuple(a for a in range(3) if a != k))) for k in range(3)
    ]
    lo = tuple(int(s[0]) + 1 for s in spans)
    hi = tuple(int(s[-1]) - 1 for s in spans)
    box = label[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    z = np.flatnonzero(np.any(box, axis=(0, 1)))
    return lo, hi, bool(np.any(label == 2)), (int(z[0]), int(z[-1]))


@pytest.mark.parametrize("tumour", [False, True])
def test_label_scan_on_every_layout_and_dtype(tumour):
    from tumorsweep.synthesis.synthesize import scan_label

    _, label = liver_case(shape=(50, 44, 40), radii=(15, 12, 10), centre=(20, 25, 18))
    label[3, 5, 30] = 1  # an outlying liver voxel sets the box's corner
    if tumour:
        label[20, 25, 18] = 2
    variants = {
        "C uint8": label,
        "int16": label.astype(np.int16),
        "float32": label.astype(np.float32),
        "float64 Fortran": np.asfortranarray(label.astype(np.float64)),
        "Fortran": np.asfortranarray(label),
        "flipped x": label[::-1],
        "flipped z, Fortran": np.asfortranarray(label)[:, :, ::-1],
        "transposed": label.transpose(1, 0, 2),
        "cropped": label[:, :, :37],
        "negative zero": np.where(label == 0, np.float32(-0.0), label.astype(np.float32)),
    }
    if not tumour:
        variants["bool"] = label.astype(bool)
    # a box of a larger array (the training cache's liver box): liver all around it, unseen
    outer = np.ones((58, 50, 47), dtype=np.uint8)
    box = (slice(4, 54), slice(5, 49), slice(6, 46))
    outer[box] = label
    variants["box of a C array"] = outer[box]
    variants["box of a Fortran array"] = np.asfortranarray(outer)[box]
    variants["box of a flipped float32 array"] = outer.astype(np.float32)[::-1][::-1][box]
    variants["box of a C array, flipped y"] = outer[:, ::-1][box][:, ::-1]
    for name, variant in variants.items():
        scan = scan_label(variant)
        got = (scan.lo, scan.hi, scan.has_tumour, scan.z_range)
        assert got == reference_scan(variant), name
        assert scan.liver_lower_bound <= np.count_nonzero(
            variant[tuple(slice(a, b) for a, b in zip(scan.lo, scan.hi, strict=True))] >= 1
        )


@pytest.mark.parametrize(
    ("bad", "message"),
    [(np.nan, "NaN"), (-1.0, "negative"), (3.0, "0, 1 or 2"), (2.5, "0, 1 or 2")],
)
def test_label_scan_rejects_bad_values(bad, message):
    from tumorsweep.synthesis.synthesize import scan_label

    _, label = liver_case(shape=(30, 30, 30), radii=(10, 10, 10))
    label = label.astype(np.float32)
    label[15, 15, 15] = bad
    with pytest.raises(TumorsweepError, match=message):
        scan_label(label)


def test_uniform_centres_are_uniform_over_the_eroded_slice():
    from scipy import ndimage

    from tumorsweep.synthesis.location import uniform_centre

    _, label = liver_case(shape=(40, 36, 20), radii=(14, 10, 8))
    rng = np.random.default_rng(0)
    z_levels = np.flatnonzero(label.any(axis=(0, 1)))
    z_range = int(z_levels[0]), int(z_levels[-1])
    centres = np.array([uniform_centre(label, rng, z_range, {}) for _ in range(3000)])
    z = np.bincount(centres[:, 2]).argmax()
    eroded = ndimage.binary_erosion(label[:, :, z] > 0, np.ones((5, 5), bool), border_value=1)
    picks = centres[centres[:, 2] == z]
    assert np.all(eroded[picks[:, 0], picks[:, 1]])
    # every eroded pixel about equally likely: the pick counts are Poisson-like
    counts = np.bincount(np.ravel_multi_index(picks[:, :2].T, eroded.shape), minlength=eroded.size)
    counts = counts[eroded.ravel()]
    assert counts.var() < 2.0 * counts.mean()


def test_same_tumours_on_every_memory_layout_and_dtype():
    """The values decide, not the layout: C, Fortran (as nibabel returns) and other dtypes give
    the same tumours for the same seed; outputs keep the input's dtype and layout."""
    image, label = liver_case()
    config = only("mix")
    ref_image, ref_label = synthesize_tumors(image, label, config, np.random.default_rng(3))
    assert (ref_label == 2).sum() > 100
    variants = [
        (np.asfortranarray(image), np.asfortranarray(label)),
        (image.astype(np.float64), label.astype(np.int16)),
        (image, label.astype(np.float32)),
        (np.asfortranarray(image), np.asfortranarray(label.astype(np.float32))),
    ]
    for img, lab in variants:
        new_image, new_label = synthesize_tumors(img, lab, config, np.random.default_rng(3))
        assert new_image.dtype == img.dtype and new_label.dtype == lab.dtype
        assert new_image.flags.f_contiguous == img.flags.f_contiguous
        assert np.allclose(new_image, ref_image, atol=1e-3)
        assert np.array_equal(new_label, ref_label)
    # a flipped view is a different geometry (other tumours), still valid and inputs untouched
    flipped_image, flipped_label = image[::-1, :, ::-1], label[::-1, :, ::-1]
    before = flipped_image.copy()
    new_image, new_label = synthesize_tumors(
        flipped_image, flipped_label, config, np.random.default_rng(3)
    )
    assert np.array_equal(flipped_image, before) and flipped_label.max() == 1
    assert (new_label == 2).sum() > 100 and np.all(flipped_label[new_label == 2] == 1)
    assert np.array_equal(new_image[flipped_label == 0], flipped_image[flipped_label == 0])


def test_edge_blur_is_scipys_reflecting_gaussian_on_the_liver_box():
    """Hu blurs the tumour mask over the liver box with scipy's default reflecting border;
    ours works region by region: the same values, also where a region meets the box's faces."""
    from scipy.ndimage import gaussian_filter

    from tumorsweep.synthesis.synthesize import _BLUR_TRUNCATE, _blurred

    rng = np.random.default_rng(0)
    mask = np.zeros((30, 26, 22), dtype=bool)
    mask[0:6, 10:15, 18:22] = True  # touching three faces
    mask[12:20, 2:9, 5:12] = rng.random((8, 7, 7)) < 0.7
    boxes = [((0, 10, 18), (6, 15, 22)), ((12, 2, 5), (20, 9, 12))]  # the blobs' boxes
    for sigma in (1.0, 1.7):
        radius = int(_BLUR_TRUNCATE * sigma + 0.5)
        expected = gaussian_filter(mask.astype(np.float64), sigma, truncate=_BLUR_TRUNCATE)
        for region in (
            ((0, 8, 16), (8, 17, 22)),
            ((10, 0, 3), (22, 11, 14)),
            ((0, 0, 0), mask.shape),
        ):
            got = _blurred(mask, region, sigma, radius, boxes)
            want = expected[tuple(slice(a, b) for a, b in zip(*region, strict=True))]
            assert np.allclose(got, want, atol=1e-5), (sigma, region)
