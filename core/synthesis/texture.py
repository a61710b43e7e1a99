"""Hu et al. tumour texture generated per event over a box, without the start-up texture bank.

The original builds ten 420x300x320 volumes at start-up (uniform noise smoothed with sigma_a,
min-max normalised to p = s*A + b, Bernoulli-sampled, smoothed with sigma_b, rescaled so the
mean above 0.12 is u0, clipped) and cuts a block per event. Every step is linear or nearly
Gaussian, so the same field can be written as

    b2 = p_smooth + sqrt(p(1-p)) * |k_b| * Z_b,   p_smooth = mu + amp * Z_c

where Z_c and Z_b are unit-variance Gaussian fields with the correlation of Gaussian-smoothed
white noise (widths sqrt(sigma_a^2 + sigma_b^2) and sigma_b), `amp` follows from the min-max
range of a bank (simulated cheaply on a coarse grid) and the rescale factor from the
truncated-normal mean above 0.12. Smooth fields are drawn on a coarse grid and linearly
interpolated, so cost scales with the voxels actually textured.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats
from scipy.ndimage import gaussian_filter

from core.synthesis.config import TextureConfig

BANK_SHAPE = (420, 300, 320)
_THRESHOLD = 0.12  # the original's "mean over voxels > 0.12" rescale threshold
_TRUNCATE = 4.0  # scipy's default Gaussian support, as in the original


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


@lru_cache(maxsize=64)
def bank_half_range(sigma: float, shape: tuple[int, int, int]) -> float:
    """Half the min-max range, in interior-std units, of noise smoothed by `sigma` over a bank
    of `shape` (what the original's min-max normalisation divides by).

    Scipy's reflecting borders raise the variance near faces, edges and corners, so those
    set the range (~6-7 std for the default bank, against ~5 in the interior). It is measured
    on one simulated bank drawn on a grid of step sigma/1.5 (a fraction of a second, cached,
    seeded by sigma so every worker agrees), just as the original draws one bank per sigma.
    """
    step = max(1.0, sigma / 1.5)
    coarse_sigma = sigma / step
    nodes = [max(2, int(round(n / step))) for n in shape]
    rng = np.random.default_rng(int(round(sigma * 1000)))
    field = gaussian_filter(rng.standard_normal(nodes, dtype=np.float32), coarse_sigma)
    return float((field.max() - field.min()) / 2 / _discrete_kernel_l2(coarse_sigma))


class SmoothField:
    """Unit-variance Gaussian field (correlation of white noise smoothed by `sigma`) on a box.

    White noise is drawn once on a grid of step ~sigma/2 covering the box (cheap: coarse);
    each sampled sub-box is smoothed from that shared noise, so cost scales with the voxels
    sampled and overlapping sub-boxes see the same values.
    """

    def __init__(
        self, rng: np.random.Generator, sigma: float, lo: tuple[int, ...], hi: tuple[int, ...]
    ):
        self.step = max(1, int(sigma / 2))
        self.coarse_sigma = sigma / self.step
        self.margin = int(_TRUNCATE * self.coarse_sigma + 0.5)
        self.norm = np.float32(_discrete_kernel_l2(self.coarse_sigma))
        self.origin = np.asarray(lo) // self.step - self.margin
        end = (np.asarray(hi) - 1) // self.step + 2 + self.margin
        self.noise = rng.standard_normal(tuple(end - self.origin), dtype=np.float32)

    def sample(self, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
        """Field values on voxels [lo, hi) by separable linear interpolation of the grid."""
        node_lo = np.asarray(lo) // self.step - self.margin
        node_hi = (np.asarray(hi) - 1) // self.step + 2 + self.margin
        window = tuple(
            slice(a, b) for a, b in zip(node_lo - self.origin, node_hi - self.origin, strict=True)
        )
        smooth = gaussian_filter(
            self.noise[window], self.coarse_sigma, mode="constant", truncate=_TRUNCATE
        )
        m = self.margin
        out = smooth[m:-m, m:-m, m:-m] / self.norm
        if self.step == 1:
            return out
        for axis, (a, b) in enumerate(zip(lo, hi, strict=True)):
            pos = np.arange(a, b, dtype=np.float32) / self.step - (node_lo[axis] + m)
            index = pos.astype(np.intp)
            weight = (pos - index).reshape([-1 if i == axis else 1 for i in range(3)])
            low, high = np.take(out, index, axis=axis), np.take(out, index + 1, axis=axis)
            out = low + weight * (high - low)
        return out


@dataclass(frozen=True)
class HuTexture:
    """One event's texture field T in [0, 1], evaluated lazily on sub-boxes of its box."""

    smooth: SmoothField
    grain: SmoothField
    mean: float
    smooth_amp: float
    grain_norm: float
    beta: float

    def sample(self, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
        """Texture values on voxels [lo, hi)."""
        p = self.mean + self.smooth_amp * self.smooth.sample(lo, hi)
        grain = np.sqrt(np.clip(p * (1 - p), 0, None)) * self.grain.sample(lo, hi)
        b2 = p + np.float32(self.grain_norm) * grain
        return np.clip(np.float32(self.beta) * b2, 0, 1, out=b2)


def draw_hu_texture(
    rng: np.random.Generator,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    config: TextureConfig,
    bank_shape: tuple[int, int, int] = BANK_SHAPE,
) -> HuTexture:
    """Draw one event's texture over voxels [lo, hi) with the statistics of the original bank."""
    sigma_a = float(rng.choice(config.sigma_a))
    sigma_b = float(rng.choice(config.sigma_b))
    scale = rng.uniform(0.19, 0.21)
    base = rng.uniform(0.04, 0.06)
    u0 = rng.uniform(config.u0_min, config.u0_max)
    sigma_c = float(np.hypot(sigma_a, sigma_b))
    half_range = bank_half_range(sigma_a, tuple(bank_shape))
    mean = base + scale / 2
    smooth_amp = scale / (2 * half_range) * (sigma_a / sigma_c) ** 1.5
    grain_norm = _kernel_l2(sigma_b)
    total_std = np.sqrt(smooth_amp**2 + mean * (1 - mean) * grain_norm**2)
    alpha = (_THRESHOLD - mean) / total_std
    mean_above = mean + total_std * stats.norm.pdf(alpha) / stats.norm.sf(alpha)
    return HuTexture(
        smooth=SmoothField(rng, sigma_c, lo, hi),
        grain=SmoothField(rng, sigma_b, lo, hi),
        mean=float(mean),
        smooth_amp=float(smooth_amp),
        grain_norm=grain_norm,
        beta=float(u0 / mean_above),
    )
