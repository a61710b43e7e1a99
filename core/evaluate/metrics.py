"""Per-case Dice and normalised surface Dice (NSD) of liver and tumour label maps.

NSD follows DeepMind's `surface-distance` surfel-area definition (the one behind the published
tables): surface elements sit on voxel corners, each corner's 2x2x2 neighbourhood code maps to a
marching-cubes surface area in mm^2 (anisotropic spacing), and a surface element counts as
overlapping when the nearest corner of the other surface is within the tolerance. Values equal
that package to floating-point rounding; only the work differs: everything happens on the
bounding box of each class, and "within tolerance" is decided by probing the few lattice
offsets inside the tolerance ellipsoid (nearest first, dropping settled corners) instead of a
full distance transform, which is kept for tolerances so large that probing would cost more.

Empty-mask conventions (`{class}_empty` says which fired, so aggregation can count them):
- "both": prediction and truth empty -> Dice 1, NSD 1 (nothing to find, nothing found);
- "truth": only the truth is empty -> Dice 0, NSD 0 (false positive);
- "pred": only the prediction is empty -> Dice 0, NSD 0 (missed);
- "": both non-empty, the regular definition.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from core.errors import TumorsweepError

CLASSES = ("liver", "tumor")
LIVER_MODES = ("ge1", "eq1")
# Probe offsets only while (offsets x surface corners) stays below this many times the
# corner-grid size; beyond it one distance transform of the grid is cheaper.
_PROBE_COST_FACTOR = 16


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float = 2.0,
    liver_mode: str = "ge1",
) -> dict[str, float | int | str]:
    """Dice, NSD and the raw counts behind them for liver and tumour of one case.

    `pred` and `truth` are 0/1/2 label volumes of the same shape; `spacing_mm` is the voxel
    size along their three axes. Liver is label >= 1 ("ge1", LiTS scorer) or label == 1
    ("eq1", Hu et al.). Counts (`{c}_pred_voxels`, `{c}_true_voxels`, `{c}_intersection`,
    `{c}_surface_{pred,true}[_within]_mm2`) let `aggregate` pool cases into global values.
    """
    spacing = _check_inputs(pred, truth, spacing_mm, tolerance_mm, liver_mode)
    box = _union_nonzero_box(pred, truth)
    if box is None:
        crop_pred = crop_truth = np.zeros((0, 0, 0), np.uint8)
    else:
        crop_pred = _label_crop(pred, box, "pred")
        crop_truth = _label_crop(truth, box, "truth")
    row: dict[str, float | int | str] = {}
    for name in CLASSES:
        mask_pred = _class_mask(crop_pred, name, liver_mode)
        mask_truth = _class_mask(crop_truth, name, liver_mode)
        row.update(_class_metrics(name, mask_pred, mask_truth, spacing, float(tolerance_mm)))
    return row


def _check_inputs(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float,
    liver_mode: str,
) -> tuple[float, float, float]:
    """Reject anything that would give silently wrong numbers; return the spacing as floats."""
    for name, volume in (("pred", pred), ("truth", truth)):
        if not isinstance(volume, np.ndarray) or volume.ndim != 3:
            raise TumorsweepError(f"{name}: expected a 3-D numpy label volume, got {volume!r:.80}")
    if pred.shape != truth.shape:
        raise TumorsweepError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    try:
        spacing = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise TumorsweepError(f"spacing_mm: expected 3 numbers, got {spacing_mm!r}") from None
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise TumorsweepError(f"spacing_mm: expected 3 positive numbers, got {spacing_mm!r}")
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise TumorsweepError(f"tolerance_mm: expected a number >= 0, got {tolerance_mm!r}")
    if liver_mode not in LIVER_MODES:
        raise TumorsweepError(f"liver_mode: expected one of {LIVER_MODES}, got {liver_mode!r}")
    return spacing  # type: ignore[return-value]


def _union_nonzero_box(pred: np.ndarray, truth: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels of either volume, from max-projections (fast)."""
    if np.issubdtype(pred.dtype, np.unsignedinteger) and pred.dtype == truth.dtype:
        plane = np.maximum(pred.max(axis=0), truth.max(axis=0)) != 0
    else:
        plane = (pred != 0).any(axis=0) | (truth != 0).any(axis=0)
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if rows.size == 0:
        return None
    ys, zs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    line = (pred[:, ys, zs] != 0).any(axis=(1, 2)) | (truth[:, ys, zs] != 0).any(axis=(1, 2))
    xs = np.flatnonzero(line)
    return slice(xs[0], xs[-1] + 1), ys, zs


