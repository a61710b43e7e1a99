"""Hu et al. tumour texture generated per event over a box, without the start-up texture bank.

The original builds ten 420x300x320 volumes at start-up (uniform noise A smoothed with
sigma_a, min-max normalised to p = s*A + b, Bernoulli-sampled, smoothed with sigma_b, rescaled
so the mean above 0.12 is u0, clipped) and cuts a block per event. Every step is linear or
nearly Gaussian, so the same field can be written as

    b2 = p_smooth + sqrt(p(1-p)) * |k_b| * Z_b,   p_smooth = mu + amp * Z_c

where Z_c and Z_b are unit-variance Gaussian fields with the correlation of Gaussian-smoothed
white noise (widths sqrt(sigma_a^2 + sigma_b^2) and sigma_b), `mu` and `amp` follow from
where A's mean lies in its min-max range and how many stds that range spans (the public
bank's own values for its ten textures, else a bank simulated on a coarse grid) and the
rescale factor from the truncated-normal mean above 0.12. Each event draws fresh noise; s, b
and u0 are, by default (`TextureConfig.draws = public_bank`), the values the original drew
once per bank texture at start-up with seed 0 (`PUBLIC_BANK_DRAWS`), as its authors trained,
or with `per_event` fresh draws from the configured ranges.
Smooth fields are drawn on a coarse grid and linearly interpolated, so cost scales with the
voxels actually textured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

from tumorsweep.synthesis import kernels
from tumorsweep.synthesis.config import TextureConfig

BANK_SHAPE = (420, 300, 320)
_THRESHOLD = 0.12  # the original's "mean over voxels > 0.12" rescale threshold
_TRUNCATE = 4.0  # scipy's default Gaussian support, as in the original
_BYTE_MEAN, _BYTE_STD = np.float32(127.5), float(np.sqrt((256**2 - 1) / 12))  # uniform 0..255


def _kernel_l2(sigma: float) -> float:
    """L2 norm of a normalised 3-D Gaussian kernel: std of the smoothed unit white noise."""
    return float((2.0 * np.sqrt(np.pi) * sigma) ** -1.5)


def _discrete_kernel_l2(sigma: float) -> float:
    """L2 norm of scipy's truncated, normalised 3-D Gaussian kernel (exact for the coarse grid)."""
    radius = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float(np.sum(k**2) ** 1.5)


# The public code's bank (seeds 0, 420x300x320): per (sigma_a, sigma_b) texture, where the
# mean of its smoothed noise A lies between A's min and max, (mean - min) / (max - min), and
# that range in units of A's std over the bank, (max - min) / std. These fix how the min-max
# normalisation scales each texture; measured by `benchmarks/public_code.py bank`.
PUBLIC_BANK: dict[tuple[float, float], tuple[float, float]] = {
    (3.0, 4.0): (0.5035, 14.014),
    (3.0, 7.0): (0.4977, 14.380),
    (6.0, 4.0): (0.5565, 13.207),
    (6.0, 7.0): (0.5101, 11.745),
    (9.0, 4.0): (0.4639, 12.328),
    (9.0, 7.0): (0.4803, 10.855),
    (12.0, 4.0): (0.5285, 12.510),
    (12.0, 7.0): (0.4904, 11.208),
    (15.0, 4.0): (0.4726, 10.006),
    (15.0, 7.0): (0.5139, 10.595),
}


# The public code's bank (MrGiovanni/SyntheticTumors@983dbeef TumorGenerated/TumorGenerated.py:
# 20-36: numpy seed 0, then get_predefined_texture for sigma_a in 3..15, sigma_b in 4, 7, in that
# order): the (scale, base, u0) each texture drew once at start-up (utils.py:59, 60, 69). Every
# training event cuts its texture from one of these ten (TumorGenerated.py:46), so these are the
# values the authors trained with. Recorded from the public code's own run
# (`benchmarks/public_code.py bank`); tests/synthesis/test_synthesis_texture_bank.py re-derives
# them from numpy's legacy RandomState(0) stream in the public call order.
PUBLIC_BANK_DRAWS: dict[tuple[float, float], tuple[float, float, float]] = {
    (3.0, 4.0): (0.19156395452184083, 0.05251834150208437, 0.5498818083947546),
    (3.0, 7.0): (0.19473470144303145, 0.058652447143174205, 0.5328414548442645),
    (6.0, 4.0): (0.19750909264875705, 0.05237535687880274, 0.5341472643892091),
    (6.0, 7.0): (0.19872907621533342, 0.04513569086877116, 0.5090933662986803),
    (9.0, 4.0): (0.19384913844430557, 0.046830850153002444, 0.532219521946696),
    (9.0, 7.0): (0.19243761358175127, 0.054204692997400224, 0.529304004954715),
    (12.0, 4.0): (0.1902417776241835, 0.05665839201807893, 0.5305945973247211),
    (12.0, 7.0): (0.19268530582514587, 0.059410787729185385, 0.5426782900141587),
    (15.0, 4.0): (0.20726498482822667, 0.05926520017872221, 0.5190140456326107),
    (15.0, 7.0): (0.20126361456421082, 0.0563412231035192, 0.5259428372005849),
}


