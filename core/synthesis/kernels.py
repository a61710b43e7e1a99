"""Compiled inner loops of the Hu synthesis (numba): where numpy would make many small calls.

One planar pass of elasticdeform's `deform_random_grid(points=3, order=0)` maps every pixel of
a plane to the nearest source pixel of its displaced position, or to the constant 0 outside
the frame. In numpy that is some twenty whole-plane array operations per pass (shift, bounds,
rounding, the reads' box, the support lookup, the spans), and for a blob of a few hundred
thousand voxels they cost twice the pass's 3-D gather itself. Each pass function here does one
pass's plane work in a single loop, from the displacement `displacement` computes (the
B-spline product of the pass's 3x3 control values, summed as numpy's matmul sums it).
Positions, bounds and rounding follow the numpy expressions they replace, in float64: p =
pixel + displacement, valid when 0 <= p <= n - 1 on both axes, source = floor(p + 0.5).

The others serve the region products: the block scan of a banded matrix, the edge blur's
reflected band, the texture's arithmetic on its coarse nodes. Vectorised passes over voxels
stay in numpy (a loop here is slower on strided views). Compiled on first use and cached next
to this file (`cache=True`); nothing here starts threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def displacement(control: np.ndarray, basis_a: np.ndarray, basis_b: np.ndarray) -> np.ndarray:
    """The displacement of every pixel of a (na, nb) plane, (2, na, nb) float64: the 3x3
    control values of each component (2, 3, 3) through the B-spline bases (na, 3) and (nb, 3),
    B_a C B_b^T, summed in the order of numpy's `basis_a @ control @ basis_b.T`."""
    na, nb = basis_a.shape[0], basis_b.shape[0]
    rows = np.empty((2, na, 3))
    for c in range(2):
        for i in range(na):
            for m in range(3):
                rows[c, i, m] = (
                    basis_a[i, 0] * control[c, 0, m]
                    + basis_a[i, 1] * control[c, 1, m]
                    + basis_a[i, 2] * control[c, 2, m]
                )
    out = np.empty((2, na, nb))
    for c in range(2):
        for i in range(na):
            for j in range(nb):
                out[c, i, j] = (
                    rows[c, i, 0] * basis_b[j, 0]
                    + rows[c, i, 1] * basis_b[j, 1]
                    + rows[c, i, 2] * basis_b[j, 2]
                )
    return out


@njit(cache=True, nogil=True)
def _source(displacement: np.ndarray, i: int, j: int) -> tuple[bool, int, int]:
    """Pixel (i, j)'s displaced position p = pixel + displacement: whether it lies in the
    frame (0 <= p <= n - 1 on both axes) and its nearest pixel floor(p + 0.5) per axis."""
    pa = displacement[0, i, j] + float(i)
    pb = displacement[1, i, j] + float(j)
    top_a, top_b = float(displacement.shape[1] - 1), float(displacement.shape[2] - 1)
    valid = pa >= 0.0 and pa <= top_a and pb >= 0.0 and pb <= top_b
    return valid, int(np.floor(pa + 0.5)), int(np.floor(pb + 0.5))


@njit(cache=True, nogil=True)
def frame_table(displacement: np.ndarray) -> np.ndarray:
    """Per pixel of a (na, nb) plane, from its displacement (2, na, nb): the flat index
    a * nb + b of its source pixel (a, b) in the plane, or na * nb (an appended zero) where
    the displaced position leaves the frame: a whole-frame pass is one gather by this table."""
    na, nb = displacement.shape[1], displacement.shape[2]
    table = np.empty((na, nb), dtype=np.int64)
    for i in range(na):
        for j in range(nb):
            valid, ia, ib = _source(displacement, i, j)
            table[i, j] = ia * nb + ib if valid else na * nb
    return table


@njit(cache=True, nogil=True)
def ellipsoid_counts(
    displacement: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray, levels: np.ndarray
) -> np.ndarray:
    """The first pass on the solid ellipsoid: per pixel (x, y) of plane (0, 1), how many of
    the sorted distinct values `levels` of the third axis's squared coordinate keep the
    source pixel's sq_a + sq_b + level below 1 (the voxels of that column that are set: the
    third axis's values below a rank). `sq_a`, `sq_b`: the squared normalised coordinates of
    the first two axes (inf outside the ellipsoid's box); an invalid source counts 0."""
    na, nb = displacement.shape[1], displacement.shape[2]
    count = np.zeros((na, nb), dtype=np.int64)
    n_levels = len(levels)
    for i in range(na):
        for j in range(nb):
            valid, ia, ib = _source(displacement, i, j)
            if not valid or ia < 0 or ia >= len(sq_a) or ib < 0 or ib >= len(sq_b):
                continue
            q = sq_a[ia] + sq_b[ib]
            if not np.isfinite(q):
                continue
            # a binary search on 1 - q, then made exact on q + level < 1 (the two roundings
            # can differ by a level)
            c = np.searchsorted(levels, 1.0 - q)
            while c < n_levels and q + levels[c] < 1.0:
                c += 1
            while c > 0 and not q + levels[c - 1] < 1.0:
                c -= 1
            count[i, j] = c
    return count


