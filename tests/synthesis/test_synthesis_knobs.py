"""Every synthesis knob measured on the production path (`synthesize_tumors`, `_draw_blobs`,
`TumorSynthesisd`), against the distribution the public code (or the knob) defines, with
tolerances from the sampling error: chi-square / KS tests at p > 1e-3 and 4 standard errors.
All seeds are fixed, so a pass is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage, stats
from synthesis_util import liver_case, only  # tests/ is on the path

from tumorsweep.synthesis import SynthesisConfig, TumorSynthesisd, synthesize_tumors
from tumorsweep.synthesis.config import BLOB_TYPES
from tumorsweep.synthesis.synthesize import _draw_blobs

NO_DEFORMATION = {kind: (0.0, 0.0) for kind in BLOB_TYPES}
POINT_BLOBS = {kind: 1.0 for kind in BLOB_TYPES}  # semi-axes 1: a blob is one voxel


def uniform_chi2_p(values: np.ndarray, lo: int, hi: int) -> float:
    """p of a chi-square test that integer `values` are uniform on [lo, hi]."""
    counts = np.bincount(np.asarray(values) - lo, minlength=hi - lo + 1)
    assert len(counts) == hi - lo + 1, "values outside the range"
    return float(stats.chisquare(counts).pvalue)


def cube_liver(n: int = 64, margin: int = 4) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((n, n, n), dtype=np.uint8)
    label[margin:-margin, margin:-margin, margin:-margin] = 1
    image = np.where(label == 1, 110.0, -60.0).astype(np.float32)
    return image, label


@pytest.mark.parametrize("kind", [*BLOB_TYPES, "mix"])
def test_blob_counts_per_type(kind):
    """One-voxel blobs: the tumour voxels of an event are its blobs (centres rarely collide
    in this liver); counts are uniform on the configured range, mix is the sum of four."""
    image, label = liver_case()
    config = only(kind, radius=POINT_BLOBS, elastic_sigma=NO_DEFORMATION)
    rng = np.random.default_rng(11)
    counts = np.array(
        [(synthesize_tumors(image, label, config, rng)[1] == 2).sum() for _ in range(150)]
    )
    if kind != "mix":
        lo, hi = config.counts[kind]
        assert uniform_chi2_p(counts, lo, hi) > 1e-3
        return
    ranges = list(config.mix_counts.values())
    mean = sum((a + b) / 2 for a, b in ranges)
    var = sum(((b - a + 1) ** 2 - 1) / 12 for a, b in ranges)
    assert counts.min() >= sum(a for a, _ in ranges) and counts.max() <= sum(b for _, b in ranges)
    assert abs(counts.mean() - mean) < 4 * np.sqrt(var / len(counts)), (counts.mean(), mean)
    # the variance of a sum of four independent uniforms: chi-square interval at p = 1e-3
    lo_var, hi_var = (
        var * stats.chi2.ppf(q, len(counts) - 1) / (len(counts) - 1) for q in (5e-4, 1 - 5e-4)
    )
    assert lo_var < counts.var(ddof=1) < hi_var


def test_centres_lie_in_the_middle_40_percent_of_the_liver_z_extent():
    """z = z0 + round(U(0.3, 0.7) (z1 - z0)) with [z0, z1] the liver's z-extent inside the box
    [first + 1, last - 1) of the label: the histogram of one-voxel tumours' z follows it."""
    image, label = liver_case()
    config = only("tiny", radius=POINT_BLOBS, elastic_sigma=NO_DEFORMATION)
    rng = np.random.default_rng(2)
    zs = np.concatenate(
        [np.nonzero(synthesize_tumors(image, label, config, rng)[1] == 2)[2] for _ in range(80)]
    )
    nz = np.flatnonzero(label.any(axis=(0, 1)))
    box = label[
        tuple(
            slice(int(s[0]) + 1, int(s[-1]) - 1)
            for s in map(
                np.flatnonzero,
                (label.any(axis=(1, 2)), label.any(axis=(0, 2)), label.any(axis=(0, 1))),
            )
        )
    ]
    inside = np.flatnonzero(box.any(axis=(0, 1))) + nz[0] + 1
    z0, z1 = int(inside[0]), int(inside[-1])
    ks = np.arange(z0, z1 + 1)
    lo = np.clip((ks - z0 - 0.5) / (z1 - z0), 0.3, 0.7)
    hi = np.clip((ks - z0 + 0.5) / (z1 - z0), 0.3, 0.7)
    expected = (hi - lo) / 0.4 * len(zs)
    observed = np.bincount(zs - z0, minlength=len(ks))[: len(ks)]
    assert observed.sum() == len(zs)  # nothing outside the liver's z-extent
    keep = expected > 0
    assert observed[~keep].sum() == 0  # nothing outside the band
    assert stats.chisquare(observed[keep], expected[keep]).pvalue > 1e-3


