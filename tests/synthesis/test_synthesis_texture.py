"""Texture statistics against the public code's bank and against the published algorithm.

Our texture is drawn per event (no start-up bank), by default with the scale, base and u0 the
public bank drew per texture (`draws=public_bank`); its values should have the mean and std of
the bank texture the public code would cut a block from. Tolerances: 4 standard errors of our
estimate, the error taken from the spread between events (each event is an independent
draw; within an event values are correlated over ~sigma_a voxels)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from tumorsweep.synthesis.config import TextureConfig
from tumorsweep.synthesis.texture import PUBLIC_BANK, PUBLIC_BANK_DRAWS, draw_hu_texture

# The public bank (SyntheticTumors `TumorGenerated.__init__`: random and numpy seeds 0, ten
# 420x300x320 textures): the scale, base and u0 it drew per texture, and the mean and std of
# the texture over the whole bank. Measured with `benchmarks/public_code.py bank`.
PUBLIC_TEXTURES = {
    (3, 4): (0.1916, 0.0525, 0.5499, 0.5498, 0.0345),
    (3, 7): (0.1947, 0.0587, 0.5328, 0.5328, 0.0159),
    (6, 4): (0.1975, 0.0524, 0.5341, 0.5340, 0.0443),
    (6, 7): (0.1987, 0.0451, 0.5091, 0.5087, 0.0335),
    (9, 4): (0.1938, 0.0468, 0.5322, 0.5180, 0.0582),
    (9, 7): (0.1924, 0.0542, 0.5293, 0.5267, 0.0465),
    (12, 4): (0.1902, 0.0567, 0.5306, 0.5291, 0.0531),
    (12, 7): (0.1927, 0.0594, 0.5427, 0.5412, 0.0507),
    (15, 4): (0.2073, 0.0593, 0.5190, 0.5134, 0.0686),
    (15, 7): (0.2013, 0.0563, 0.5259, 0.5241, 0.0551),
}


def mean_std_with_errors(events: list[np.ndarray]) -> tuple[float, float, float, float]:
    """Pooled mean and std of the events' values with jackknife standard errors over events."""
    sums = np.array([[v.sum(), np.square(v, dtype=np.float64).sum(), v.size] for v in events])

    def stat(rows):
        n = rows[:, 2].sum()
        mean = rows[:, 0].sum() / n
        return mean, np.sqrt(rows[:, 1].sum() / n - mean**2)

    full = np.array(stat(sums))
    leave = np.array([stat(np.delete(sums, i, axis=0)) for i in range(len(events))])
    k = len(events)
    se = np.sqrt((k - 1) / k * np.sum((leave - leave.mean(axis=0)) ** 2, axis=0))
    return full[0], full[1], se[0], se[1]


def test_every_public_bank_texture_is_matched():
    """Each of the ten (sigma_a, sigma_b) textures of the public bank: with the default
    draws=public_bank (that texture's scale, base and u0, as recorded from the public run),
    our per-event textures have its mean and std."""
    assert set(PUBLIC_BANK) == {(float(a), float(b)) for a, b in PUBLIC_TEXTURES}
    rng = np.random.default_rng(0)
    for (a, b), (scale, base, u0, mean, std) in PUBLIC_TEXTURES.items():
        drawn = PUBLIC_BANK_DRAWS[(float(a), float(b))]
        assert np.allclose(drawn, (scale, base, u0), rtol=0, atol=5e-5), ((a, b), drawn)
        config = TextureConfig(sigma_a=[a], sigma_b=[b])
        events = [
            draw_hu_texture(rng, (0, 0, 0), (40, 40, 40), config).sample((0, 0, 0), (40, 40, 40))
            for _ in range(60)
        ]
        got_mean, got_std, se_mean, se_std = mean_std_with_errors(events)
        assert abs(got_mean - mean) < 4 * se_mean, ((a, b), got_mean, mean, se_mean)
        assert abs(got_std - std) < 4 * se_std, ((a, b), got_std, std, se_std)


