"""The metric registry: every per-case metric, its conventions and how cases pool into one value.

`case_metrics` writes `{class}_{metric}` plus each metric's raw count columns per class,
`aggregate` summarises them, the evaluate CLI prints them, all by iterating `METRICS`; adding a
metric means adding one entry here. Empty-mask conventions live with each metric:
- Dice, NSD: both masks empty -> 1 (nothing to find, nothing found); one empty -> 0;
- HD95: undefined (NaN) when either mask is empty (no distances exist); such cases are left
  out of the mean and counted (`{class}_hd95_n` defined cases, `{class}_empty_*` which side).
- Lesion metrics (tumour only, `tumorsweep.evaluate.lesions`): lesion sensitivity (overall and
  per diameter bucket) is undefined for a case without a true lesion (of that bucket), lesion
  precision for a case without a predicted lesion, case sensitivity on tumour-free cases and
  case specificity on tumour-bearing ones; undefined cases are left out of the mean and `_n`.
  False positives per case are always defined; lesion-wise Dice (BraTS) is 1 when both sides
  have no lesion and 0 when only the prediction has. Pooled values are ratios of summed counts
  and NaN (undefined) when their denominator is 0 over all cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tumorsweep.evaluate.lesions import DEFAULT_SIZE_EDGES_MM, LesionStats, bucket_names
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
    lesions: LesionStats | None = None  # tumour class only

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
    `nan_when_empty` marks a metric that is NaN (undefined) when a mask is empty;
    `defined_when` (from the class's count columns) marks the cases where a metric is defined
    when that depends on more than empty masks (lesion metrics). `classes` are the classes it
    is computed for; `prefixed` False names it without the class (`case_specificity`);
    `totals` are count columns whose sums over cases the summary reports (`_total`).
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
    defined_when: Callable[[Column], np.ndarray] | None = None
    classes: tuple[str, ...] = CLASSES
    prefixed: bool = True
    totals: tuple[str, ...] = ()

    def key(self, cls: str) -> str:
        """Its per-case column and summary name for one class: `tumor_dice`, `case_specificity`."""
        return f"{cls}_{self.name}" if self.prefixed else self.name


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
VOXEL_METRICS: tuple[Metric, ...] = (
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


def _ratio_or_nan(numerator: float, denominator: float) -> float:
    """Ratio, or NaN (undefined) when the denominator is 0."""
    return float(numerator / denominator) if denominator > 0 else math.nan


def _lesions(stats: ClassStats) -> LesionStats:
    if stats.lesions is None:
        raise ValueError("lesion metrics need ClassStats.lesions (the tumour class)")
    return stats.lesions


def _lesion_counts(stats: ClassStats) -> dict[str, float | int]:
    lesions = _lesions(stats)
    return {
        "lesions_true": lesions.n_true,
        "lesions_detected": lesions.n_detected,
        "lesions_pred": lesions.n_pred,
        "lesions_pred_matched": lesions.n_pred_matched,
        "lesions_fp": lesions.n_fp,
        "lesion_dice_sum": float(lesions.dice.sum()),
        "case_positive": int(lesions.case_positive),
    }


def _sensitivity(stats: ClassStats) -> float:
    lesions = _lesions(stats)
    return _ratio_or_nan(lesions.n_detected, lesions.n_true)


def _precision(stats: ClassStats) -> float:
    """Detected true lesions over detected plus false-positive predicted lesions (a lesion
    split into two predictions counts once, as in panoptica's TP / (TP + FP))."""
    lesions = _lesions(stats)
    return _ratio_or_nan(lesions.n_detected, lesions.n_detected + lesions.n_fp)


def _lesion_dice(stats: ClassStats) -> float:
    """BraTS 2023 lesion-wise Dice: matched Dice summed over true lesions (0 when missed) over
    true lesions plus false-positive predicted lesions; 1 when neither side has a lesion."""
    lesions = _lesions(stats)
    denominator = lesions.n_true + lesions.n_fp
    return float(lesions.dice.sum() / denominator) if denominator else 1.0


def _case_sensitivity(stats: ClassStats) -> float:
    lesions = _lesions(stats)
    return float(lesions.case_positive) if lesions.n_true else math.nan


def _case_specificity(stats: ClassStats) -> float:
    lesions = _lesions(stats)
    return math.nan if lesions.n_true else float(not lesions.case_positive)


def _no_lesion_counts(stats: ClassStats) -> dict[str, float | int]:
    _lesions(stats)
    return {}


_TUMOR = ("tumor",)
LESION_METRICS: tuple[Metric, ...] = (
    Metric(
        "lesion_sensitivity",
        "lesion sensitivity",
        True,
        "",
        _sensitivity,
        _lesion_counts,
        lambda c: _ratio_or_nan(c("lesions_detected").sum(), c("lesions_true").sum()),
        "undefined for a case without a true lesion",
        defined_when=lambda c: c("lesions_true") > 0,
        classes=_TUMOR,
        totals=("lesions_true", "lesions_detected", "lesions_pred", "lesions_fp"),
    ),
    Metric(
        "lesion_precision",
        "lesion precision",
        True,
        "",
        _precision,
        _no_lesion_counts,
        lambda c: _ratio_or_nan(
            c("lesions_detected").sum(), c("lesions_detected").sum() + c("lesions_fp").sum()
        ),
        "undefined for a case without a predicted lesion",
        defined_when=lambda c: c("lesions_pred") > 0,
        classes=_TUMOR,
    ),
    Metric(
        "fp_per_case",
        "false-positive lesions per case",
        False,
        "",
        lambda stats: float(_lesions(stats).n_fp),
        _no_lesion_counts,
        None,
        "0 without predicted lesions (its mean is the pooled value)",
        classes=_TUMOR,
    ),
    Metric(
        "lesion_dice",
        "lesion-wise Dice",
        True,
        "",
        _lesion_dice,
        _no_lesion_counts,
        lambda c: _pooled_ratio(
            c("lesion_dice_sum").sum(), c("lesions_true").sum() + c("lesions_fp").sum()
        ),
        "no lesion on either side -> 1, false positives only -> 0, missed lesions count 0",
        classes=_TUMOR,
    ),
    Metric(
        "case_sensitivity",
        "case sensitivity",
        True,
        "",
        _case_sensitivity,
        _no_lesion_counts,
        None,
        "tumour-bearing cases only (positive: a predicted lesion > case_min_volume_mm3)",
        defined_when=lambda c: c("lesions_true") > 0,
        classes=_TUMOR,
        prefixed=False,
    ),
    Metric(
        "case_specificity",
        "case specificity",
        True,
        "",
        _case_specificity,
        _no_lesion_counts,
        None,
        "tumour-free cases only; undefined when the set has none",
        defined_when=lambda c: c("lesions_true") == 0,
        classes=_TUMOR,
        prefixed=False,
    ),
)

# Every registered metric (iterate this; `metrics()` adds the diameter buckets).
METRICS: tuple[Metric, ...] = (*VOXEL_METRICS, *LESION_METRICS)


def _bucket_metric(index: int, name: str) -> Metric:
    """Lesion sensitivity of one equivalent-diameter bucket."""

    def counts(stats: ClassStats) -> dict[str, float | int]:
        true, found = _lesions(stats).per_bucket()
        return {
            f"lesions_true_{name}": int(true[index]),
            f"lesions_detected_{name}": int(found[index]),
        }

    def value(stats: ClassStats) -> float:
        true, found = _lesions(stats).per_bucket()
        return _ratio_or_nan(found[index], true[index])

    return Metric(
        f"lesion_sensitivity_{name}",
        f"lesion sensitivity {name}",
        True,
        "",
        value,
        counts,
        lambda c: _ratio_or_nan(
            c(f"lesions_detected_{name}").sum(), c(f"lesions_true_{name}").sum()
        ),
        f"undefined for a case without a true lesion of {name}",
        defined_when=lambda c: c(f"lesions_true_{name}") > 0,
        classes=_TUMOR,
        totals=(f"lesions_true_{name}", f"lesions_detected_{name}"),
    )


def metrics(size_edges_mm: tuple[float, ...] = DEFAULT_SIZE_EDGES_MM) -> tuple[Metric, ...]:
    """Every registered metric (`METRICS`) plus the lesion sensitivity of each diameter bucket
    of these edges, in table order (buckets after overall lesion sensitivity)."""
    chosen = list(METRICS)
    at = next((i + 1 for i, m in enumerate(chosen) if m.name == "lesion_sensitivity"), None)
    if at is None:  # lesion sensitivity taken out of the registry: no buckets either
        return tuple(chosen)
    buckets = tuple(_bucket_metric(i, n) for i, n in enumerate(bucket_names(size_edges_mm)))
    return (*chosen[:at], *buckets, *chosen[at:])


def summary_names(size_edges_mm: tuple[float, ...] = DEFAULT_SIZE_EDGES_MM) -> dict[str, str]:
    """Per-class summary names (`tumor_dice`, ...) in table order, with their row labels
    (`Tumor Dice`, `Tumor HD95 (mm)`, `Tumor lesion sensitivity lt10mm`): what trials log and
    reports tabulate. Metrics of both classes first, class by class, then the tumour-only ones."""
    every = metrics(size_edges_mm)
    names = {}
    for group in (
        [m for m in every if m.classes == CLASSES],
        [m for m in every if m.classes != CLASSES],
    ):
        for cls in CLASSES:
            for m in group:
                if cls in m.classes:
                    label = f"{cls.capitalize()} {m.display}" if m.prefixed else m.display
                    names[m.key(cls)] = (
                        label[0].upper() + label[1:] + (f" ({m.unit})" if m.unit else "")
                    )
    return names


def pooled_names(size_edges_mm: tuple[float, ...] = DEFAULT_SIZE_EDGES_MM) -> tuple[str, ...]:
    """Names of the pooled ("global") summaries: `{class}_{metric}_global`."""
    every = metrics(size_edges_mm)
    return tuple(
        f"{m.key(cls)}_global" for m in every if m.pooled for cls in CLASSES if cls in m.classes
    )