def _label_crop(volume: np.ndarray, box: tuple[slice, ...], name: str) -> np.ndarray:
    """The box as uint8 labels, after checking every voxel holds 0, 1 or 2.

    Outside the box everything is exactly 0 by construction, so checking the box suffices.
    """
    crop = volume[box]
    if crop.dtype == bool:
        return crop.view(np.uint8)
    if crop.dtype != np.uint8:
        valid = (crop >= 0) & (crop <= 2)
        if np.issubdtype(crop.dtype, np.floating):
            valid &= crop == np.round(crop)
        if not valid.all():
            bad = np.unique(crop[~valid])[:5]
            raise TumorsweepError(f"{name}: labels must be 0, 1 or 2, found {bad.tolist()}")
        return crop.astype(np.uint8)
    if crop.size and crop.max() > 2:
        bad = np.unique(crop[crop > 2])[:5]
        raise TumorsweepError(f"{name}: labels must be 0, 1 or 2, found {bad.tolist()}")
    return crop


def _class_mask(labels: np.ndarray, name: str, liver_mode: str) -> np.ndarray:
    """Boolean mask of one class: tumour = 2; liver = >= 1 or == 1 depending on the mode."""
    if name == "tumor":
        return labels == 2
    return labels >= 1 if liver_mode == "ge1" else labels == 1


def _class_metrics(
    name: str,
    mask_pred: np.ndarray,
    mask_truth: np.ndarray,
    spacing: tuple[float, float, float],
    tolerance_mm: float,
) -> dict[str, float | int | str]:
    """Dice, NSD, empty-mask convention and raw counts of one class."""
    pred_voxels = int(np.count_nonzero(mask_pred))
    true_voxels = int(np.count_nonzero(mask_truth))
    intersection = int(np.count_nonzero(mask_pred & mask_truth)) if pred_voxels else 0
    surface = _surface_overlap(mask_pred, mask_truth, spacing, tolerance_mm)
    pred_mm2, true_mm2, pred_within_mm2, true_within_mm2 = surface
    if pred_voxels == 0 and true_voxels == 0:
        empty, dice, nsd = "both", 1.0, 1.0
    elif true_voxels == 0:
        empty, dice, nsd = "truth", 0.0, 0.0
    elif pred_voxels == 0:
        empty, dice, nsd = "pred", 0.0, 0.0
    else:
        empty = ""
        dice = 2.0 * intersection / (pred_voxels + true_voxels)
        nsd = (pred_within_mm2 + true_within_mm2) / (pred_mm2 + true_mm2)
    return {
        f"{name}_dice": dice,
        f"{name}_nsd": nsd,
        f"{name}_empty": empty,
        f"{name}_pred_voxels": pred_voxels,
        f"{name}_true_voxels": true_voxels,
        f"{name}_intersection": intersection,
        f"{name}_surface_pred_mm2": pred_mm2,
        f"{name}_surface_true_mm2": true_mm2,
        f"{name}_surface_pred_within_mm2": pred_within_mm2,
        f"{name}_surface_true_within_mm2": true_within_mm2,
    }


