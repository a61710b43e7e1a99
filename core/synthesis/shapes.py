"""Tumour blob shapes evaluated directly on a box: deformed ellipsoids (Hu) and noisy rotated
ellipsoids (Zhang).

Hu et al. draw a solid ellipsoid in a 4r-wide frame and warp it three times with
elasticdeform's `deform_random_grid` (3x3 control points, displacement std sigma, cubic
B-spline interpolation of the displacement with mirror boundary, nearest-neighbour resampling,
constant 0 outside the frame), on the planes (0, 1), (1, 2) and (0, 2). We run the same three
passes on the same frame, but each pass only over the box where it can read a set voxel, as
gathers of whole pixel columns (a planar pass moves every slice along its third axis alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tumorsweep.synthesis import kernels

_CONTROL_POINTS = 3


@dataclass(frozen=True)
class Blob:
    """One tumour blob: centre and semi-axes in voxels, displacement std (Hu) of its shape."""

    centre: tuple[int, int, int]
    semi_axes: tuple[int, int, int]
    elastic_sigma: float


_MIRROR = {-1: 1, 0: 0, 1: 1, 2: 2, 3: 1, 4: 0}  # B-spline coefficient index, mirrored onto 0..2


@lru_cache(maxsize=512)
def mirror_cubic_basis(n: int) -> np.ndarray:
    """(n, 3) float64 matrix B: B @ d is the cubic B-spline through the 3 control values d
    (mirror boundary), sampled at n voxels with control point k at voxel k (n - 1) / 2.

    This is how elasticdeform interpolates a 3-point displacement grid: the B-spline
    coefficients c solve (c[k-1] + 4 c[k] + c[k+1]) / 6 = d[k] with mirrored c[-1] = c[1],
    c[3] = c[1], and the value at t in [0, 2] is sum_m c[mirror(m)] beta3(t - m).
    """
    t = 2.0 * np.arange(n) / max(n - 1, 1)
    weights = np.zeros((n, 3))
    for m, k in _MIRROR.items():
        x = np.abs(t - m)
        weights[:, k] += np.where(
            x < 1, 2 / 3 - x**2 + x**3 / 2, np.where(x < 2, (2 - x) ** 3 / 6, 0.0)
        )
    prefilter = np.array([[4.0, 2.0, 0.0], [1.0, 4.0, 1.0], [0.0, 2.0, 4.0]]) / 6
    out = weights @ np.linalg.inv(prefilter)
    out.flags.writeable = False
    return out


def _displacement(
    frame: tuple[int, ...], plane: tuple[int, int], sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """One planar pass of elasticdeform's `deform_random_grid(points=3, order=0)`: its draw
    (3x3 control displacements per axis, std `sigma`) and the displacement of every pixel of
    the plane (2, na, nb), float64, through the mirrored cubic B-spline. The `kernels` turn
    it into each pixel's nearest source pixel (round half up), or the constant 0 where the
    displaced position leaves the frame."""
    control = rng.normal(0.0, sigma, size=(2, _CONTROL_POINTS, _CONTROL_POINTS))
    basis_a, basis_b = mirror_cubic_basis(frame[plane[0]]), mirror_cubic_basis(frame[plane[1]])
    return kernels.displacement(control, basis_a, basis_b)


def _span(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """[first, last + 1) of the indices along `axis` where a 2-D mask has a set pixel."""
    seen = np.flatnonzero(mask.any(axis=1 - axis))
    return int(seen[0]), int(seen[-1]) + 1


def _pass_table(
    displacement: np.ndarray, lo: tuple[int, int], support: np.ndarray
) -> tuple[tuple[int, int], tuple[int, int], np.ndarray] | None:
    """Where a planar pass reads a set pixel of the previous mask (`support`: its projection
    on the plane, starting at `lo`): the output's span on each plane axis and, over those
    spans, the flat source index into the previous mask's plane (its size where nothing is
    read, an index that points at an appended zero); None when no pixel reads one."""
    table, a0, a1, b0, b1 = kernels.pass_table(displacement, lo[0], lo[1], support)
    if a1 == 0:
        return None
    return (a0, a1), (b0, b1), table[a0:a1, b0:b1]


@lru_cache(maxsize=256)
def _ellipsoid_squares(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame voxel along one axis (4r of them), the squared normalised coordinate that the
    original's ellipsoid test sums, with its float values (k * (2 / 2r) - 1 for the voxels
    r..3r of its box, inf outside), so that voxels exactly on the surface fall as there; with
    its distinct finite values (sorted) and each voxel's rank among them (int16 max outside)."""
    out = np.full(4 * r, np.inf)
    out[r : 3 * r + 1] = np.square(np.arange(2 * r + 1, dtype=np.float64) * (2.0 / (2 * r)) - 1.0)
    levels = np.unique(out[np.isfinite(out)])
    rank = np.searchsorted(levels, out).astype(np.int16)
    rank[~np.isfinite(out)] = np.iinfo(np.int16).max
    for array in (out, levels, rank):
        array.flags.writeable = False
    return out, levels, rank


