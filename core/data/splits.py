"""Named evaluation sets of the public liver-tumour studies, as LiTS / MSD case numbers N.

Case N is `volume-N.nii` in LiTS and `liver_N.nii.gz` in MSD Task03_Liver (the same scans).
"""

from __future__ import annotations

HU_VAL = (
    2,
    13,
    15,
    17,
    19,
    21,
    33,
    42,
    62,
    64,
    66,
    68,
    70,
    74,
    78,
    95,
    99,
    107,
    111,
    121,
    123,
    127,
)
CHEN_VAL_0 = (
    10, 13, 15, 19, 22, 26, 29, 31, 42, 58, 61, 66, 71, 73, 76, 82, 86, 88, 97, 98, 112, 128, 129,
)  # fmt: skip
TUMOR_FREE = (32, 34, 38, 41, 47, 87, 89, 91, 105, 106, 114, 115, 119)
GLOBAL = tuple(n for n in range(131) if n not in TUMOR_FREE)

NAMED_SPLITS: dict[str, tuple[int, ...]] = {
    "hu-val": HU_VAL,  # Hu et al. CVPR 2023: their 22 validation = reporting cases
    "chen-val-0": CHEN_VAL_0,  # Chen et al. CVPR 2024 (DiffTumor), fold 0
    "tumor-free": TUMOR_FREE,  # LiTS cases without any tumour
    "global": GLOBAL,  # all 118 tumour-bearing LiTS cases
}