@lru_cache(maxsize=64)
def simulated_bank_range(sigma: float, shape: tuple[int, int, int]) -> tuple[float, float]:
    """(mean - min) / (max - min) and (max - min) / std of noise smoothed by `sigma` over one
    bank of `shape`, for textures the public bank does not hold.

    Scipy's reflecting borders raise the variance near faces, edges and corners, so those
    set the range. It is measured on one simulated bank drawn on a grid of step sigma/1.5 (a
    fraction of a second, cached, seeded by sigma so every worker agrees), just as the
    original draws one bank per texture.
    """
    step = max(1.0, sigma / 1.5)
    nodes = [max(2, int(round(n / step))) for n in shape]
    rng = np.random.default_rng(int(round(sigma * 1000)))
    field = gaussian_filter(rng.standard_normal(nodes, dtype=np.float32), sigma / step)
    low, high = float(field.min()), float(field.max())
    return (float(field.mean()) - low) / (high - low), (high - low) / float(field.std())


def bank_range(
    sigma_a: float, sigma_b: float, shape: tuple[int, int, int] | None = None
) -> tuple[float, float]:
    """The public bank's normalisation constants for its textures, else a simulated bank's."""
    shape = BANK_SHAPE if shape is None else tuple(shape)
    if shape == BANK_SHAPE and (sigma_a, sigma_b) in PUBLIC_BANK:
        return PUBLIC_BANK[(sigma_a, sigma_b)]
    return simulated_bank_range(sigma_a, shape)


@lru_cache(maxsize=64)
def reflect_variance_gain(sigma: float, shape: tuple[int, int, int]) -> float:
    """Mean over a bank of `shape` of the variance of white noise smoothed by `sigma` with
    scipy's reflecting borders, relative to the interior: near a face the kernel folds onto
    itself, so the bank's grain is noisier there (a few % of variance for sigma_b = 7).
    Separable, and 1 away from the faces: only the positions within the radius are summed."""
    kernel = gaussian_kernel(float(sigma), _TRUNCATE).astype(np.float64)
    radius = len(kernel) // 2
    interior = float(np.sum(kernel**2))
    padded = np.concatenate([kernel, np.zeros(1)])  # index len(kernel): weight 0
    gain = 1.0
    for n in shape:
        if n > 2 * radius:
            # position x < radius from the low face reads source s >= 0 with the weight
            # k(s - x) + k(-s - 1 - x); the high face mirrors it
            x = np.arange(radius)[:, None]
            s = np.arange(2 * radius + 1)[None, :]
            weights = sum(
                padded[np.where(np.abs(t) <= radius, t + radius, len(kernel))]
                for t in (s - x, -s - 1 - x)
            )
            folded = 2 * np.sum(weights**2, axis=1)
            near = np.zeros(2 * radius)
        else:  # thin bank: fold as often as needed, all positions
            near = np.arange(n)
            src = near[:, None] + np.arange(-radius, radius + 1)[None, :]
            while (src < 0).any() or (src >= n).any():
                src = np.where(src < 0, -src - 1, np.where(src >= n, 2 * n - 1 - src, src))
            folded = np.array([np.sum(np.bincount(row, weights=kernel) ** 2) for row in src])
        gain *= (n - len(near) + float(folded.sum()) / interior) / n
    return gain


