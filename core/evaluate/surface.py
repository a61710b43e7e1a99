"""Surface elements of a predicted and a true mask, and each one's distance to the other surface.

The definition is DeepMind's `surface-distance` (the one behind the published NSD tables):
surface elements sit on voxel corners; a corner whose 2x2x2 neighbourhood is mixed is a surfel,
weighted by the marching-cubes area of its neighbourhood code at the voxel spacing (mm^2); its
distance is the Euclidean distance in mm to the nearest surfel corner of the other mask. Values
equal that package's; only the work differs:
- everything happens on the corner grid of the pair's bounding box, built here in C order, and
  flat corner indices and probe offsets both follow that C order, so the caller's memory layout
  (Fortran, flipped, transposed) cannot change a result;
- distances come from probing the lattice offsets of a ball nearest first: the first offset
  that hits a corner of the other surface is the nearest one, so every distance up to the
  ball's radius (the "reach") is exact and settled corners drop out. The reach covers the NSD
  tolerance at once and widens in shells only as far as a percentile (HD95) needs;
- where probing a shell would cost more, a k-d tree of the other surface's corners gives the
  remaining corners' nearest neighbours at once; the cost is bounded by the number of surface
  corners, not by the volume of the grid (a distance transform of it would be).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

# Costs in probes (one probe ~2-5 ns on one core), to choose between probing a shell of offsets
# and a k-d tree: one gather of a block of probes, one offset of a ball built (a sort), a tree
# point built, a tree query.
_STEP_COST = 1000
_BALL_COST = 30
_TREE_BUILD = 50
_TREE_QUERY = 250
# Probes per gather when few corners are pending (many steps at once for far corners).
_BLOCK = 1 << 16


class _Direction:
    """Distances from one surface's corners to the other surface, exact up to `reach` (mm).

    `rank[i]` indexes `levels` (ascending distinct distances) for corner i, or is -1 while the
    corner's nearest other corner lies beyond the reach.
    """

    def __init__(self, corners: np.ndarray, other: np.ndarray, grid: _Grid) -> None:
        self.corners, self.other, self.grid = corners, other, grid
        self.rank = np.full(corners.size, -1, np.int64)
        self.levels = np.zeros(0)
        self.reach = -1.0

    def settle(self, reach: float) -> None:
        """Make every distance up to `reach` exact, by probing the shell of offsets beyond the
        current reach or, once that costs more than a k-d tree would, by the tree (which makes
        every distance exact).
        """
        if reach <= self.reach:
            return
        pending = np.flatnonzero(self.rank < 0)
        if pending.size == 0:
            self.reach = math.inf
            return
        spacing = self.grid.spacing
        shell = len(_ball(spacing, self.reach)[0]) if self.reach >= 0 else 0
        steps = max(_ball_estimate(spacing, reach) - shell, 1)
        setup = _BALL_COST * steps + self.grid.lookup_size(reach)
        tree = _TREE_BUILD * self.other.size + _TREE_QUERY * pending.size
        if setup >= tree:
            self._settle_by_tree(pending)
            return
        offsets, levels_of, levels = _ball(spacing, reach)
        lookup, shift = self.grid.lookup(self.other, reach)
        starts = self.grid.flat(self.corners[pending], lookup, shift)
        found = _probe(starts, lookup, offsets[shell:] @ _c_strides(lookup), tree - setup)
        if found is None:  # probing would cost more than the tree: at most twice the tree
            self._settle_by_tree(pending)
            return
        hit = found >= 0
        self.rank[pending[hit]] = levels_of[shell:][found[hit]]
        self.levels, self.reach = levels, reach

    def _settle_by_tree(self, pending: np.ndarray) -> None:
        """Exact distances of the pending corners: nearest other corner from a k-d tree (mm).

        The distance is recomputed from the integer corner offset the way scipy's EDT computes
        it, so it is the same number DeepMind's package reports.
        """
        spacing = np.asarray(self.grid.spacing)
        mine = np.stack(np.unravel_index(self.corners[pending], self.grid.shape), axis=-1)
        theirs = np.stack(np.unravel_index(self.other, self.grid.shape), axis=-1)
        _, nearest = cKDTree(theirs * spacing).query(mine * spacing)
        distance = _distance(theirs[nearest] - mine, self.grid.spacing)
        levels, inverse = np.unique(distance, return_inverse=True)
        self.rank[pending] = self.levels.size + inverse
        self.levels = np.concatenate([self.levels, levels])
        self.reach = math.inf

    def within(self, tolerance_mm: float) -> np.ndarray:
        """Which corners lie within the tolerance of the other surface."""
        self.settle(tolerance_mm)
        known = int(np.searchsorted(self.levels, tolerance_mm, side="right"))
        return (self.rank >= 0) & (self.rank < known)

    def percentile(self, areas: np.ndarray, percent: float) -> float:
        """Area-weighted percentile of the distances, as `compute_robust_hausdorff` takes it.

        The smallest distance whose cumulative surfel area reaches `percent` % of the total;
        the reach widens (doubling) until that distance is settled.
        """
        total = areas.sum()
        while True:
            known = self.rank >= 0
            ranks = self.rank[known]
            present = np.bincount(ranks, minlength=self.levels.size) > 0
            cumulative = np.cumsum(np.bincount(ranks, areas[known], self.levels.size)[present])
            index = int(np.searchsorted(cumulative / total, percent / 100.0))
            if index < cumulative.size:
                return float(self.levels[present][index])
            if known.all():
                return float(self.levels[present][-1])
            self.settle(max(2.0 * self.reach, max(self.grid.spacing)))


class _Grid:
    """The C-ordered corner grid of the pair's box, padded by `margin` corners per side."""

    def __init__(
        self, shape: tuple[int, ...], margin: np.ndarray, spacing: tuple[float, ...]
    ) -> None:
        self.shape, self.margin, self.spacing = shape, margin, spacing
        self.size = math.prod(shape)

    def _shift(self, reach_mm: float) -> np.ndarray:
        """Extra padding per side for probes reaching `reach_mm` beyond the grid's margin."""
        return np.maximum(_reach_in_corners(self.spacing, reach_mm) - self.margin, 0)

    def lookup_size(self, reach_mm: float) -> int:
        """Corners of the lookup grid `lookup` builds for this reach."""
        return math.prod(int(n) for n in np.asarray(self.shape) + 2 * self._shift(reach_mm))

    def lookup(self, corners: np.ndarray, reach_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """A boolean grid marking `corners`, padded so probes up to `reach_mm` stay inside.

        Returns the grid and the shift of its origin against this grid.
        """
        shift = self._shift(reach_mm)
        marked = np.zeros(tuple(int(n) for n in np.asarray(self.shape) + 2 * shift), bool)
        marked.ravel()[self.flat(corners, marked, shift)] = True
        return marked, shift

    def flat(self, corners: np.ndarray, lookup: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Flat indices in `lookup` of corners given as flat indices of this grid."""
        if not shift.any():
            return corners
        coords = np.stack(np.unravel_index(corners, self.shape), axis=-1) + shift
        return coords @ _c_strides(lookup)


class SurfacePair:
    """The surfels of a predicted and a true mask and their distances to each other's surface.

    Masks are boolean arrays of one shape, in any memory layout; the grid is padded for probes
    up to `reach_mm` (the NSD tolerance), farther probes get a padded lookup of their own.
    """

    def __init__(
        self,
        mask_pred: np.ndarray,
        mask_truth: np.ndarray,
        spacing: tuple[float, float, float],
        reach_mm: float,
    ) -> None:
        margin = _reach_in_corners(spacing, reach_mm)
        box = bounding_box(mask_pred | mask_truth)
        if box is None:
            pred_codes = truth_codes = np.zeros((1, 1, 1), np.uint8)
        else:
            pred_codes = corner_codes(mask_pred[box], margin)
            truth_codes = corner_codes(mask_truth[box], margin)
        grid = _Grid(pred_codes.shape, margin, spacing)
        area_of_code = surfel_area_table(spacing)
        pred_corners, truth_corners = surface_corners(pred_codes), surface_corners(truth_codes)
        self.pred_areas = area_of_code[pred_codes.ravel()[pred_corners]]
        self.truth_areas = area_of_code[truth_codes.ravel()[truth_corners]]
        self._pred_to_truth = _Direction(pred_corners, truth_corners, grid)
        self._truth_to_pred = _Direction(truth_corners, pred_corners, grid)
        self._within: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def both_present(self) -> bool:
        """Whether both surfaces have surfels (distances exist in both directions)."""
        return bool(self.pred_areas.size and self.truth_areas.size)

    def within(self, tolerance_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the pred and truth surfels within the tolerance of the other surface."""
        if tolerance_mm not in self._within:
            if self.both_present:
                within = (
                    self._pred_to_truth.within(tolerance_mm),
                    self._truth_to_pred.within(tolerance_mm),
                )
            else:
                within = np.zeros(self.pred_areas.size, bool), np.zeros(self.truth_areas.size, bool)
            self._within[tolerance_mm] = within
        return self._within[tolerance_mm]

    def robust_hausdorff(self, percent: float) -> float:
        """DeepMind's robust Hausdorff distance (mm): the larger directed area percentile.

        Infinite when either surface is empty (as that package returns).
        """
        if not self.both_present:
            return math.inf
        return max(
            self._pred_to_truth.percentile(self.pred_areas, percent),
            self._truth_to_pred.percentile(self.truth_areas, percent),
        )


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every True voxel of a 3-D mask, or None when it is empty."""
    plane = mask.any(axis=2)
    xs, ys = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if xs.size == 0:
        return None
    xbox, ybox = slice(xs[0], xs[-1] + 1), slice(ys[0], ys[-1] + 1)
    zs = np.flatnonzero(mask[xbox, ybox].any(axis=(0, 1)))
    return xbox, ybox, slice(zs[0], zs[-1] + 1)


def corner_codes(mask: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """8-bit neighbourhood code of every voxel corner, C-ordered, padded by `margin` corners.

    Corner i lies between voxels i-1 and i; bit 7 - (4a + 2b + c) is set when the voxel at
    (i-1+a, j-1+b, k-1+c) is inside, the bit order of DeepMind's encoding kernel. The grid is
    allocated here in C order whatever the layout of `mask`, so flat indices of the result and
    offsets from `_c_strides` always agree.
    """
    pad = np.asarray(margin, np.int64) + 1
    inside = np.zeros(tuple(int(n) for n in np.asarray(mask.shape) + 2 * pad), np.uint8)
    inside[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape, strict=True))] = mask
    codes = inside[:, :, 1:] + (inside[:, :, :-1] << 1)
    codes = codes[:, 1:, :] + (codes[:, :-1, :] << 2)
    return np.ascontiguousarray(codes[1:] + (codes[:-1] << 4))


def surface_corners(codes: np.ndarray) -> np.ndarray:
    """Flat C-order indices of corners whose neighbourhood is mixed (the surface elements)."""
    return np.flatnonzero((codes - np.uint8(1)) < np.uint8(254))


def _c_strides(grid: np.ndarray) -> np.ndarray:
    """Element strides of a C-ordered array of the grid's shape (not its memory strides)."""
    x, y, z = grid.shape
    return np.array([y * z, z, 1], np.int64)


def _probe(
    starts: np.ndarray, lookup: np.ndarray, steps: np.ndarray, limit: float
) -> np.ndarray | None:
    """Per start, the index of the first step landing on a marked corner (-1: none), or None
    once the probes (plus `_STEP_COST` per gather) would exceed `limit`.

    Steps go in blocks sized so each gather holds about `_BLOCK` probes: one step at a time
    while many starts are pending, many steps at once when few are left (far corners).
    """
    marked = lookup.ravel()
    found = np.full(starts.size, -1, np.int64)
    pending = np.arange(starts.size)
    current = starts
    index = spent = 0
    while index < len(steps) and pending.size:
        width = max(1, _BLOCK // pending.size)
        spent += pending.size * min(width, len(steps) - index) + _STEP_COST
        if spent > limit:
            return None
        if width == 1:  # one step for many starts: 1-D, no reduction over a block
            hit = marked[current + steps[index]]
        else:
            hits = marked[current[:, None] + steps[index : index + width]]
            hit = hits.any(axis=1)
        if hit.any():
            found[pending[hit]] = index if width == 1 else index + hits[hit].argmax(axis=1)
            pending, current = pending[~hit], current[~hit]
        index += width
    return found


@functools.lru_cache(maxsize=8)
def _ball(spacing: tuple[float, ...], radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer corner offsets within `radius` mm, nearest first, with their distance levels.

    Returns (offsets, level index per offset, levels = ascending distinct distances). Distances
    are computed as scipy's EDT computes them, so equal distances compare equal.
    """
    axes = (np.arange(-r, r + 1) for r in _reach_in_corners(spacing, radius))
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    distance = _distance(grid, spacing)
    keep = distance <= radius
    order = np.argsort(distance[keep], kind="stable")
    levels, level_of = np.unique(distance[keep][order], return_inverse=True)
    return grid[keep][order], level_of, levels


def _distance(offsets: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Length in mm of integer corner offsets (n, 3), in the operation order of scipy's EDT."""
    scaled = offsets.astype(np.float64) * np.asarray(spacing, np.float64)
    return np.sqrt(scaled[:, 0] ** 2 + scaled[:, 1] ** 2 + scaled[:, 2] ** 2)


def _ball_estimate(spacing: tuple[float, ...], radius: float) -> int:
    """About how many offsets `_ball` holds for this radius (the ellipsoid's volume in voxels)."""
    return int(4.0 / 3.0 * math.pi * radius**3 / math.prod(spacing)) + 1


def _reach_in_corners(spacing: Sequence[float], radius: float) -> np.ndarray:
    """Per axis, a whole number of corners at least as far as `radius` mm (one spare)."""
    return np.array([int(radius / s) + 1 for s in spacing], np.int64)


@functools.lru_cache(maxsize=64)
def surfel_area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Surface area in mm^2 of each of the 256 corner codes at this voxel spacing.

    The per-code marching-cubes triangle area vectors are the ones DeepMind published and
    MONAI ships (multiples of 1/8, exact in float32); an area vector scales by the products
    of the other two spacings, and a code's area is the sum of its triangles' norms.
    """
    from monai.metrics.utils import _get_neighbour_code_to_normals_table

    area_vectors = _get_neighbour_code_to_normals_table().numpy().astype(np.float64)
    sx, sy, sz = spacing
    scaled = area_vectors * np.array([sy * sz, sx * sz, sx * sy])
    return np.linalg.norm(scaled, axis=-1).sum(axis=-1)
