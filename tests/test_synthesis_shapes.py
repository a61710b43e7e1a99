"""Blob shapes against a reference of the public recipe written from its description.

Hu et al.: a solid ellipsoid in a 4r-wide array (np.ogrid from -1 to 1 per axis, voxels with
1 - sum of squares > 0), then elasticdeform's `deform_random_grid(sigma, points=3, order=0)`
on the planes (0, 1), (1, 2), (0, 2). elasticdeform documents that algorithm as: a 3x3 grid
of N(0, sigma^2) displacements per plane, spread over the image (control point k at pixel
k (n - 1) / 2), interpolated with a cubic B-spline (scipy's spline filter, mirror boundary),
the same for every slice along the third axis; output(x) = input(round(x + d(x))), the
constant 0 where x + d(x) leaves [0, n - 1]. Here scipy's `map_coordinates` does the spline
interpolation, so the oracle shares no code with ours.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from core.synthesis.shapes import Blob, deformed_ellipsoid


def reference_ellipsoid(r: tuple[int, int, int]) -> np.ndarray:
    frame = np.zeros(tuple(4 * a for a in r), dtype=bool)
    axes = np.ogrid[tuple(slice(-1.0, 1.0, 1j * (2 * a + 1)) for a in r)]
    inside = (1 - sum(np.square(g) for g in axes)) > 0
    frame[tuple(slice(a, 3 * a + 1) for a in r)] = inside
    return frame


def reference_pass(volume: np.ndarray, plane: tuple[int, int], control: np.ndarray) -> np.ndarray:
    a, b = plane
    n_a, n_b = volume.shape[a], volume.shape[b]
    cp = np.meshgrid(
        2.0 * np.arange(n_a) / (n_a - 1), 2.0 * np.arange(n_b) / (n_b - 1), indexing="ij"
    )
    disp = [ndimage.map_coordinates(control[k], cp, order=3, mode="mirror") for k in range(2)]
    pos = [np.arange(n_a)[:, None] + disp[0], np.arange(n_b)[None, :] + disp[1]]
    valid = (pos[0] >= 0) & (pos[0] <= n_a - 1) & (pos[1] >= 0) & (pos[1] <= n_b - 1)
    src = [
        np.clip(np.floor(p + 0.5).astype(int), 0, n - 1)
        for p, n in zip(pos, (n_a, n_b), strict=True)
    ]
    moved = np.moveaxis(volume, (a, b), (0, 1))  # (n_a, n_b, rest)
    out = moved[src[0], src[1]] & valid[:, :, None]
    return np.moveaxis(out, (0, 1), (a, b))


def reference_blob(r, sigma, rng) -> np.ndarray:
    volume = reference_ellipsoid(r)
    for plane in ((0, 1), (1, 2), (0, 2)):
        volume = reference_pass(volume, plane, rng.normal(0.0, sigma, size=(2, 3, 3)))
    return volume


CASES = [
    ((3, 3, 3), 0.7),
    ((3, 4, 5), 1.0),
    ((5, 5, 4), 0.9),
    ((6, 8, 10), 1.0),
    ((9, 7, 8), 2.0),
    ((12, 14, 19), 3.0),
    ((20, 16, 13), 6.0),
    ((27, 32, 24), 10.0),  # large: displacements reach the frame's faces
    ((8, 8, 8), 7.0),  # sigma close to r: parts of the blob leave the frame
]


@pytest.mark.parametrize(("axes", "sigma"), CASES)
def test_deformed_ellipsoid_equals_the_public_recipe(axes, sigma):
    for seed in range(3):
        expected = reference_blob(axes, sigma, np.random.default_rng(seed))
        centre = tuple(2 * a for a in axes)  # frame voxel f lies at centre - 2r + f = f
        lo, hi, mask = deformed_ellipsoid(
            Blob(centre, axes, sigma), expected.shape, np.random.default_rng(seed)
        )
        got = np.zeros(expected.shape, dtype=bool)
        got[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = mask
        assert np.array_equal(got, expected), (axes, sigma, seed, got.sum(), expected.sum())
        assert expected.any()


def test_blob_clipped_by_the_volume_border():
    axes, sigma = (10, 8, 6), 2.0
    expected = reference_blob(axes, sigma, np.random.default_rng(4))
    # centre 3 voxels from the low x face and 2 from the high z face of a 30^3 volume
    centre, shape = (3, 15, 27), (30, 30, 30)
    lo, hi, mask = deformed_ellipsoid(Blob(centre, axes, sigma), shape, np.random.default_rng(4))
    got = np.zeros(shape, dtype=bool)
    got[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = mask
    start = [c - 2 * a for c, a in zip(centre, axes, strict=True)]
    want = np.zeros(shape, dtype=bool)
    ends = zip(start, expected.shape, shape, strict=True)
    dst = tuple(slice(max(0, s), min(n, s + m)) for s, m, n in ends)
    src = tuple(slice(d.start - s, d.stop - s) for d, s in zip(dst, start, strict=True))
    want[dst] = expected[src]
    assert want.any() and np.array_equal(got, want)


def test_zero_sigma_is_the_plain_ellipsoid():
    axes = (7, 5, 9)
    lo, hi, mask = deformed_ellipsoid(
        Blob(tuple(2 * a for a in axes), axes, 0.0), (28, 20, 36), np.random.default_rng(0)
    )
    got = np.zeros((28, 20, 36), dtype=bool)
    got[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = mask
    assert np.array_equal(got, reference_ellipsoid(axes))