@lru_cache(maxsize=256)
def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """Scipy's truncated, normalised 1-D Gaussian (radius int(truncate sigma + 0.5)); sigma 0
    is the identity, as in scipy."""
    if sigma <= 0:
        return np.ones(1, dtype=np.float32)
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_matrix(
    out_pos: np.ndarray, in_pos: np.ndarray, sigma: float, truncate: float
) -> np.ndarray:
    """Matrix of scipy's truncated, normalised 1-D Gaussian from samples at the consecutive
    integer positions `in_pos` to those at `out_pos` (zero beyond the inputs, like
    mode="constant"): one factor of a separable 3-D filter. It depends only on the sizes and
    offset of the two ranges, and is kept (read-only) for the next call with the same ones,
    as the texture's fields, with few sigmas, make them again and again."""
    key = (float(sigma), float(truncate), len(out_pos), len(in_pos))
    return _cached_band(*key, int(in_pos[0]) - int(out_pos[0]))


def _band(sigma: float, truncate: float, n_out: int, n_in: int, offset: int) -> np.ndarray:
    """A Toeplitz band, built as a sliding window over the padded kernel: row i, column j
    holds g(offset + j - i)."""
    kernel = gaussian_kernel(sigma, truncate)
    radius = len(kernel) // 2
    shift = offset - (n_out - 1)  # row i, column j: h[n_out - 1 - i + j]
    h = np.zeros(n_out + n_in - 1, dtype=np.float32)
    a, b = max(0, -radius - shift), min(len(h), radius - shift + 1)
    if a < b:
        h[a:b] = kernel[a + shift + radius : b + shift + radius]
    # row i is h[n_out - 1 - i : n_out - 1 - i + n_in]: rows start one element apart, backwards
    step = h.strides[0]
    return np.lib.stride_tricks.as_strided(
        h[n_out - 1 :], shape=(n_out, n_in), strides=(-step, step), writeable=False
    ).copy()


@lru_cache(maxsize=512)
def _cached_band(sigma: float, truncate: float, n_out: int, n_in: int, offset: int) -> np.ndarray:
    band = _band(sigma, truncate, n_out, n_in, offset)
    band.flags.writeable = False
    return band


def linear_matrix(out_pos: np.ndarray, in_pos: np.ndarray) -> np.ndarray:
    """Matrix of linear interpolation from samples at (evenly spaced) `in_pos` to `out_pos`."""
    step = float(in_pos[1] - in_pos[0]) if len(in_pos) > 1 else 1.0
    distance = np.abs(np.subtract.outer(np.asarray(out_pos, np.float32), in_pos.astype(np.float32)))
    distance *= np.float32(-1.0 / step)
    distance += np.float32(1.0)
    return np.maximum(distance, np.float32(0.0), out=distance)


def variance_kept(matrix: np.ndarray, rho: float) -> np.ndarray:
    """Per row of a linear-interpolation matrix (weights 1 - u and u on two neighbours whose
    values correlate by `rho`), the share of the variance that interpolation keeps:
    (1 - u)^2 + u^2 + 2 u (1 - u) rho; dividing a row by its square root restores it."""
    squares = np.einsum("ij,ij->i", matrix, matrix)
    return squares + (1.0 - squares) * np.float32(rho)


def _restored(matrix: np.ndarray, rho: float) -> np.ndarray:
    return matrix / np.sqrt(variance_kept(matrix, rho))[:, None]


# Output rows per block of a banded product (see `_row_blocks`): narrower blocks skip more
# zeros, wider ones make fewer calls. Measured on one core with the compiled block scan: 8 is
# as fast as 16 or 32, or faster, for the edge blur's Gaussians (radius 3-6, 30-110 voxels,
# within 1-9%) and the texture's factors (a 80x75x70 texture 16-20% faster than with 16-32).
_BLOCK_ROWS = 8


def _row_blocks(matrix: np.ndarray) -> list[list[int]] | None:
    """For a banded matrix (a Gaussian or interpolation factor: each row non-zero on a few
    consecutive columns), blocks of `_BLOCK_ROWS` output rows with the input columns [c0, c1) the
    block reads: [a, b, c0, c1]. None when blocking would skip less than half the product."""
    n_out, n_in = matrix.shape
    if n_out <= _BLOCK_ROWS or n_in <= 2 * _BLOCK_ROWS:
        return None
    blocks, work = kernels.row_blocks(matrix, _BLOCK_ROWS)  # one compiled scan of the rows
    if 2 * work >= n_out * n_in:
        return None
    return blocks.tolist()