def reference_bank(shape, sigma_a, sigma_b, rng) -> np.ndarray:
    """The published algorithm (Hu et al. `get_predefined_texture`), written from its text."""
    a = gaussian_filter(rng.uniform(size=shape), sigma_a)
    p = rng.uniform(0.19, 0.21) * (a - a.min()) / (a.max() - a.min()) + rng.uniform(0.04, 0.06)
    b = gaussian_filter((p > rng.uniform(size=shape)).astype(float), sigma_b)
    return np.clip(rng.uniform(0.5, 0.55) / b[b > 0.12].mean() * b, 0, 1)


@pytest.mark.parametrize(("sigma_a", "sigma_b"), [(3.0, 4.0), (6.0, 7.0)])
def test_texture_for_another_bank_shape_follows_the_published_algorithm(sigma_a, sigma_b):
    """Outside the public bank (here a 64^3 bank, where borders weigh much more) the range
    comes from a simulated bank: compare with reference banks built the published way.
    Each bank is one draw of its range, so the tolerance is the spread between banks."""
    shape, rng = (64, 64, 64), np.random.default_rng(1)
    banks = [reference_bank(shape, sigma_a, sigma_b, rng) for _ in range(6)]
    ref_mean = np.array([bank.mean() for bank in banks])
    ref_std = np.array([bank.std() for bank in banks])
    # the reference banks draw scale, base and u0 per bank: per_event, as each event is one
    config = TextureConfig(draws="per_event", sigma_a=[sigma_a], sigma_b=[sigma_b])
    events = [
        draw_hu_texture(rng, (0, 0, 0), (32, 32, 32), config, bank_shape=shape).sample(
            (0, 0, 0), (32, 32, 32)
        )
        for _ in range(40)
    ]
    got_mean, got_std, se_mean, se_std = mean_std_with_errors(events)
    # ours is one more draw of the bank's range: its deviation from the banks' mean has the
    # variance of one bank plus that of the mean of six, plus our own sampling error
    tol_mean = 4 * np.sqrt(ref_mean.var(ddof=1) * (1 + 1 / 6) + se_mean**2)
    tol_std = 4 * np.sqrt(ref_std.var(ddof=1) * (1 + 1 / 6) + se_std**2)
    assert abs(got_mean - ref_mean.mean()) < tol_mean, (got_mean, ref_mean, tol_mean)
    assert abs(got_std - ref_std.mean()) < tol_std, (got_std, ref_std, tol_std)


@pytest.mark.parametrize(
    ("sigma", "shape"), [(3.0, (20, 24, 30)), (7.0, (10, 64, 420)), (15.0, (300, 40, 33))]
)
def test_reflect_variance_gain_is_scipys(sigma, shape):
    """The mean variance of reflect-smoothed unit white noise, exactly: per axis, the rows of
    scipy's 1-D filter applied to the identity are each position's weights."""
    from scipy.ndimage import gaussian_filter1d

    from tumorsweep.synthesis.texture import reflect_variance_gain

    gain = 1.0
    for n in shape:
        weights = gaussian_filter1d(np.eye(n), sigma, axis=1, mode="reflect", truncate=4.0)
        interior = gaussian_filter1d(np.eye(4 * n + 200), sigma, axis=1, truncate=4.0)
        gain *= np.mean(np.sum(weights**2, axis=1)) / np.sum(interior[2 * n + 100] ** 2)
    assert abs(reflect_variance_gain(sigma, shape) - gain) < 1e-6 * gain  # float32 kernel