def _planar_deformed_ellipsoid(
    blob: Blob, rng: np.random.Generator
) -> tuple[tuple[int, ...], np.ndarray] | None:
    """The public recipe on the blob's own 4r frame: the ellipsoid, then three planar passes
    (0, 1), (1, 2), (0, 2); each pass is evaluated only where it can read a set voxel.
    Returns (frame offset of the mask, mask) or None when nothing is left."""
    r = blob.semi_axes
    frame = tuple(4 * a for a in r)
    sigma = blob.elastic_sigma
    sq = [_ellipsoid_squares(a)[0] for a in r]
    _, levels, rank = _ellipsoid_squares(r[2])
    # Pass 1 (plane 0, 1) reads the ellipsoid itself: a voxel is set when
    # (sq0[x'] + sq1[y']) + sq2[z] < 1 for its source pixel (x', y'). Along z that holds for
    # the sq2 values below a per-column rank (sq2 is V-shaped), so the pass is one compare.
    displacement = _displacement(frame, (0, 1), sigma, rng)
    count = kernels.ellipsoid_counts(displacement, sq[0], sq[1], levels)
    if not count.any():
        return None
    hit = count > 0
    (a0, b0), (a1, b1) = _span(hit, 0), _span(hit, 1)
    seen = np.flatnonzero(rank < count.max())
    a2, b2 = int(seen[0]), int(seen[-1]) + 1
    n0, n1, n2 = b0 - a0, b1 - a1, b2 - a2
    mask = np.zeros((n0, n1 * n2 + 1), dtype=bool)  # a zero column for reads that miss
    np.less(
        rank[a2:b2],
        count[a0:b0, a1:b1, None].astype(np.int16),
        out=mask[:, :-1].reshape(n0, n1, n2),
    )
    lo, shape = [a0, a1, a2], [n0, n1, n2]
    # Pass 2 (plane 1, 2): the same gather of (y, z) pixels for every x.
    support = mask[:, :-1].reshape(shape).any(axis=0)
    found = _pass_table(_displacement(frame, (1, 2), sigma, rng), (lo[1], lo[2]), support)
    if found is None:
        return None
    (a1, b1), (a2, b2), table = found
    out = np.take(mask, table.ravel(), axis=1)  # (n0, m1 * m2)
    lo[1], lo[2], shape[1], shape[2] = a1, a2, b1 - a1, b2 - a2
    mask = out.reshape(shape)
    # Pass 3 (plane 0, 2): the same gather of (x, z) pixels for every y, on a (y, x, z) copy.
    support = mask.any(axis=1)
    found = _pass_table(_displacement(frame, (0, 2), sigma, rng), (lo[0], lo[2]), support)
    if found is None:
        return None
    (a0, b0), (a2, b2), table = found
    n0, n1, n2 = shape
    by_y = np.zeros((n1, n0 * n2 + 1), dtype=bool)
    by_y[:, :-1].reshape(n1, n0, n2)[...] = mask.transpose(1, 0, 2)
    out = np.take(by_y, table.ravel(), axis=1).reshape(n1, b0 - a0, b2 - a2)
    # C order: the liver cut, painting and box scans that follow run 2x faster on it
    return (a0, lo[1], a2), np.ascontiguousarray(out.transpose(1, 0, 2))