def _rotate(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`matrix @ rows.T` for a C-ordered 2-D `rows` (one input vector per row), as a new
    C-ordered (n_out, len(rows)) array; block by block where the matrix is banded. The
    transposed operand is read in place by BLAS; with the result axis first, all three
    products of `contract` take this one form (a 100^3 -> 90^3 blur: 1.69 ms against 1.83-1.98
    for the previous mix of `rows @ matrix.T` and batched products, one core)."""
    blocks = _row_blocks(matrix)
    if blocks is None:
        return np.matmul(matrix, rows.T)
    out = np.empty((matrix.shape[0], rows.shape[0]), dtype=np.result_type(matrix, rows))
    for a, b, c0, c1 in blocks:
        if c0 == c1:
            out[a:b] = 0
        else:
            np.matmul(matrix[a:b, c0:c1], rows[:, c0:c1].T, out=out[a:b])
    return out


def contract(values: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """Apply one matrix per axis to a 3-D array (out[a,b,c] = sum M0[a,i] M1[b,j] M2[c,k] v[i,j,k])
    as three BLAS products, in float32; banded matrices (Gaussians, interpolation) block by
    block, skipping the zero part of the product. Each product contracts the array's last
    axis and writes the result axis first, so the three rotate the axes back to their order:
    (0, 1, 2) -> (2', 0, 1) -> (1', 2', 0) -> (0', 1', 2')."""
    m0, m1, m2 = matrices
    n0, n1, n2 = values.shape
    out = _rotate(m2, np.ascontiguousarray(values, dtype=np.float32).reshape(-1, n2))
    out = _rotate(m1, out.reshape(-1, n1))
    out = _rotate(m0, out.reshape(-1, n0))
    return out.reshape(m0.shape[0], m1.shape[0], m2.shape[0])


@lru_cache(maxsize=2048)
def _field_matrix(
    step: int, sigma: float, rho: float, relative: range, lo: int, hi: int
) -> np.ndarray:
    """One axis of a `SmoothField` evaluation (read-only): from its noise nodes [lo, hi) to
    voxel positions given relative to the first node below them, through the Gaussian on the
    node grid (step `step`, `sigma` in node steps) and, between nodes, linear interpolation
    with each row rescaled to keep unit variance (nodes correlate by `rho`)."""
    positions = np.arange(relative.start, relative.stop, relative.step, dtype=np.int64)
    coarse = positions / step
    nodes = np.arange(int(positions[-1]) // step + 2)
    smooth = gaussian_matrix(nodes, np.arange(lo, hi), sigma, _TRUNCATE)
    if np.array_equal(coarse, np.arange(len(coarse))):
        matrix = smooth[: len(coarse)]  # positions on consecutive nodes (a read-only view)
    else:
        matrix = _restored(linear_matrix(coarse, nodes.astype(np.float64)), rho) @ smooth
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=1024)
def _voxel_matrix(phase: int, length: int, n_nodes: int, step: int, rho: float) -> np.ndarray:
    """One axis of `HuTexture.sample`'s interpolation (read-only): from nodes 0, step, ...,
    to `length` voxels starting `phase` voxels after the first node, rows rescaled to keep
    the variance between nodes (correlation `rho` at one step)."""
    voxels = np.arange(phase, phase + length)
    matrix = _restored(linear_matrix(voxels, np.arange(n_nodes) * step), rho)
    matrix.flags.writeable = False
    return matrix


class SmoothField:
    """Unit-variance Gaussian field (correlation of white noise smoothed by `sigma`) on a box.

    White noise (uniform bytes, standardised) is drawn once on a grid of step ~sigma/2 covering
    the box (cheap: coarse);
    values anywhere in the box are the smoothed grid, linearly interpolated, computed as one
    separable linear map of the shared noise, so overlapping requests see the same values.
    """

    def __init__(
        self, rng: np.random.Generator, sigma: float, lo: tuple[int, ...], hi: tuple[int, ...]
    ):
        self.step = max(1, int(sigma / 2))
        self.coarse_sigma = sigma / self.step
        self.margin = int(_TRUNCATE * self.coarse_sigma + 0.5)
        self.norm = np.float32(_discrete_kernel_l2(self.coarse_sigma))
        self.rho = float(np.exp(-1.0 / (4.0 * self.coarse_sigma**2)))
        self.origin = np.asarray(lo) // self.step - self.margin
        end = (np.asarray(hi) - 1) // self.step + 2 + self.margin
        # Uniform bytes: an order of magnitude cheaper to draw than normals, and after the
        # smoothing (hundreds of grid values per output) just as Gaussian.
        shape = tuple(int(n) for n in end - self.origin)
        self.noise = np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape)

    def at(self, positions: list[range], scale: float = 1.0) -> np.ndarray:
        """Field values on the grid of integer voxel positions (one increasing, evenly spaced
        range per axis), times `scale`."""
        window, matrices = [], []
        for axis, pos in enumerate(positions):
            first, last = pos[0] // self.step, pos[-1] // self.step + 1
            origin = int(self.origin[axis])
            lo = max(first - self.margin, origin)
            hi = min(last + self.margin + 1, origin + self.noise.shape[axis])
            # the matrix depends on the positions relative to the first node only: kept for
            # the next region or event with the same pattern (regions recur in a few sizes)
            shift = first * self.step
            relative = range(pos.start - shift, pos.stop - shift, pos.step)
            matrices.append(
                _field_matrix(self.step, self.coarse_sigma, self.rho, relative, lo - first,
                              hi - first)
            )  # fmt: skip
            window.append(slice(lo - origin, hi - origin))
        # unit variance: the normalisation rides on one matrix (a fresh one: the cached
        # bands are read-only)
        matrices[0] = matrices[0] * np.float32(scale / (self.norm * _BYTE_STD))
        # the bytes' mean removed as they become floats (k - 127.5 is exact in float32)
        centred = np.subtract(self.noise[tuple(window)], _BYTE_MEAN, dtype=np.float32)
        return contract(centred, matrices)

    def sample(self, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
        """Field values on voxels [lo, hi)."""
        return self.at([range(a, b) for a, b in zip(lo, hi, strict=True)])


@dataclass(frozen=True)
class HuTexture:
    """One event's texture field T in [0, 1], evaluated lazily on sub-boxes of its box.

    T is a smooth function of two smooth fields, so it is formed on the grain field's coarse
    nodes (step ~sigma_b/2) and linearly interpolated once to the voxels."""

    smooth: SmoothField
    grain: SmoothField
    mean: float
    smooth_amp: float
    grain_norm: float
    beta: float
    rho_at_step: float

    def sample(self, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
        """Texture values on voxels [lo, hi) (the Hu blend's HU drop rides on its edge blur)."""
        return self.interpolate(self.nodes(lo, hi), lo, hi)

    def nodes(self, lo: tuple[int, ...], hi: tuple[int, ...]) -> TextureNodes:
        """T on the coarse nodes around voxels [lo, hi), for `interpolate`."""
        step = self.grain.step
        ranges = tuple(
            range(a // step * step, ((b - 1) // step + 2) * step, step)
            for a, b in zip(lo, hi, strict=True)
        )
        # (the fields' scales ride on their matrices; the rest is one compiled pass)
        smooth = self.smooth.at(list(ranges), scale=self.smooth_amp)
        grain = self.grain.at(list(ranges), scale=self.grain_norm)
        kernels.texture_nodes(smooth, grain, self.mean, self.beta)  # T on the nodes, in grain
        # To voxels: the deviations from the node mean interpolated with rows rescaled so the
        # variance between nodes is kept (rho: of T's two parts at one node step, weighted).
        centre = np.float32(grain.mean())
        grain -= centre
        return TextureNodes(ranges, grain, centre)

    def interpolate(
        self, nodes: TextureNodes, lo: tuple[int, ...], hi: tuple[int, ...]
    ) -> np.ndarray:
        """Texture values on voxels [lo, hi), a sub-box of the box `nodes` were made for: the
        same values there, computed from the few nodes the sub-box needs."""
        step = self.grain.step
        window, matrices = [], []
        for a, b, n in zip(lo, hi, nodes.ranges, strict=True):
            first = (a - n.start) // step  # the node at or below voxel a
            last = (b - 1 - n.start) // step + 2  # one past the node above voxel b - 1
            window.append(slice(first, last))
            phase = a - n.start - first * step
            matrices.append(_voxel_matrix(phase, b - a, last - first, step, self.rho_at_step))
        out = contract(nodes.values[tuple(window)], matrices)
        out += nodes.centre
        np.clip(out, 0, 1, out=out)
        return out


@dataclass(frozen=True)
class TextureNodes:
    """A `HuTexture` on the coarse nodes `ranges` (voxel positions per axis): T minus its mean
    over these nodes (`values`, float32), and that mean (`centre`)."""

    ranges: tuple[range, range, range]
    values: np.ndarray
    centre: np.float32


def texture_draws(
    rng: np.random.Generator,
    config: TextureConfig,
    sigma_a: float,
    sigma_b: float,
    bank_shape: tuple[int, int, int] = BANK_SHAPE,
) -> tuple[float, float, float]:
    """An event's (scale, base, u0): with `config.draws == "public_bank"` those the public
    bank drew for the (sigma_a, sigma_b) texture (`PUBLIC_BANK_DRAWS`), with "per_event"
    uniform draws from the configured ranges. The three uniforms are drawn from `rng` in both
    modes, so the two consume the same stream (same sigmas and noise fields for a seed) and
    differ only in these three values. public_bank needs the public 420x300x320 bank shape:
    its draws belong to that bank."""
    scale = rng.uniform(config.scale.low, config.scale.high)
    base = rng.uniform(config.base.low, config.base.high)
    u0 = rng.uniform(config.u0.low, config.u0.high)
    if config.draws == "per_event":
        return scale, base, u0
    if tuple(bank_shape) != BANK_SHAPE or (sigma_a, sigma_b) not in PUBLIC_BANK_DRAWS:
        raise ValueError(
            f"texture draws=public_bank holds the public 420x300x320 bank's textures only, not "
            f"sigma_a {sigma_a:g}, sigma_b {sigma_b:g} on a {tuple(bank_shape)} bank; use "
            "draws=per_event"
        )
    return PUBLIC_BANK_DRAWS[(sigma_a, sigma_b)]


def draw_hu_texture(
    rng: np.random.Generator,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    config: TextureConfig,
    bank_shape: tuple[int, int, int] = BANK_SHAPE,
) -> HuTexture:
    """Draw one event's texture over voxels [lo, hi) with the statistics of the original bank.

    p = base + scale (A - min) / (max - min) = base + scale (mean_at + Z / range_std) for a
    unit Gaussian field Z, with the bank's constants (`bank_range`); its mean over the
    voxels above 0.12 after the sigma_b smoothing follows from the truncated normal. Draws
    from `rng`: sigma_a, sigma_b, scale, base, u0 (`texture_draws`), then the noise fields."""
    sigma_a = float(rng.choice(config.sigma_a))
    sigma_b = float(rng.choice(config.sigma_b))
    scale, base, u0 = texture_draws(rng, config, sigma_a, sigma_b, tuple(bank_shape))
    sigma_c = float(np.hypot(sigma_a, sigma_b))
    mean_at, range_std = bank_range(sigma_a, sigma_b, tuple(bank_shape))
    mean = base + scale * mean_at
    # A's std over the bank already holds its border gain; smoothing again by sigma_b makes it
    # that of the combined width sigma_c
    shape = tuple(bank_shape)
    border = reflect_variance_gain(sigma_c, shape) / reflect_variance_gain(sigma_a, shape)
    smooth_amp = scale / range_std * (sigma_a / sigma_c) ** 1.5 * np.sqrt(border)
    grain_norm = _kernel_l2(sigma_b) * np.sqrt(reflect_variance_gain(sigma_b, shape))
    total_std = np.sqrt(smooth_amp**2 + mean * (1 - mean) * grain_norm**2)
    alpha = (_THRESHOLD - mean) / total_std
    pdf, sf = (
        math.exp(-0.5 * alpha**2) / math.sqrt(2 * math.pi),
        0.5 * math.erfc(alpha / math.sqrt(2)),
    )
    mean_above = mean + total_std * pdf / sf
    # T's correlation between grain nodes one step apart: its two parts weighted by variance
    lag = max(1, int(sigma_b / 2))
    var_c, var_b = smooth_amp**2, mean * (1 - mean) * grain_norm**2
    rho = var_c * np.exp(-(lag**2) / (4 * sigma_c**2)) + var_b * np.exp(
        -(lag**2) / (4 * sigma_b**2)
    )
    # Padded so that the coarse nodes around the box (up to one grain step out) are covered.
    pad = int(max(sigma_c, sigma_b) / 2) + 1
    pad_lo, pad_hi = tuple(a - pad for a in lo), tuple(b + pad for b in hi)
    return HuTexture(
        smooth=SmoothField(rng, sigma_c, pad_lo, pad_hi),
        grain=SmoothField(rng, sigma_b, pad_lo, pad_hi),
        mean=float(mean),
        smooth_amp=float(smooth_amp),
        grain_norm=grain_norm,
        beta=float(u0 / mean_above),
        rho_at_step=float(rho / (var_c + var_b)),
    )