def test_contract_of_banded_factors_equals_the_dense_product():
    """Gaussian and interpolation factors are contracted block by block (only the columns a
    block of rows reads); the result is the full separable product."""
    from tumorsweep.synthesis.texture import _row_blocks, contract, gaussian_matrix, linear_matrix

    rng = np.random.default_rng(0)
    values = (rng.random((84, 77, 70)) > 0.5).astype(np.float32)
    blur = [gaussian_matrix(np.arange(5, n - 5), np.arange(n), 1.6, 3.0) for n in values.shape]
    interp = linear_matrix(np.arange(70), np.arange(0, 72, 3).astype(np.float64))
    for matrices, grid in ((blur, values), ([blur[0], blur[1], interp], values[:, :, :24])):
        assert _row_blocks(matrices[0]) is not None  # the blocked path runs
        expected = np.einsum(
            "ai,bj,ck,ijk->abc", *[m.astype(np.float64) for m in matrices],
            grid.astype(np.float64), optimize=True,
        )  # fmt: skip
        got = contract(grid, matrices)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def _scipy_kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy's Gaussian: exp(-x^2 / 2 sigma^2) on |x| <= int(truncate sigma + 0.5), summing to 1."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


@pytest.mark.parametrize(
    ("out_range", "in_range"), [((5, 40), (0, 45)), ((0, 12), (9, 30)), ((30, 33), (0, 8))]
)
def test_gaussian_matrix_holds_the_kernel_at_each_offset(out_range, in_range):
    """Row i, column j of a separable factor is the kernel at in_j - out_i (zero beyond its
    reach), whatever the two ranges' offset, including ranges that do not overlap."""
    from tumorsweep.synthesis.texture import gaussian_matrix

    kernel = _scipy_kernel(1.7, 3.0)
    radius = len(kernel) // 2
    out_pos, in_pos = np.arange(*out_range), np.arange(*in_range)
    expected = np.zeros((len(out_pos), len(in_pos)))
    for i, a in enumerate(out_pos):
        for j, b in enumerate(in_pos):
            if abs(b - a) <= radius:
                expected[i, j] = kernel[b - a + radius]
    got = gaussian_matrix(out_pos, in_pos, 1.7, 3.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    assert gaussian_matrix(out_pos, in_pos, 1.7, 3.0) is got  # kept for the next call


def test_field_is_the_smoothed_noise_interpolated_with_its_variance_kept():
    """`SmoothField.at` against its definition, written out here: the centred noise bytes
    smoothed on the node grid (scipy, zero outside), scaled to unit variance, and between
    nodes interpolated linearly per axis with each row divided by the square root of the
    variance it keeps ((1-u)^2 + u^2 + 2u(1-u) rho, nodes correlating by rho). Requests at two
    places with the same pattern relative to the node grid (the field's matrices are kept by
    that pattern) and at a third with another pattern must all match it."""
    from tumorsweep.synthesis.texture import _BYTE_STD, SmoothField

    field = SmoothField(np.random.default_rng(3), 10.0, (0, 0, 0), (90, 90, 90))
    assert field.step == 5
    nodes = gaussian_filter(
        field.noise.astype(np.float64) - 127.5, field.coarse_sigma, truncate=4.0, mode="constant"
    ) / (float(field.norm) * _BYTE_STD)

    def interpolation(positions: np.ndarray, axis: int) -> np.ndarray:
        matrix = np.zeros((len(positions), field.noise.shape[axis]))
        for row, p in enumerate(positions):
            coarse = p / field.step
            i = int(np.floor(coarse))
            u = coarse - i
            keep = np.sqrt((1 - u) ** 2 + u**2 + 2 * u * (1 - u) * field.rho)
            matrix[row, i - field.origin[axis]] += (1 - u) / keep
            if u > 0:
                matrix[row, i + 1 - field.origin[axis]] += u / keep
        return matrix

    for start in ((20, 22, 24), (45, 47, 49), (31, 28, 40)):  # 2nd: same pattern as the 1st
        positions = [range(s, s + 36, 3) for s in start]
        matrices = [interpolation(p, axis) for axis, p in enumerate(positions)]
        expected = np.einsum("ai,bj,ck,ijk->abc", *matrices, nodes, optimize=True)
        got = field.at(positions)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)