@lru_cache(maxsize=512)
def _solid_ellipsoid(semi_axes: tuple[int, int, int]) -> np.ndarray:
    """The original's solid ellipsoid on its 4r frame as (x, y) pixel rows of z voxels, with
    a row of zeros appended (read-only; small frames only: tiny and small blobs have 3 and 5
    semi-axis lengths per axis, so a few hundred shapes recur)."""
    sq = [_ellipsoid_squares(a)[0] for a in semi_axes]
    n0, n1, n2 = (len(v) for v in sq)
    rows = np.zeros((n0 * n1 + 1, n2), dtype=bool)
    np.less((sq[0][:, None, None] + sq[1][None, :, None]) + sq[2][None, None, :], 1,
            out=rows[:-1].reshape(n0, n1, n2))  # fmt: skip
    rows.flags.writeable = False
    return rows


# Frames up to this many voxels (semi-axes up to ~10: Hu's tiny and small blobs) run the three
# passes as whole-frame gathers: fewer calls than cropping each pass, on arrays this small.
_WHOLE_FRAME_VOXELS = 40**3


def _whole_frame_deformed_ellipsoid(
    blob: Blob, rng: np.random.Generator
) -> tuple[tuple[int, ...], np.ndarray] | None:
    """`_planar_deformed_ellipsoid` for small frames: the same ellipsoid test, the same draws
    in the same order (a pass is drawn only when the previous one left a voxel) and the same
    nearest-neighbour gathers, each over the whole frame: one `np.take` of pixel columns by
    the pass's table, where a read outside the frame picks an appended zero column."""
    r = blob.semi_axes
    n0, n1, n2 = frame = tuple(4 * a for a in r)

    def table(plane: tuple[int, int]) -> np.ndarray:
        return kernels.frame_table(_displacement(frame, plane, blob.elastic_sigma, rng)).ravel()

    # (x, y) pixels moved, every z alike: rows of the ellipsoid
    mask = np.take(_solid_ellipsoid(tuple(r)), table((0, 1)), axis=0)  # (x y, z)
    if not mask.any():
        return None
    # (y, z) pixels moved, every x alike
    padded = np.zeros((n0, n1 * n2 + 1), dtype=bool)
    padded[:, :-1] = mask.reshape(n0, n1 * n2)
    mask = np.take(padded, table((1, 2)), axis=1)  # (x, y z)
    if not mask.any():
        return None
    # (x, z) pixels moved, every y alike: on an (x z, y) copy
    padded = np.zeros((n0 * n2 + 1, n1), dtype=bool)
    padded[:-1].reshape(n0, n2, n1)[...] = mask.reshape(n0, n1, n2).transpose(0, 2, 1)
    mask = np.take(padded, table((0, 2)), axis=0)  # (x z, y)
    if not mask.any():
        return None
    return (0, 0, 0), np.ascontiguousarray(mask.reshape(n0, n2, n1).transpose(0, 2, 1))


def _clip_box(
    centre: tuple[int, ...], half: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lo = tuple(max(0, c - h) for c, h in zip(centre, half, strict=True))
    hi = tuple(min(n, c + h + 1) for c, h, n in zip(centre, half, shape, strict=True))
    return lo, hi


def deformed_ellipsoid(
    blob: Blob, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """Mask of a deformed ellipsoid clipped to a volume of `shape`: (lo, hi, mask of [lo, hi)).

    The frame's voxel f lies at centre - 2 r + f, as where the original pastes its 4r array."""
    whole = np.prod([4 * a for a in blob.semi_axes]) <= _WHOLE_FRAME_VOXELS
    found = (_whole_frame_deformed_ellipsoid if whole else _planar_deformed_ellipsoid)(blob, rng)
    if found is None:
        return tuple(blob.centre), tuple(blob.centre), np.zeros((0, 0, 0), dtype=bool)
    offset, mask = found
    start = [c - 2 * r + o for c, r, o in zip(blob.centre, blob.semi_axes, offset, strict=True)]
    lo = tuple(max(0, s) for s in start)
    hi = tuple(min(n, s + m) for s, m, n in zip(start, mask.shape, shape, strict=True))
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        return lo, lo, np.zeros((0, 0, 0), dtype=bool)
    return lo, hi, mask[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))]