def _surface_overlap(
    mask_pred: np.ndarray,
    mask_truth: np.ndarray,
    spacing: tuple[float, float, float],
    tolerance_mm: float,
) -> tuple[float, float, float, float]:
    """Surface areas of both masks and the parts within tolerance of the other surface (mm^2)."""
    box = _bounding_box(mask_pred | mask_truth)
    if box is None:
        return 0.0, 0.0, 0.0, 0.0
    offsets = _tolerance_offsets(spacing, tolerance_mm)
    margin = np.abs(offsets).max(axis=0)
    area_of_code = _surfel_area_table(spacing)
    pred_codes = _corner_codes(mask_pred[box], margin)
    truth_codes = _corner_codes(mask_truth[box], margin)
    pred_corners = _surface_corners(pred_codes)
    truth_corners = _surface_corners(truth_codes)
    pred_areas = area_of_code[pred_codes.ravel()[pred_corners]]
    truth_areas = area_of_code[truth_codes.ravel()[truth_corners]]
    if pred_corners.size == 0 or truth_corners.size == 0:
        return float(pred_areas.sum()), float(truth_areas.sum()), 0.0, 0.0
    probe_cost = len(offsets) * (pred_corners.size + truth_corners.size)
    if probe_cost <= _PROBE_COST_FACTOR * pred_codes.size:
        strides = np.array(pred_codes.strides) // pred_codes.itemsize
        flat_offsets = offsets @ strides
        pred_within = _within_by_probing(
            pred_corners, truth_corners, pred_codes.shape, flat_offsets
        )
        truth_within = _within_by_probing(
            truth_corners, pred_corners, pred_codes.shape, flat_offsets
        )
    else:
        shape = pred_codes.shape
        pred_within = _nearest_mm(pred_corners, truth_corners, shape, spacing) <= tolerance_mm
        truth_within = _nearest_mm(truth_corners, pred_corners, shape, spacing) <= tolerance_mm
    return (
        float(pred_areas.sum()),
        float(truth_areas.sum()),
        float(pred_areas[pred_within].sum()),
        float(truth_areas[truth_within].sum()),
    )


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every True voxel of a 3-D mask, or None when it is empty."""
    plane = mask.any(axis=2)
    xs, ys = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if xs.size == 0:
        return None
    xbox, ybox = slice(xs[0], xs[-1] + 1), slice(ys[0], ys[-1] + 1)
    zs = np.flatnonzero(mask[xbox, ybox].any(axis=(0, 1)))
    return xbox, ybox, slice(zs[0], zs[-1] + 1)


def _corner_codes(mask: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """8-bit neighbourhood code of every voxel corner, in a grid padded by `margin` corners.

    Corner i lies between voxels i-1 and i; bit 7 - (4a + 2b + c) is set when the voxel at
    (i-1+a, j-1+b, k-1+c) is inside, the bit order of DeepMind's encoding kernel. The extra
    margin (all-zero codes) lets offset probes index without bounds checks.
    """
    pad = [(int(m) + 1, int(m) + 1) for m in margin]
    inside = np.pad(mask.view(np.uint8), pad)
    codes = inside[:, :, 1:] + (inside[:, :, :-1] << 1)
    codes = codes[:, 1:, :] + (codes[:, :-1, :] << 2)
    return codes[1:] + (codes[:-1] << 4)


def _surface_corners(codes: np.ndarray) -> np.ndarray:
    """Flat indices of corners whose neighbourhood is mixed (the surface elements)."""
    return np.flatnonzero((codes - np.uint8(1)) < np.uint8(254))


def _tolerance_offsets(spacing: tuple[float, float, float], tolerance_mm: float) -> np.ndarray:
    """Integer corner offsets within the tolerance, nearest first (distances as scipy's EDT)."""
    reach = [int(math.floor(tolerance_mm / s)) for s in spacing]
    grid = np.stack(
        np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), axis=-1
    ).reshape(-1, 3)
    scaled = grid.astype(np.float64) * np.asarray(spacing)
    distance = np.sqrt(scaled[:, 0] ** 2 + scaled[:, 1] ** 2 + scaled[:, 2] ** 2)
    keep = distance <= tolerance_mm
    order = np.argsort(distance[keep], kind="stable")
    return grid[keep][order]


def _within_by_probing(
    corners: np.ndarray, other: np.ndarray, shape: tuple[int, ...], flat_offsets: np.ndarray
) -> np.ndarray:
    """Which `corners` have an `other` corner at one of the offsets (nearest offsets first)."""
    is_other = np.zeros(math.prod(shape), bool)
    is_other[other] = True
    within = np.zeros(corners.size, bool)
    pending = np.arange(corners.size)
    pending_corners = corners
    for step in flat_offsets:
        hit = is_other[pending_corners + step]
        within[pending[hit]] = True
        pending, pending_corners = pending[~hit], pending_corners[~hit]
        if pending.size == 0:
            break
    return within


def _nearest_mm(
    corners: np.ndarray, other: np.ndarray, shape: tuple[int, ...], spacing: Sequence[float]
) -> np.ndarray:
    """Distance in mm from each of `corners` to the nearest `other` corner (exact EDT)."""
    not_other = np.ones(math.prod(shape), bool)
    not_other[other] = False
    distance = ndimage.distance_transform_edt(not_other.reshape(shape), sampling=spacing)
    return distance.ravel()[corners]


@functools.lru_cache(maxsize=64)
def _surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Surface area in mm^2 of each of the 256 corner codes at this voxel spacing.

    The per-code marching-cubes triangle area vectors are the ones DeepMind published and
    MONAI ships (multiples of 1/8, exact in float32); an area vector scales by the products
    of the other two spacings, and a code's area is the sum of its triangles' norms.
    """
    from monai.metrics.utils import _get_neighbour_code_to_normals_table

    area_vectors = _get_neighbour_code_to_normals_table().numpy().astype(np.float64)
    sx, sy, sz = spacing
    scaled = area_vectors * np.array([sy * sz, sx * sz, sx * sy])
    return np.linalg.norm(scaled, axis=-1).sum(axis=-1)
