"""Published defaults several rooms share, stated once: the HU windows and the sliding-window
inference of Hu et al.'s `validation.py` (and of DiffTumor's, which differs only in its
window). The config fields, the transforms, the evaluation functions and the released
checkpoints' facts take their defaults from here."""

from __future__ import annotations

# HU range mapped to [0, 1] and clipped: Hu et al.'s main.py / validation.py
# (ScaleIntensityRanged a_min=-21, a_max=189) ...
HU_WINDOW: tuple[float, float] = (-21.0, 189.0)
# ... and DiffTumor's (Chen et al. 2024, a_min=-175, a_max=250)
DIFFTUMOR_HU_WINDOW: tuple[float, float] = (-175.0, 250.0)

# Sliding-window inference of validation.py: 96^3 windows (the training patch), overlap 0.75
# (`--val_overlap`), one window per forward pass
SW_ROI: tuple[int, int, int] = (96, 96, 96)
SW_OVERLAP: float = 0.75
SW_BATCH_SIZE: int = 1
