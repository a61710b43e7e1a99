"""Summaries of per-case metric rows over a case set: what the paper tables and MLflow report.

Per metric: the mean over cases (the number the tables report), the population standard
deviation, the number of cases, and the pooled "global" value computed from the raw counts
(LiTS global Dice = 2 sum|P and G| / sum(|P| + |G|); pooled NSD likewise from surface areas).
A pooled value over cases that are all empty on both sides is 1, matching the per-case
convention. Keys are flat (`tumor_dice`, `tumor_dice_std`, `tumor_dice_n`, `tumor_dice_global`,
`tumor_empty_both`, ...) so they can be logged as MLflow metrics as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from core.errors import TumorsweepError
from core.evaluate.metrics import CLASSES

EMPTY_KINDS = ("both", "truth", "pred")


def aggregate(rows: Sequence[Mapping] | pd.DataFrame) -> dict[str, float | int]:
    """Mean, std, count and pooled value per metric, plus empty-mask convention counts."""
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if table.empty:
        raise TumorsweepError("aggregate: no case rows to summarise")
    summary: dict[str, float | int] = {}
    for name in CLASSES:
        for metric in ("dice", "nsd"):
            values = _numeric(table, f"{name}_{metric}")
            summary[f"{name}_{metric}"] = float(values.mean())
            summary[f"{name}_{metric}_std"] = float(values.std(ddof=0))
            summary[f"{name}_{metric}_n"] = int(values.size)
        overlap = _numeric(table, f"{name}_intersection").sum()
        volume = (
            _numeric(table, f"{name}_pred_voxels").sum()
            + _numeric(table, f"{name}_true_voxels").sum()
        )
        summary[f"{name}_dice_global"] = _pooled(2.0 * overlap, volume)
        within = (
            _numeric(table, f"{name}_surface_pred_within_mm2").sum()
            + _numeric(table, f"{name}_surface_true_within_mm2").sum()
        )
        surface = (
            _numeric(table, f"{name}_surface_pred_mm2").sum()
            + _numeric(table, f"{name}_surface_true_mm2").sum()
        )
        summary[f"{name}_nsd_global"] = _pooled(within, surface)
        empty = _column(table, f"{name}_empty").fillna("").astype(str)
        for kind in EMPTY_KINDS:
            summary[f"{name}_empty_{kind}"] = int((empty == kind).sum())
    return summary


def _column(table: pd.DataFrame, column: str) -> pd.Series:
    """One column, or an error naming it (rows must come from `case_metrics`)."""
    if column not in table.columns:
        raise TumorsweepError(f"aggregate: rows lack column {column!r} (use case_metrics rows)")
    return table[column]


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 values; missing or non-numeric entries are an error naming it."""
    values = pd.to_numeric(_column(table, column), errors="coerce").to_numpy(np.float64)
    if np.isnan(values).any():
        raise TumorsweepError(f"aggregate: column {column!r} has missing or non-numeric values")
    return values


def _pooled(numerator: float, denominator: float) -> float:
    """Ratio of pooled sums; 1 when nothing was present anywhere (all cases empty on both)."""
    return float(numerator / denominator) if denominator > 0 else 1.0
