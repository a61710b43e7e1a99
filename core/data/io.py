"""Every NIfTI read of tumorsweep, with the bad-input checks up front and one affine tolerance.

Each problem raises `TumorsweepError` naming the file and what is wrong, so a broken case is
found before training starts, not as a shape error deep inside MONAI or a Ray worker.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from tumorsweep.errors import TumorsweepError

# Two volumes share a grid when their affines differ by rounding only (mm, or direction cosines).
AFFINE_TOLERANCE = 1e-3
LABEL_VALUES = (0, 1, 2)


def open_nifti(path: str | Path) -> nib.spatialimages.SpatialImage:
    """The NIfTI image object (header read, voxels not yet), checked to be a 3-D volume."""
    file = Path(path)
    if not file.is_file():
        raise TumorsweepError(f"{file}: file not found")
    try:
        image = nib.load(str(file))
    except Exception as exc:  # nibabel raises many types for damaged or foreign files
        raise TumorsweepError(f"{file}: not a readable NIfTI volume ({exc})") from None
    shape = image.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise TumorsweepError(f"{file}: expected a 3-D volume, got {len(shape)}-D shape {shape}")
    return image


def spacing_of(image: nib.spatialimages.SpatialImage) -> tuple[float, float, float]:
    """Voxel size in mm along the three array axes."""
    return tuple(float(z) for z in image.header.get_zooms()[:3])  # type: ignore[return-value]


def voxels(image: nib.spatialimages.SpatialImage, path: str | Path) -> np.ndarray:
    """The voxel array in file order (a trailing singleton axis dropped); NaN/inf refused."""
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # truncated gzip streams fail only when the data are read
        raise TumorsweepError(f"{path}: cannot read voxel data ({exc})") from None
    data = data.reshape(data.shape[:3])
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise TumorsweepError(f"{path}: {bad} NaN or infinite voxels")
    return data


def load_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read a 3-D NIfTI: (array in file order, 4x4 affine, voxel spacing in mm)."""
    image = open_nifti(path)
    return voxels(image, path), np.asarray(image.affine, dtype=np.float64), spacing_of(image)


def as_labels(path: str | Path, data: np.ndarray) -> np.ndarray:
    """A label array as uint8 after checking it holds only the integers 0, 1 and 2."""
    if data.dtype == bool:
        return data.view(np.uint8)
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise TumorsweepError(f"{path}: label holds non-integer values (probabilities?)")
    if data.dtype.kind not in "biuf":
        raise TumorsweepError(f"{path}: label dtype {data.dtype} is not numeric")
    low, high = (data.min(), data.max()) if data.size else (0, 0)
    if low < 0 or high > 2:
        values = np.unique(data)
        extra = [v.item() for v in values if v not in LABEL_VALUES]
        shown = ", ".join(f"{v:g}" for v in extra[:5])
        raise TumorsweepError(f"{path}: label values {shown} outside {{0, 1, 2}}")
    return data.astype(np.uint8, copy=False)


def read_labels(path: str | Path) -> np.ndarray:
    """A 0/1/2 label volume as uint8 in file order."""
    return as_labels(path, load_volume(path)[0])


def check_same_grid(
    image_path: str | Path,
    image: nib.spatialimages.SpatialImage,
    label_path: str | Path,
    label: nib.spatialimages.SpatialImage,
) -> None:
    """Shapes equal and affines equal within `AFFINE_TOLERANCE`, from the headers alone."""
    if image.shape[:3] != label.shape[:3]:
        raise TumorsweepError(
            f"{label_path}: shape {label.shape[:3]} differs from shape {image.shape[:3]} "
            f"of {image_path}"
        )
    gap = float(np.max(np.abs(np.asarray(image.affine) - np.asarray(label.affine))))
    if gap > AFFINE_TOLERANCE:
        raise TumorsweepError(
            f"{label_path}: affine differs from the affine of {image_path} by up to {gap:.4g} "
            f"(tolerance {AFFINE_TOLERANCE}); resample one onto the other's grid"
        )


def check_pair_header(image_path: str | Path, label_path: str | Path) -> None:
    """Check shapes and affines of an image/label pair agree, reading headers only."""
    check_same_grid(image_path, open_nifti(image_path), label_path, open_nifti(label_path))


def check_label_values(label_path: str | Path, label: np.ndarray) -> None:
    """Labels must be 0/1/2 only, with some liver."""
    labels = as_labels(label_path, label)
    if not labels.any():
        raise TumorsweepError(f"{label_path}: empty liver (no voxel labelled 1 or 2)")


def load_pair(
    image_path: str | Path, label_path: str | Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read and check an image/label pair: (image, uint8 label, affine, spacing)."""
    image_file, label_file = open_nifti(image_path), open_nifti(label_path)
    check_same_grid(image_path, image_file, label_path, label_file)
    label = as_labels(label_path, voxels(label_file, label_path))
    check_label_values(label_path, label)
    return (
        voxels(image_file, image_path),
        label,
        np.asarray(image_file.affine, dtype=np.float64),
        spacing_of(image_file),
    )
