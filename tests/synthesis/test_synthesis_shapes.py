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

from tumorsweep.synthesis.shapes import Blob, deformed_ellipsoid


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


def test_gradient_noise_is_smooth_seeded_bounded_and_zero_on_the_lattice():
    from tumorsweep.synthesis.shapes import GradientNoise

    rng = np.random.default_rng(0)
    noise = GradientNoise(np.random.default_rng(7))
    points = rng.uniform(0, 40, size=(20000, 3))
    values = noise(points)
    assert np.abs(values).max() < 1.1 and 0.1 < values.std() < 0.5
    assert np.allclose(noise(np.floor(points)), 0.0)
    # Lipschitz: |grad| is bounded, so nearby points have nearby values
    step = rng.normal(size=(20000, 3)) * 1e-3
    assert np.abs(noise(points + step) - values).max() < 1e-2
    # continuous across cell faces, seeded
    face = np.floor(points[:100]) + [1.0, 0.3, 0.6]
    assert np.allclose(noise(face - [1e-9, 0, 0]), noise(face + [1e-9, 0, 0]), atol=1e-6)
    assert np.array_equal(GradientNoise(np.random.default_rng(7))(points[:50]), values[:50])
    assert not np.allclose(GradientNoise(np.random.default_rng(8))(points[:50]), values[:50])


def test_zhang_blob_radius_varies_by_the_configured_std():
    from tumorsweep.synthesis.shapes import rotated_noisy_ellipsoid

    rng = np.random.default_rng(2)
    shape = (101, 101, 101)
    lo, _, plain = rotated_noisy_ellipsoid((50, 50, 50), (30, 30, 30), 0.0, shape, rng)
    r2 = np.sum((np.indices(plain.shape) + np.reshape(lo, (3, 1, 1, 1)) - 50.0) ** 2, axis=0)
    clear = np.abs(r2 - 900) > 1e-6  # voxels exactly on the sphere may round either way
    assert np.array_equal(plain[clear], (r2 <= 900)[clear])
    for level in (0.08, 0.15):
        lo, hi, mask = rotated_noisy_ellipsoid((50, 50, 50), (30, 30, 30), level, shape, rng)
        assert lo == (0, 0, 0) or not np.take(mask, 0, axis=0).any()  # reach bound holds
        # boundary radius along random rays, relative to 30: std close to the level
        rays = rng.standard_normal((300, 3))
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        steps = np.arange(0, 50, 0.25)
        points = np.rint(50 + rays[:, None, :] * steps[None, :, None]).astype(int) - lo
        within = np.all((points >= 0) & (points < mask.shape), axis=-1)
        points = np.clip(points, 0, np.array(mask.shape) - 1)
        inside = mask[points[..., 0], points[..., 1], points[..., 2]] & within
        radius = steps[np.argmin(inside, axis=1)] / 30  # first step outside
        assert abs(radius.std() - level) < 0.25 * level + 0.01, (level, radius.std())
        assert abs(radius.mean() - 1) < 0.05