def full_ellipsoid_axes(tumour: np.ndarray, label: np.ndarray) -> tuple[int, int, int] | None:
    """Semi-axes of a one-blob tumour when it is a whole undeformed ellipsoid (not clipped by
    the liver): extents 2r - 1 or 2r (the public ellipsoid keeps the +r tip when its float
    coordinate rounds below 1)."""
    if not tumour.any():
        return None
    spans = [
        np.flatnonzero(tumour.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)
    ]
    # within 3 voxels of the liver's face it may be clipped (by the liver, or by the box,
    # which leaves out the liver's first layer and last two along each axis)
    grown = ndimage.binary_dilation(tumour, iterations=3)
    if (grown & (label == 0)).any():
        return None
    return tuple(int(np.ceil((s[-1] - s[0] + 1) / 2)) for s in spans)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
def test_sphere_ratio_through_synthesis(ratio):
    """One undeformed blob per event (semi-axes 3-5): a sphere with probability `ratio`, else an
    ellipsoid whose three independent axes coincide by chance (1/9)."""
    image, label = cube_liver()
    config = SynthesisConfig(
        type_probs={"tiny": 1, "small": 0, "medium": 0, "large": 0, "mix": 0},
        counts={"tiny": (1, 1), "small": (1, 1), "medium": (1, 1), "large": (1, 1)},
        elastic_sigma=NO_DEFORMATION,
        sphere_ratio=ratio,
    )
    rng = np.random.default_rng(5)
    axes = []
    for _ in range(260):
        _, new_label = synthesize_tumors(image, label, config, rng)
        found = full_ellipsoid_axes(new_label == 2, label)
        if found:
            axes.append(found)
    axes = np.array(axes)
    assert len(axes) > 150 and axes.min() >= 3 and axes.max() <= 5
    spheres = (axes[:, 0] == axes[:, 1]) & (axes[:, 1] == axes[:, 2])
    p = ratio + (1 - ratio) / 9
    assert abs(spheres.mean() - p) <= 4 * np.sqrt(max(p * (1 - p), 1e-12) / len(axes)) + 1e-9
    if ratio == 1.0:  # the sphere's radius is one of the three drawn axes: uniform on 3..5
        assert uniform_chi2_p(axes[:, 0], 3, 5) > 1e-3


