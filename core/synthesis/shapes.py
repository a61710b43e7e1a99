"""Tumour blob shapes evaluated directly on a box: deformed ellipsoids (Hu) and noisy rotated
ellipsoids (Zhang).

Instead of drawing an ellipsoid in a 4r-wide array and warping it three times (one planar
elastic pass per axis pair, as the original does), a voxel x belongs to the blob when
round(x + d(x)) lies inside the ellipsoid, where d is one smooth 3-D displacement field
interpolated from 3x3x3 random control vectors spread over that 4r-wide frame. Only the
ellipsoid's box plus the largest displacement along each axis is evaluated, and large boxes are
first scanned on every other voxel so that the exact test runs on the blob's own box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Std factor of the single 3-D field relative to one planar pass: each axis is displaced by
# two of the three planar passes, so its total displacement std is sqrt(2) sigma.
PLANAR_EQUIVALENT_SCALE = float(np.sqrt(2.0))
_CONTROL_POINTS = 3
_REACH_GRID = 17
# |f''| <= 16 * 1.25^2 max|C| along an axis for the quadratic basis; between grid points
# (spacing h = 1/16) a maximum can exceed the grid's by at most h^2 / 8 * |f''| ~ 0.012 max|C|.
_BETWEEN_GRID = 0.02
_COARSE_MIN_VOXELS = 48**3  # boxes from here on are first scanned on every other voxel
_COARSE_THRESHOLD = 2.0  # relaxed squared radius for that scan (exactness is checked after)
_COARSE_MARGIN = 3


@dataclass(frozen=True)
class Blob:
    """One tumour blob: centre and semi-axes in voxels, displacement std (Hu) of its shape."""

    centre: tuple[int, int, int]
    semi_axes: tuple[int, int, int]
    elastic_sigma: float


def _quadratic_basis(t: np.ndarray) -> np.ndarray:
    """Lagrange basis through control points at t = 0, 0.5, 1 (shape (len(t), 3))."""
    return np.stack([2 * (t - 0.5) * (t - 1), -4 * t * (t - 1), 2 * t * (t - 0.5)], axis=1)


def _clip_box(
    centre: tuple[int, ...], half: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lo = tuple(max(0, c - h) for c, h in zip(centre, half, strict=True))
    hi = tuple(min(n, c + h + 1) for c, h, n in zip(centre, half, shape, strict=True))
    return lo, hi


def deformed_ellipsoid(
    blob: Blob, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """Mask of a deformed ellipsoid clipped to a volume of `shape`: (lo, hi, mask of [lo, hi))."""
    control = rng.normal(
        0.0,
        blob.elastic_sigma * PLANAR_EQUIVALENT_SCALE,
        size=(3, _CONTROL_POINTS, _CONTROL_POINTS, _CONTROL_POINTS),
    ).astype(np.float32)
    # Per axis, the blob reaches r + max|d_a| from its centre: max|d_a| on a 17^3 grid of the
    # frame, plus a bound on what the tri-quadratic can add between grid points, plus rounding.
    grid = _quadratic_basis(np.linspace(0.0, 1.0, _REACH_GRID, dtype=np.float32))
    half = []
    for axis, r in enumerate(blob.semi_axes):
        coeff = control[axis]
        values = grid @ np.matmul(grid, coeff @ grid.T).reshape(_CONTROL_POINTS, -1)
        peak = float(np.abs(values).max())
        reach = int(np.ceil(peak + _BETWEEN_GRID * float(np.abs(coeff).max()))) + 1
        half.append(int(min(r + reach, 2 * r)))
    lo, hi = _clip_box(blob.centre, half, shape)
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        return lo, hi, np.zeros([max(0, b - a) for a, b in zip(lo, hi, strict=True)], bool)
    # The quadratic basis reproduces linear functions, so adding each control point's own
    # frame coordinate minus 2r to the displacement gives x + d(x) - 2r in one contraction.
    nodes = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    coeffs = []
    for axis, r in enumerate(blob.semi_axes):
        offset = nodes * np.float32(max(4 * r - 1, 1)) - np.float32(2 * r)
        coeffs.append(control[axis] + offset.reshape([-1 if i == axis else 1 for i in range(3)]))
    if np.prod(np.subtract(hi, lo)) >= _COARSE_MIN_VOXELS:
        # Large boxes are mostly empty: locate the blob on every other voxel with a relaxed
        # threshold, evaluate exactly on its box plus a margin, and keep that result only if
        # the blob does not touch a face of the reduced box that lies inside the full one.
        coarse = _normalised_radius2(blob, coeffs, lo, hi, 2) < _COARSE_THRESHOLD
        if coarse.any():
            sub_lo, sub_hi = [], []
            for axis in range(3):
                seen = np.flatnonzero(coarse.any(axis=tuple(a for a in range(3) if a != axis)))
                sub_lo.append(max(lo[axis], lo[axis] + 2 * int(seen[0]) - _COARSE_MARGIN))
                sub_hi.append(min(hi[axis], lo[axis] + 2 * int(seen[-1]) + 1 + _COARSE_MARGIN))
            mask = _normalised_radius2(blob, coeffs, sub_lo, sub_hi, 1) < 1
            if not _touches_inner_face(mask, sub_lo, sub_hi, lo, hi):
                return tuple(sub_lo), tuple(sub_hi), mask
    return lo, hi, _normalised_radius2(blob, coeffs, lo, hi, 1) < 1


def _touches_inner_face(mask, sub_lo, sub_hi, lo, hi) -> bool:
    """Whether `mask` (on [sub_lo, sub_hi)) is set on a face that is not a face of [lo, hi)."""
    for axis in range(3):
        for index, inner in ((0, sub_lo[axis] > lo[axis]), (-1, sub_hi[axis] < hi[axis])):
            if inner and np.take(mask, index, axis=axis).any():
                return True
    return False


def _normalised_radius2(blob: Blob, coeffs: list[np.ndarray], lo, hi, stride: int) -> np.ndarray:
    """sum_a (rint(x_a + d_a(x) - 2 r_a) / r_a)^2 on voxels lo + stride * k inside [lo, hi)."""
    # Coordinates in the blob's 4r-wide frame (centre at 2r), normalised to [0, 1] per axis.
    bases = [
        _quadratic_basis(
            (np.arange(a, b, stride, dtype=np.float32) - (c - 2 * r))
            / np.float32(max(4 * r - 1, 1))
        )
        for a, b, c, r in zip(lo, hi, blob.centre, blob.semi_axes, strict=True)
    ]
    sizes = [len(b) for b in bases]
    total = np.empty(sizes, dtype=np.float32)
    shift = np.empty(sizes, dtype=np.float32)
    for axis in range(3):
        # d(x, y, z) = sum_ijk Bx[x,i] By[y,j] Bz[z,k] C[i,j,k]: contract z, then y, then x.
        yz = np.matmul(bases[1], coeffs[axis] @ bases[2].T)  # (3, ny, nz)
        out = total if axis == 0 else shift
        np.matmul(bases[0], yz.reshape(_CONTROL_POINTS, -1), out=out.reshape(sizes[0], -1))
        np.rint(out, out=out)
        out *= np.float32(1.0 / blob.semi_axes[axis])
        np.square(out, out=out)
        if axis:
            total += shift
    return total


def rotated_noisy_ellipsoid(
    centre: tuple[int, int, int],
    semi_axes: tuple[int, int, int],
    surface_noise: float,
    shape: tuple[int, ...],
    rng: np.random.Generator,
) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """Zhang-style blob: a sphere whose radius is perturbed by smooth noise over directions,
    scaled to an ellipsoid and randomly rotated; returns (lo, hi, mask of [lo, hi))."""
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    # Smooth noise on the sphere: a few random plane waves of the direction vector (a cheap
    # stand-in for simplex noise), normalised to unit variance.
    n_waves = 8
    freqs = rng.normal(0.0, 2.0, size=(n_waves, 3))
    phases = rng.uniform(0, 2 * np.pi, size=n_waves)
    reach = max(semi_axes) * (1 + 3 * surface_noise) + 1
    lo, hi = _clip_box(centre, (int(np.ceil(reach)),) * 3, shape)
    grids = np.meshgrid(
        *[np.arange(a, b, dtype=np.float32) - c for a, b, c in zip(lo, hi, centre, strict=True)],
        indexing="ij",
        sparse=True,
    )
    local = [sum(rotation[k, axis] * grids[k] for k in range(3)) for axis in range(3)]
    scaled = [lc / np.float32(r) for lc, r in zip(local, semi_axes, strict=True)]
    norm = np.sqrt(sum(s * s for s in scaled)) + np.float32(1e-6)
    waves = sum(
        np.cos(sum(freqs[w, axis] * scaled[axis] / norm for axis in range(3)) + phases[w])
        for w in range(n_waves)
    )
    radius = 1 + surface_noise * waves * np.float32(np.sqrt(2.0 / n_waves))
    return lo, hi, norm <= radius
