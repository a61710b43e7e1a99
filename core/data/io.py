"""Reading NIfTI volumes and image/label pairs with every bad-input check up front.

Each problem raises `TumorsweepError` naming the file and what is wrong, so a broken case is
found before training starts, not as a shape error deep inside MONAI.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from core.errors import TumorsweepError

AFFINE_TOLERANCE_MM = 1e-3  # image and label world positions may differ by rounding only
LABEL_VALUES = (0, 1, 2)


def _load_nifti(path: str | Path) -> nib.spatialimages.SpatialImage:
    file = Path(path)
    if not file.is_file():
        raise TumorsweepError(f"{file}: file not found")
    try:
        return nib.load(str(file))
    except Exception as exc:  # nibabel raises many types for damaged or foreign files
        raise TumorsweepError(f"{file}: not a readable NIfTI volume ({exc})") from exc


def _check_3d(path: str | Path, shape: tuple[int, ...]) -> None:
    if len(shape) == 4 and shape[3] == 1:
        return
    if len(shape) != 3:
        raise TumorsweepError(f"{path}: expected a 3-D volume, got {len(shape)}-D shape {shape}")


def load_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read a 3-D NIfTI: (array in file order, 4x4 affine, voxel spacing in mm).

    Rejects missing or unreadable files, images that are not 3-D (a trailing singleton 4th
    axis is dropped) and images with NaN or infinite voxels.
    """
    image = _load_nifti(path)
    _check_3d(path, image.shape)
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # truncated gzip streams fail only when the data are read
        raise TumorsweepError(f"{path}: cannot read voxel data ({exc})") from exc
    data = data.reshape(data.shape[:3])
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise TumorsweepError(f"{path}: {bad} NaN or infinite voxels")
    zooms = image.header.get_zooms()[:3]
    return data, np.asarray(image.affine, dtype=np.float64), tuple(float(z) for z in zooms)


def check_pair_header(image_path: str | Path, label_path: str | Path) -> None:
    """Check shapes and affines of an image/label pair agree, reading headers only."""
    image, label = _load_nifti(image_path), _load_nifti(label_path)
    _check_3d(image_path, image.shape)
    _check_3d(label_path, label.shape)
    if image.shape[:3] != label.shape[:3]:
        raise TumorsweepError(
            f"{label_path}: label shape {label.shape[:3]} differs from image shape "
            f"{image.shape[:3]} of {image_path}"
        )
    _check_affines(image_path, image.affine, label_path, label.affine)


def _check_affines(
    image_path: str | Path,
    image_affine: np.ndarray,
    label_path: str | Path,
    label_affine: np.ndarray,
) -> None:
    gap = float(np.max(np.abs(np.asarray(image_affine) - np.asarray(label_affine))))
    if gap > AFFINE_TOLERANCE_MM:
        raise TumorsweepError(
            f"{label_path}: label affine differs from the affine of {image_path} "
            f"by up to {gap:.4g} (tolerance {AFFINE_TOLERANCE_MM})"
        )


def check_label_values(label_path: str | Path, label: np.ndarray) -> None:
    """Labels must be 0/1/2 only, with some liver."""
    values = np.unique(label)
    extra = [v.item() for v in values if v not in LABEL_VALUES]
    if extra:
        shown = ", ".join(str(v) for v in extra[:5])
        raise TumorsweepError(f"{label_path}: label values {shown} outside {{0, 1, 2}}")
    if not (values >= 1).any():
        raise TumorsweepError(f"{label_path}: empty liver (no voxel labelled 1 or 2)")


def load_pair(
    image_path: str | Path, label_path: str | Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read and check an image/label pair: (image, uint8 label, affine, spacing)."""
    image, affine, spacing = load_volume(image_path)
    label, label_affine, _ = load_volume(label_path)
    if image.shape != label.shape:
        raise TumorsweepError(
            f"{label_path}: label shape {label.shape} differs from image shape {image.shape} "
            f"of {image_path}"
        )
    _check_affines(image_path, affine, label_path, label_affine)
    if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
        raise TumorsweepError(f"{label_path}: label holds non-integer values")
    check_label_values(label_path, label)
    return image, label.astype(np.uint8), affine, spacing
