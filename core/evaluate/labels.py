"""Checked conversion of a label volume to uint8 0/1/2: metrics, post-processing, CLI, inference.

A prediction holding probabilities, NaN or stray values must fail loudly before anything maps
it to labels (a threshold or `>= 1` would silently turn 0.4 into background and 7 into liver).
"""

from __future__ import annotations

import numpy as np

from core.errors import TumorsweepError


def as_labels(volume: np.ndarray, name: str) -> np.ndarray:
    """`volume` as uint8 labels, after checking every voxel holds exactly 0, 1 or 2.

    NaN, probabilities and any other value are an error naming `name` and showing up to five
    offending values. uint8 and bool input is returned without a copy.
    """
    if volume.dtype == bool:
        return volume.view(np.uint8)
    if volume.dtype.kind not in "uif":
        raise TumorsweepError(f"{name}: labels must be numbers, got dtype {volume.dtype}")
    if volume.size == 0:
        return volume.astype(np.uint8)
    if volume.dtype.kind in "ui":
        if volume.min() >= 0 and volume.max() <= 2:
            return volume.astype(np.uint8, copy=False)
        valid = (volume >= 0) & (volume <= 2)
    else:
        valid = (volume == 0) | (volume == 1) | (volume == 2)
        if valid.all():
            return volume.astype(np.uint8)
    bad = np.unique(volume[~valid])[:5]
    shown = ", ".join(f"{value:.6g}" for value in bad.tolist())
    raise TumorsweepError(f"{name}: labels must be 0, 1 or 2, found [{shown}]")
