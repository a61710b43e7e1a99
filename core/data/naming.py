"""Case names from NIfTI file names: the one rule every room names a case by (the data
layouts, the synthesis location model, evaluation's pairing of predictions with labels,
`tumorsweep predict`'s output names)."""

from __future__ import annotations

from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# nnU-Net names a case's images `<case>_0000.nii.gz` (channel 0) and its label `<case>.nii.gz`
NNUNET_CHANNEL_SUFFIX = "_0000"


def case_name(path: str | Path, *, nnunet_channel: bool = False) -> str:
    """A case's name: its file name without `.nii` / `.nii.gz`.

    Args:
        path: the image or label file.
        nnunet_channel: also drop nnU-Net's channel suffix `_0000`, so an nnU-Net image and
            its label give the same name (the dataset layouts name cases this way).

    Returns:
        The name, e.g. `liver_3` for `liver_3.nii.gz` (and for `liver_3_0000.nii.gz` with
        `nnunet_channel`).
    """
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if nnunet_channel:
        name = name.removesuffix(NNUNET_CHANNEL_SUFFIX)
    return name
