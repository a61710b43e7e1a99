"""Case names from NIfTI file names, shared by the CLI pairing and `evaluate_cases`."""

from __future__ import annotations

from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def case_name(path: str | Path) -> str:
    """A case's name: its file name without `.nii` / `.nii.gz`."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
