"""Per-case metrics of liver and tumour label maps: the values of `registry.METRICS`.

Dice, normalised surface Dice (NSD) at a tolerance and the 95th-percentile Hausdorff distance
(HD95), all in DeepMind's `surface-distance` definitions (surfels on voxel corners weighted by
their marching-cubes area, `tumorsweep.evaluate.surface`). Work happens on the bounding box of what
is labelled; labels are checked there (everything outside is exactly 0). Any memory layout and any
integer, float or bool dtype give identical numbers. Empty-mask conventions are stated per
metric in `tumorsweep.evaluate.registry`; `{class}_empty` says which side was empty. The
tumour class also gets the lesion-level detection metrics (`tumorsweep.evaluate.lesions`):
`case_metrics_and_lesions` returns the per-lesion table beside the row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tumorsweep.data.io import as_labels
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import registry
from tumorsweep.evaluate.lesions import (
    LesionParams,
    LesionStats,
    edges_text,
    lesion_records,
    lesion_stats,
)
from tumorsweep.evaluate.registry import CLASSES, ClassStats
from tumorsweep.evaluate.surface import SurfacePair

LIVER_MODES = ("ge1", "eq1")


LESION_EDGES_COLUMN = "lesion_size_edges_mm"  # the diameter bucket edges the row was scored with


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float = 2.0,
    liver_mode: str = "ge1",
    lesions: LesionParams | None = None,
) -> dict[str, float | int | str]:
    """Every registered metric and the raw counts behind them, for liver and tumour of one case.

    Args:
        pred, truth: 0/1/2 label volumes of the same shape (any layout, integer/float/bool).
        spacing_mm: the voxel size along their three axes (the label's native grid).
        tolerance_mm: NSD tolerance.
        liver_mode: liver is label >= 1 ("ge1", LiTS scorer) or label == 1 ("eq1", Hu et al.).
        lesions: how tumour lesions are found, matched and sized (default `LesionParams()`).

    Keys: `{c}_{metric}` per class and metric (tumour-only lesion metrics, `case_sensitivity`
    and `case_specificity` unprefixed), `{c}_empty`, the raw counts (`{c}_pred_voxels`,
    `tumor_lesions_true`, ...) `aggregate` pools into global values, and `lesion_size_edges_mm`.
    """
    return case_metrics_and_lesions(pred, truth, spacing_mm, tolerance_mm, liver_mode, lesions)[0]


def case_metrics_and_lesions(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float = 2.0,
    liver_mode: str = "ge1",
    lesions: LesionParams | None = None,
    case: str = "",
) -> tuple[dict[str, float | int | str], list[dict[str, object]]]:
    """`case_metrics` and the per-lesion table of the case (`lesions.lesion_records`, rows
    named `case`), from one pass."""
    params = lesions or LesionParams()
    spacing = _check_inputs(pred, truth, spacing_mm, tolerance_mm, liver_mode)
    box = _union_nonzero_box(pred, truth)
    if box is None:
        crop_pred = crop_truth = np.zeros((0, 0, 0), np.uint8)
    else:
        crop_pred = as_labels("pred", pred[box])
        crop_truth = as_labels("truth", truth[box])
    row: dict[str, float | int | str] = {}
    metrics = registry.metrics(params.size_edges_mm)
    found: LesionStats | None = None
    for name in CLASSES:
        mask_pred = _class_mask(crop_pred, name, liver_mode)
        mask_truth = _class_mask(crop_truth, name, liver_mode)
        chosen = [metric for metric in metrics if name in metric.classes]
        if any(metric.classes == ("tumor",) for metric in chosen):
            found = lesion_stats(mask_pred, mask_truth, spacing, params)
            stats = _class_stats(mask_pred, mask_truth, spacing, float(tolerance_mm), found)
        else:
            stats = _class_stats(mask_pred, mask_truth, spacing, float(tolerance_mm))
        row.update({metric.key(name): metric.per_class(stats) for metric in chosen})
        row[f"{name}_empty"] = stats.empty
        for metric in chosen:
            row.update({f"{name}_{key}": value for key, value in metric.counts(stats).items()})
    if found is not None:
        row[LESION_EDGES_COLUMN] = edges_text(params.size_edges_mm)
    return row, lesion_records(case, found) if found is not None else []


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


def _class_mask(labels: np.ndarray, name: str, liver_mode: str) -> np.ndarray:
    """Boolean mask of one class: tumour = 2; liver = >= 1 or == 1 depending on the mode."""
    if name == "tumor":
        return labels == 2
    return labels >= 1 if liver_mode == "ge1" else labels == 1


def _class_stats(
    mask_pred: np.ndarray,
    mask_truth: np.ndarray,
    spacing: tuple[float, float, float],
    tolerance_mm: float,
    lesions: LesionStats | None = None,
) -> ClassStats:
    """Voxel counts, surfaces (and lesions, for the tumour) of one class: what every registered
    metric is computed from."""
    pred_voxels = int(np.count_nonzero(mask_pred))
    true_voxels = int(np.count_nonzero(mask_truth))
    intersection = int(np.count_nonzero(mask_pred & mask_truth)) if pred_voxels else 0
    surfaces = SurfacePair(mask_pred, mask_truth, spacing, tolerance_mm)
    return ClassStats(pred_voxels, true_voxels, intersection, surfaces, tolerance_mm, lesions)
