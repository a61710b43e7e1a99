"""Every NIfTI read of tumorsweep, with the bad-input checks up front and one affine tolerance.

Each problem raises `TumorsweepError` naming the file and what is wrong, so a broken case is
found before training starts, not as a shape error deep inside MONAI or a Ray worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorsweep.errors import TumorsweepError

# Two volumes share a grid when their affines differ by rounding only (mm, or direction cosines).
AFFINE_TOLERANCE = 1e-3
LABEL_VALUES = (0, 1, 2)
# Axes count as orthogonal when the cosine of the angle between two of them is below this
# (0.06 degrees): float rounding of a stored affine passes, a gantry tilt or shear does not.
SHEAR_TOLERANCE = 1e-3
# Deflate cannot compress better than about 1032:1, so a .nii.gz whose header claims more
# voxel bytes than that times its size cannot hold them (a forged or corrupt header).
MAX_GZIP_RATIO = 1032


def resolve_path(path: str | Path) -> Path:
    """`Path.resolve()` that names a symbolic-link loop in one `TumorsweepError` instead of
    Python's RuntimeError (a missing target is left for the reader to report)."""
    try:
        return Path(path).resolve()
    except RuntimeError:  # Python 3.11: "Symlink loop from ..."
        raise TumorsweepError(f"{path}: symbolic link loop") from None
    except OSError as exc:  # later Pythons raise ELOOP
        raise TumorsweepError(f"{path}: {exc.strerror or exc}") from None


def _resolve_file(file: Path) -> None:
    """Name a symbolic-link loop, a dangling link or a folder instead of "file not found"."""
    if file.is_symlink():
        try:
            file.resolve(strict=True)
        except RuntimeError:  # Python 3.11 reports a loop this way
            raise TumorsweepError(f"{file}: symbolic link loop") from None
        except OSError as exc:
            if exc.errno == 40:  # ELOOP
                raise TumorsweepError(f"{file}: symbolic link loop") from None
            raise TumorsweepError(f"{file}: symbolic link to a missing file") from None
    if file.is_dir():
        raise TumorsweepError(f"{file}: is a folder, not a NIfTI file")
    if not file.is_file():
        raise TumorsweepError(f"{file}: file not found")


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_voxel_bytes(file: Path, image: nib.spatialimages.SpatialImage) -> None:
    """Refuse, before any voxel is allocated, a header whose volume the file cannot hold (an
    uncompressed file shorter than its voxels, a gzip beyond deflate's ratio) or that would
    not fit in this machine's memory."""
    shape = image.shape
    count = int(np.prod([int(n) for n in shape], dtype=object))
    itemsize = np.dtype(image.get_data_dtype()).itemsize
    need = count * itemsize
    size = file.stat().st_size
    offset = int(getattr(image.dataobj, "offset", 0) or 0)
    gzipped = file.name.endswith(".gz")
    if (not gzipped and need + offset > size) or (gzipped and need > size * MAX_GZIP_RATIO):
        raise TumorsweepError(
            f"{file}: header claims a {'x'.join(map(str, shape))} volume ({need / 1e9:.3g} GB "
            f"of voxels) but the file holds {size} bytes (truncated or corrupt header)"
        )
    memory = _memory_bytes()
    # the readers hold the stored voxels and a float32 copy at least
    if count * max(itemsize, 4) > memory:
        raise TumorsweepError(
            f"{file}: header claims a {'x'.join(map(str, shape))} volume that needs "
            f"{count * max(itemsize, 4) / 1e9:.3g} GB, more than this machine's "
            f"{memory / 1e9:.3g} GB of memory"
        )


def check_orthogonal(file: str | Path, affine: np.ndarray) -> None:
    """Refuse an affine whose voxel axes are not orthogonal (shear, gantry tilt), singular
    or not finite: spacing, resampling and surface distances assume orthogonal axes."""
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.isfinite(np.asarray(affine, dtype=np.float64)).all():
        raise TumorsweepError(f"{file}: affine holds NaN or infinite values")
    lengths = np.linalg.norm(matrix, axis=0)
    if np.any(lengths < 1e-9):
        raise TumorsweepError(f"{file}: affine is singular (an axis of length {lengths.min():g})")
    cosines = (matrix / lengths).T @ (matrix / lengths)
    off = float(np.max(np.abs(cosines - np.eye(3))))
    if off > SHEAR_TOLERANCE:
        raise TumorsweepError(
            f"{file}: affine has non-orthogonal axes (shear or gantry tilt; largest axis "
            f"cosine {off:.4g} > {SHEAR_TOLERANCE}); resample it onto an orthogonal grid first"
        )


def open_nifti(path: str | Path) -> nib.spatialimages.SpatialImage:
    """The NIfTI image object (header read, voxels not yet), checked to be a 3-D volume on
    orthogonal axes whose voxels the file and this machine can hold."""
    file = Path(path)
    _resolve_file(file)
    try:
        image = nib.load(str(file))
    except Exception as exc:  # nibabel raises many types for damaged or foreign files
        raise TumorsweepError(f"{file}: not a readable NIfTI volume ({exc})") from None
    shape = image.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise TumorsweepError(f"{file}: expected a 3-D volume, got {len(shape)}-D shape {shape}")
    check_voxel_bytes(file, image)
    check_orthogonal(file, image.affine)
    return image


def spacing_of(image: nib.spatialimages.SpatialImage) -> tuple[float, float, float]:
    """Voxel size in mm along the three array axes."""
    return tuple(float(z) for z in image.header.get_zooms()[:3])  # type: ignore[return-value]


def voxels(image: nib.spatialimages.SpatialImage, path: str | Path) -> np.ndarray:
    """The voxel array in file order (a trailing singleton axis dropped); NaN/inf refused."""
    try:
        data = np.asanyarray(image.dataobj)
    except MemoryError:
        raise TumorsweepError(f"{path}: not enough memory to read its voxels") from None
    except Exception as exc:  # truncated gzip streams fail only when the data are read
        reason = str(exc) or type(exc).__name__
        raise TumorsweepError(f"{path}: cannot read voxel data ({reason})") from None
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


def affine_gap(first: np.ndarray, second: np.ndarray) -> float:
    """The largest difference between two 4x4 affines' entries (mm for the translations);
    two volumes lie on one grid when it is at most `AFFINE_TOLERANCE`."""
    return float(np.max(np.abs(np.asarray(first, np.float64) - np.asarray(second, np.float64))))


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
    gap = affine_gap(image.affine, label.affine)
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