@njit(cache=True, nogil=True)
def pass_table(
    displacement: np.ndarray, lo_a: int, lo_b: int, support: np.ndarray
) -> tuple[np.ndarray, int, int, int, int]:
    """A later pass: per pixel of the plane, the flat index of its source pixel in the
    previous mask's projection `support` (n_a, n_b), which starts at (lo_a, lo_b) of the
    frame, where the source is valid and set there; n_a * n_b (an appended zero) elsewhere.
    Returns (table, a0, a1, b0, b1): the spans of the pixels that read a set pixel
    (a1 = a0 = 0 when none does)."""
    na, nb = displacement.shape[1], displacement.shape[2]
    n_a, n_b = support.shape
    miss = n_a * n_b
    table = np.empty((na, nb), dtype=np.int64)
    a0, a1, b0, b1 = na, -1, nb, -1
    for i in range(na):
        for j in range(nb):
            table[i, j] = miss
            valid, ia, ib = _source(displacement, i, j)
            ra, rb = ia - lo_a, ib - lo_b
            if not valid or ra < 0 or ra >= n_a or rb < 0 or rb >= n_b or not support[ra, rb]:
                continue
            table[i, j] = ra * n_b + rb
            a0, a1 = min(a0, i), max(a1, i)
            b0, b1 = min(b0, j), max(b1, j)
    if a1 < 0:
        return table, 0, 0, 0, 0
    return table, a0, a1 + 1, b0, b1 + 1


@njit(cache=True, nogil=True)
def row_blocks(matrix: np.ndarray, block: int) -> tuple[np.ndarray, int]:
    """For a banded matrix (each row non-zero on a few consecutive columns), per block of
    `block` output rows: (a, b, c0, c1), rows [a, b) reading input columns [c0, c1) (0, 0 for
    a block of zero rows); and the multiplications the blocked product makes."""
    n_out, n_in = matrix.shape
    count = (n_out + block - 1) // block
    blocks = np.zeros((count, 4), dtype=np.int64)
    work = 0
    for index in range(count):
        a, b = index * block, min(index * block + block, n_out)
        c0, c1 = n_in, 0
        for i in range(a, b):
            for j in range(n_in):
                if matrix[i, j] != 0:
                    c0 = min(c0, j)
                    break
            for j in range(n_in - 1, -1, -1):
                if matrix[i, j] != 0:
                    c1 = max(c1, j + 1)
                    break
        if c0 >= c1:
            c0, c1 = 0, 0
        blocks[index, 0], blocks[index, 1], blocks[index, 2], blocks[index, 3] = a, b, c0, c1
        work += (b - a) * (c1 - c0)
    return blocks, work


@njit(cache=True, nogil=True)
def texture_nodes(smooth: np.ndarray, grain: np.ndarray, mean: float, beta: float) -> None:
    """Hu's texture on its coarse nodes, in place of `grain`, in one pass (float32, in the
    order of the numpy expressions it replaces): p = smooth + mean, then
    clip(beta (grain sqrt(max((1 - p) p, 0)) + p), 0, 1)."""
    m, b = np.float32(mean), np.float32(beta)
    zero, one = np.float32(0.0), np.float32(1.0)
    n0, n1, n2 = grain.shape
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                p = smooth[i, j, k] + m
                spread = np.sqrt(max((one - p) * p, zero))
                grain[i, j, k] = min(max((grain[i, j, k] * spread + p) * b, zero), one)


@njit(cache=True, nogil=True)
def reflected_band(
    out_lo: int, out_hi: int, src_lo: int, src_hi: int, n: int, kernel: np.ndarray
) -> np.ndarray:
    """Matrix of a 1-D correlation with `kernel` (odd length, centred) on a line of n samples
    with scipy's "reflect" border (d c b a | a b c d | d c b a), from samples [src_lo, src_hi)
    to [out_lo, out_hi): taps that fall outside the line are folded back (again, on a line
    shorter than the kernel), taps that land outside [src_lo, src_hi) are dropped (the caller
    reads nothing there); a matrix entry sums its taps in kernel order."""
    radius = len(kernel) // 2
    matrix = np.zeros((out_hi - out_lo, src_hi - src_lo), dtype=np.float32)
    for i in range(out_lo, out_hi):
        for t in range(-radius, radius + 1):
            j = i + t
            while j < 0 or j >= n:  # a line shorter than the kernel reflects again
                j = -j - 1 if j < 0 else 2 * n - 1 - j
            if src_lo <= j < src_hi:
                matrix[i - out_lo, j - src_lo] += kernel[t + radius]
    return matrix