# Perlin's improved-noise gradients: the 12 edge midpoints of a cube.
_GRADIENTS = np.array(
    [[1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0], [1, 0, 1], [-1, 0, 1],
     [1, 0, -1], [-1, 0, -1], [0, 1, 1], [0, -1, 1], [0, 1, -1], [0, -1, -1]],
    dtype=np.float64,
)  # fmt: skip
_NOISE_BOUND = 1.1  # |improved gradient noise| stays below ~1.04 in 3-D


class GradientNoise:
    """Perlin's improved 3-D gradient noise (the family simplex noise belongs to): a smooth
    random field, zero on the integer lattice, |value| < 1.1, features about one cell wide;
    the lattice's gradients are a permutation drawn from `rng`, so the field is seeded."""

    def __init__(self, rng: np.random.Generator):
        self._perm = np.tile(rng.permutation(256), 2)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Noise values at `points` (..., 3)."""
        cell = np.floor(points)
        frac = points - cell
        cell = cell.astype(np.int64) & 255
        fade = frac * frac * frac * (frac * (frac * 6 - 15) + 10)
        total = np.zeros(points.shape[:-1])
        perm = self._perm
        for corner in np.ndindex(2, 2, 2):
            hashed = perm[perm[perm[cell[..., 0] + corner[0]] + cell[..., 1] + corner[1]]
                          + cell[..., 2] + corner[2]]  # fmt: skip
            gradient = _GRADIENTS[hashed % 12]
            weight = np.ones(points.shape[:-1])
            dot = np.zeros(points.shape[:-1])
            for axis, c in enumerate(corner):
                weight *= fade[..., axis] if c else 1 - fade[..., axis]
                dot += gradient[..., axis] * (frac[..., axis] - c)
            total += weight * dot
        return total


def rotated_noisy_ellipsoid(
    centre: tuple[int, int, int],
    semi_axes: tuple[int, int, int],
    surface_noise: float,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    frequency: float = 2.0,
) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """Zhang-style blob: a unit sphere whose radius along each direction u is displaced by
    gradient noise, 1 + a n(frequency u + offset) with a set so the displacement's std over
    directions is `surface_noise`, scaled to the ellipsoid's semi-axes and randomly rotated;
    returns (lo, hi, mask of [lo, hi)). The noise is evaluated only in the shell it can
    move the surface through."""
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    noise, offset = GradientNoise(rng), rng.uniform(0, 256, size=3)
    probe = rng.standard_normal((512, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    spread = float(noise(probe * frequency + offset).std())
    amp = surface_noise / spread if spread > 0 and surface_noise > 0 else 0.0
    reach = max(semi_axes) * (1 + amp * _NOISE_BOUND) + 1
    lo, hi = _clip_box(centre, (int(np.ceil(reach)),) * 3, shape)
    grids = np.meshgrid(
        *[np.arange(a, b, dtype=np.float64) - c for a, b, c in zip(lo, hi, centre, strict=True)],
        indexing="ij",
    )
    scaled = np.stack(
        [sum(rotation[k, axis] * grids[k] for k in range(3)) / r for axis, r in
         enumerate(semi_axes)], axis=-1,
    )  # fmt: skip
    norm = np.linalg.norm(scaled, axis=-1)
    mask = norm <= 1 - amp * _NOISE_BOUND
    shell = np.nonzero(~mask & (norm <= 1 + amp * _NOISE_BOUND))
    if len(shell[0]):
        direction = scaled[shell] / np.maximum(norm[shell], 1e-9)[:, None]
        mask[shell] = norm[shell] <= 1 + amp * noise(direction * frequency + offset)
    return lo, hi, mask
