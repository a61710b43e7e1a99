"""The metric registry: every per-case metric, its conventions and how cases pool into one value.

`case_metrics` writes `{class}_{metric}` plus each metric's raw count columns per class,
`aggregate` summarises them, the evaluate CLI prints them, all by iterating `METRICS`; adding a
metric means adding one entry here. Empty-mask conventions live with each metric:
- Dice, NSD: both masks empty -> 1 (nothing to find, nothing found); one empty -> 0;
- HD95: undefined (NaN) when either mask is empty (no distances exist); such cases are left
  out of the mean and counted (`{class}_hd95_n` defined cases, `{class}_empty_*` which side).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tumorsweep.evaluate.surface import SurfacePair

CLASSES = ("liver", "tumor")
HD_PERCENT = 95.0

Column = Callable[[str], np.ndarray]  # raw count column of one class by its bare name


@dataclass(frozen=True)
class ClassStats:
    """Everything the metrics of one class in one case are computed from."""

    pred_voxels: int
    true_voxels: int
    intersection: int
    surfaces: SurfacePair
    tolerance_mm: float

    @property
    def empty(self) -> str:
        """Which side is empty: "both", "truth", "pred", or "" when neither."""
        if self.pred_voxels == 0:
            return "both" if self.true_voxels == 0 else "pred"
        return "truth" if self.true_voxels == 0 else ""


@dataclass(frozen=True)
class Metric:
    """One metric: names, direction, unit, per-case value, raw counts and pooled value.

    `counts` returns the raw per-case columns (bare names, the class prefix is added) that
    `pooled` turns into the value over all cases from their column sums; `pooled` is None
    when a metric has no pooled form. `empty_rule` states the empty-mask convention;
    `nan_when_empty` marks a metric that is NaN (undefined) when a mask is empty.
    """

    name: str
    display: str
    higher_is_better: bool
    unit: str
    per_class: Callable[[ClassStats], float]
    counts: Callable[[ClassStats], dict[str, float | int]]
    pooled: Callable[[Column], float] | None
    empty_rule: str
    nan_when_empty: bool = False


def _pooled_ratio(numerator: float, denominator: float) -> float:
    """Ratio of pooled sums; 1 when nothing was present anywhere (all cases empty on both)."""
    return float(numerator / denominator) if denominator > 0 else 1.0


def _dice(stats: ClassStats) -> float:
    if stats.empty:
        return 1.0 if stats.empty == "both" else 0.0
    return 2.0 * stats.intersection / (stats.pred_voxels + stats.true_voxels)


def _dice_counts(stats: ClassStats) -> dict[str, float | int]:
    return {
        "pred_voxels": stats.pred_voxels,
        "true_voxels": stats.true_voxels,
        "intersection": stats.intersection,
    }


def _dice_pooled(column: Column) -> float:
    """LiTS global Dice: 2 sum|P and G| / sum(|P| + |G|)."""
    volume = column("pred_voxels").sum() + column("true_voxels").sum()
    return _pooled_ratio(2.0 * column("intersection").sum(), volume)


def _nsd_counts(stats: ClassStats) -> dict[str, float | int]:
    surfaces = stats.surfaces
    pred_within, truth_within = surfaces.within(stats.tolerance_mm)
    return {
        "surface_pred_mm2": float(surfaces.pred_areas.sum()),
        "surface_true_mm2": float(surfaces.truth_areas.sum()),
        "surface_pred_within_mm2": float(surfaces.pred_areas[pred_within].sum()),
        "surface_true_within_mm2": float(surfaces.truth_areas[truth_within].sum()),
    }


def _nsd(stats: ClassStats) -> float:
    """Surface Dice at the tolerance (DeepMind's `compute_surface_dice_at_tolerance`)."""
    if stats.empty:
        return 1.0 if stats.empty == "both" else 0.0
    counts = _nsd_counts(stats)
    within = counts["surface_pred_within_mm2"] + counts["surface_true_within_mm2"]
    return within / (counts["surface_pred_mm2"] + counts["surface_true_mm2"])


def _nsd_pooled(column: Column) -> float:
    """Pooled NSD: surface area within tolerance over all surface area, summed over cases."""
    within = column("surface_pred_within_mm2").sum() + column("surface_true_within_mm2").sum()
    surface = column("surface_pred_mm2").sum() + column("surface_true_mm2").sum()
    return _pooled_ratio(within, surface)


def _hd95(stats: ClassStats) -> float:
    """DeepMind's `compute_robust_hausdorff(distances, 95)`; NaN when either mask is empty."""
    if stats.empty:
        return math.nan
    return stats.surfaces.robust_hausdorff(HD_PERCENT)


def _no_counts(stats: ClassStats) -> dict[str, float | int]:
    return {}


_BOTH_ONE = "both empty -> 1, one empty -> 0"
METRICS: tuple[Metric, ...] = (
    Metric("dice", "Dice", True, "", _dice, _dice_counts, _dice_pooled, _BOTH_ONE),
    Metric("nsd", "NSD", True, "", _nsd, _nsd_counts, _nsd_pooled, _BOTH_ONE),
    Metric(
        "hd95",
        "HD95",
        False,
        "mm",
        _hd95,
        _no_counts,
        None,
        "undefined when either is empty (left out of its mean and _n)",
        nan_when_empty=True,
    ),
)


def summary_names() -> dict[str, str]:
    """Per-class summary names (`tumor_dice`, ...) in table order, with their row labels
    (`Tumor Dice`, `Tumor HD95 (mm)`): what trials log and reports tabulate."""
    return {
        f"{cls}_{m.name}": f"{cls.capitalize()} {m.display}" + (f" ({m.unit})" if m.unit else "")
        for cls in CLASSES
        for m in METRICS
    }


def pooled_names() -> tuple[str, ...]:
    """Names of the pooled ("global") summaries: `{class}_{metric}_global`."""
    return tuple(f"{cls}_{m.name}_global" for m in METRICS if m.pooled for cls in CLASSES)