@pytest.mark.parametrize("kind", BLOB_TYPES)
def test_semi_axes_and_deformation_sigma_per_type(kind):
    """Hu: each semi-axis uniform on [floor(0.75 r0), floor(1.25 r0)]; sigma U(0.5, 1) for tiny,
    a uniform integer of [lo, hi] for the others; here with non-default r0 too."""
    rng = np.random.default_rng(3)
    for r0 in (SynthesisConfig().radius[kind], 10.0):
        config = only(kind, radius={**SynthesisConfig().radius, kind: r0})
        blobs = [b for _ in range(120) for b in _draw_blobs(config, rng, lambda kind: (0, 0, 0))]
        axes = np.array([b.semi_axes for b in blobs])
        # the three axes are independent draws of the same law: one test on all of them
        assert uniform_chi2_p(axes.ravel(), int(0.75 * r0), int(1.25 * r0)) > 1e-3
        sigmas = np.array([b.elastic_sigma for b in blobs])
        lo, hi = config.elastic_sigma[kind]
        if kind == "tiny":
            assert stats.kstest(sigmas, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
        else:
            assert np.all(sigmas == np.rint(sigmas))
            assert uniform_chi2_p(sigmas.astype(int), int(lo), int(hi)) > 1e-3


def test_type_probabilities():
    probs = {"tiny": 0.1, "small": 0.2, "medium": 0.3, "large": 0.4, "mix": 0.0}
    config = SynthesisConfig(type_probs=probs)
    rng = np.random.default_rng(8)
    counts = {"tiny": 0, "small": 0, "medium": 0, "large": 0}
    for _ in range(2000):
        blobs = _draw_blobs(config, rng, lambda kind: (0, 0, 0))
        kinds = {
            k
            for k in counts
            if blobs[0].semi_axes[0]
            in range(int(0.75 * config.radius[k]), int(1.25 * config.radius[k]) + 1)
        }
        counts[min(kinds, key=lambda k: config.radius[k])] += 1
    observed = np.array(list(counts.values()))
    # tiny (3-5) and small (6-10) axis ranges do not overlap; medium 12-20, large 24-40
    assert stats.chisquare(observed, 2000 * np.array([0.1, 0.2, 0.3, 0.4])).pvalue > 1e-3


def test_transform_gate_probability():
    """TumorSynthesisd applies with probability `prob` (Hu: 0.9), drawn from MONAI's R."""
    image, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    transform = TumorSynthesisd(config=only("tiny", prob=0.9)).set_random_state(4)
    n, applied = 300, 0
    for _ in range(n):
        sample = {
            "image": MetaTensor(torch.from_numpy(image.copy())[None]),
            "label": MetaTensor(torch.from_numpy(label.astype(np.float32))[None]),
        }
        applied += int((transform(sample)["label"] == 2).any())
    assert abs(applied / n - 0.9) <= 4 * np.sqrt(0.9 * 0.1 / n)


def test_hu_drop_is_texture_times_delta_inside_the_liver():
    """With no edge blur and a fixed delta, I drops by T * delta exactly on the tumour and
    nowhere else; T's mean is u0 times the bank's mean(T) / u0 (0.973-1.000 over its ten
    textures); with a blur of sigma s the drop reaches at most 3 s voxels beyond the tumour,
    only inside the liver."""
    image, label = liver_case()
    texture = {"hu_drop": [100.0, 100.0], "u0": [0.5, 0.5], "draws": "per_event"}
    sharp = only("medium", texture={**texture, "edge_blur": [0.0, 0.0]})
    rng = np.random.default_rng(6)
    ratios = []
    for _ in range(30):
        new_image, new_label = synthesize_tumors(image, label, sharp, rng)
        drop = (image - new_image).astype(np.float64)
        tumour = new_label == 2
        assert np.all(drop[~tumour] == 0) and drop[tumour].min() >= 0
        assert drop[tumour].max() <= 100 + 1e-3
        ratios.append(drop[tumour].mean() / 100)
    ratios = np.array(ratios)
    se = ratios.std(ddof=1) / np.sqrt(len(ratios))
    assert 0.5 * 0.973 - 4 * se < ratios.mean() < 0.5 * 1.0 + 4 * se, (ratios.mean(), se)
    blurred = only("medium", texture={**texture, "edge_blur": [2.0, 2.0]})
    new_image, new_label = synthesize_tumors(image, label, blurred, rng)
    changed = image != new_image
    assert np.all(label[changed] == 1)
    near = ndimage.binary_dilation(new_label == 2, np.ones((3, 3, 3), bool), iterations=6)
    assert not (changed & ~near).any() and (changed & ~(new_label == 2)).any()
