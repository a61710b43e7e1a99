"""Oracle: the Gaussian window weights MONAI 0.9.0's sliding window blends with.

`compute_importance_map(roi, mode="gaussian", sigma_scale=0.125)` (the window's default), then
the clamp `sliding_window_inference` applies to it (every weight raised to at least
max(smallest non-zero weight, 1e-3)), in float32. Runs in the `monai090` side environment.

Usage: python monai09_gaussian_weights.py OUT.npy X Y Z
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from monai.data.utils import compute_importance_map

if __name__ == "__main__":
    out, roi = sys.argv[1], tuple(int(side) for side in sys.argv[2:5])
    weights = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125)
    floor = max(weights[weights != 0].min().item(), 1e-3)
    np.save(out, torch.clamp(weights.to(torch.float32), min=floor).numpy())
