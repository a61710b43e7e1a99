"""Shared helpers of the synthesis tests: a small ellipsoid liver CT and a one-type config."""

from __future__ import annotations

import numpy as np

from tumorsweep.synthesis import SynthesisConfig

ALL_TYPES = ("tiny", "small", "medium", "large", "mix")


def only(tumor_type: str, **kwargs) -> SynthesisConfig:
    probs = {t: float(t == tumor_type) for t in ALL_TYPES}
    return SynthesisConfig(type_probs=probs, **kwargs)


def liver_case(
    shape=(72, 64, 56), radii=(28, 24, 20), centre=None, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid liver at ~110 HU with 10 HU noise in a -60 HU body."""
    centre = centre or tuple(n // 2 for n in shape)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) < 1
    rng = np.random.default_rng(seed)
    image = np.where(inside, 110.0, -60.0) + rng.normal(0, 10, shape)
    return image.astype(np.float32), inside.astype(np.uint8)
