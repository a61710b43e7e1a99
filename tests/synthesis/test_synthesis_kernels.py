"""The compiled loops of `tumorsweep.synthesis.kernels` against their definitions written out
here with whole-array numpy, on displacements that reach outside the frame (the constant-0
reads) and on positions that fall exactly on half pixels (the round-half-up rule)."""

from __future__ import annotations

import numpy as np

from tumorsweep.synthesis import kernels


def _displacement(rng: np.random.Generator, na: int, nb: int, scale: float) -> np.ndarray:
    out = rng.normal(0.0, scale, size=(2, na, nb))
    out[:, ::7, ::5] = np.round(out[:, ::7, ::5]) + 0.5  # exact halves: round up
    out[:, 0, :3] = 0.0  # the frame's low edge: on it, just outside, just inside
    out[0, 0, :3] = [0.0, -1e-9, 0.49]
    out[:, 3, 0] = [-0.5, 0.0]  # 2.5 rounds up to 3 (not to even)
    return out


def _positions(displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions p = pixel + displacement, valid where 0 <= p <= n - 1 on both axes, and the
    nearest pixel floor(p + 0.5) per axis."""
    na, nb = displacement.shape[1:]
    pa = displacement[0] + np.arange(na)[:, None]
    pb = displacement[1] + np.arange(nb)[None, :]
    valid = (pa >= 0) & (pa <= na - 1) & (pb >= 0) & (pb <= nb - 1)
    return valid, np.floor(pa + 0.5).astype(np.int64), np.floor(pb + 0.5).astype(np.int64)


def test_frame_table_rounds_half_up_and_sends_reads_outside_the_frame_to_the_zero() -> None:
    rng = np.random.default_rng(0)
    displacement = _displacement(rng, 21, 17, 4.0)
    valid, src_a, src_b = _positions(displacement)
    got = kernels.frame_table(displacement)
    np.testing.assert_array_equal(got, np.where(valid, src_a * 17 + src_b, 21 * 17))
    assert got[0, 0] == 0 and got[0, 1] == 21 * 17 and got[0, 2] == 2  # 0.49 -> 0, 2
    assert got[3, 0] == 3 * 17  # 2.5 rounds up to 3
    assert 0 < valid.mean() < 1


def test_ellipsoid_counts_are_the_set_voxels_of_each_column() -> None:
    """count = how many of the sorted levels keep sq_a[src_a] + sq_b[src_b] + level < 1, 0 for
    an invalid source or one outside the ellipsoid's box (inf)."""
    rng = np.random.default_rng(1)
    r = 6
    sq = np.full(4 * r, np.inf)
    sq[r : 3 * r + 1] = np.square(np.arange(2 * r + 1) / r - 1.0)
    levels = np.unique(sq[np.isfinite(sq)])
    displacement = _displacement(rng, 4 * r, 4 * r, 3.0)
    valid, src_a, src_b = _positions(displacement)
    q = np.where(valid, sq[np.clip(src_a, 0, 4 * r - 1)] + sq[np.clip(src_b, 0, 4 * r - 1)], np.inf)
    expected = (q[:, :, None] + levels[None, None, :] < 1).sum(axis=2)
    got = kernels.ellipsoid_counts(displacement, sq, sq, levels)
    np.testing.assert_array_equal(got, expected)
    assert expected.max() == len(levels) - 1 and (expected == 0).any()


def test_pass_table_reads_the_support_and_spans_its_hits() -> None:
    rng = np.random.default_rng(2)
    displacement = _displacement(rng, 30, 26, 3.0)
    support = rng.random((9, 11)) < 0.6
    lo = (8, 6)
    valid, src_a, src_b = _positions(displacement)
    ra, rb = src_a - lo[0], src_b - lo[1]
    inside = valid & (ra >= 0) & (ra < 9) & (rb >= 0) & (rb < 11)
    hits = inside & support[np.clip(ra, 0, 8), np.clip(rb, 0, 10)]
    expected = np.where(hits, ra * 11 + rb, 99)
    table, a0, a1, b0, b1 = kernels.pass_table(displacement, *lo, support)
    np.testing.assert_array_equal(table, expected)
    rows, cols = np.flatnonzero(hits.any(axis=1)), np.flatnonzero(hits.any(axis=0))
    assert (a0, a1, b0, b1) == (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    assert kernels.pass_table(displacement, 500, 500, support)[1:] == (0, 0, 0, 0)


def test_row_blocks_cover_each_blocks_non_zero_columns() -> None:
    """Per block of rows, [c0, c1) = the first to the last non-zero column of its rows; a
    block of zero rows reads nothing; the work is the blocked product's size. Also on a
    transposed (non-contiguous) matrix."""
    rng = np.random.default_rng(3)
    band = np.zeros((45, 60), dtype=np.float32)
    for i in range(45):
        start = int(i * 1.2)
        band[i, start : start + 7] = rng.random(7) + 0.1
    band[16:24] = 0
    for matrix in (band, np.ascontiguousarray(band.T).T):
        blocks, work = kernels.row_blocks(matrix, 8)
        assert len(blocks) == 6
        total = 0
        for a, b, c0, c1 in blocks.tolist():
            assert (a, b) == (a, min(a + 8, 45)) and a % 8 == 0
            cols = np.flatnonzero(matrix[a:b].any(axis=0))
            assert (c0, c1) == ((cols[0], cols[-1] + 1) if len(cols) else (0, 0))
            total += (b - a) * (c1 - c0)
        assert work == total and blocks[2, 2:].tolist() == [0, 0]


def test_reflected_band_is_scipys_reflecting_correlation() -> None:
    """The full matrix on a line of n samples is scipy's correlate1d with mode="reflect"
    applied to the identity (column j: the response to a unit sample at j), also on lines
    shorter than the kernel (reflected more than once); a window of it reads only its rows and
    columns."""
    from scipy.ndimage import correlate1d

    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 1.9) ** 2).astype(np.float32)
    kernel /= kernel.sum()
    for n in (3, 5, 13, 40):
        expected = correlate1d(np.eye(n, dtype=np.float64), kernel.astype(np.float64), axis=0,
                               mode="reflect")  # fmt: skip
        got = kernels.reflected_band(0, n, 0, n, n, kernel)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    full = kernels.reflected_band(0, 40, 0, 40, 40, kernel)
    window = kernels.reflected_band(2, 30, 5, 36, 40, kernel)
    np.testing.assert_array_equal(window, full[2:30, 5:36])


def test_displacement_is_the_b_spline_product() -> None:
    """B_a C B_b^T per component, for planes of unequal sides."""
    from tumorsweep.synthesis.shapes import mirror_cubic_basis

    control = np.random.default_rng(4).normal(0.0, 5.0, size=(2, 3, 3))
    basis_a, basis_b = mirror_cubic_basis(37), mirror_cubic_basis(12)
    expected = np.einsum("ik,ckl,jl->cij", basis_a, control, basis_b)
    got = kernels.displacement(control, basis_a, basis_b)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert got.shape == (2, 37, 12)
