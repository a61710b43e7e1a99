"""Summaries of per-case metric rows over a case set: what the paper tables and MLflow report.

Per class and registered metric (`tumorsweep.evaluate.registry`): the mean over cases (the number
the tables report), the population standard deviation and the number of cases it is taken over
(`_n`; a metric undefined for empty masks, HD95, counts only the cases where it is defined),
plus the pooled "global" value from the raw counts where the metric has one (LiTS global Dice
= 2 sum|P and G| / sum(|P| + |G|); pooled NSD likewise from surface areas), and the counts of
empty-mask cases. Keys are flat (`tumor_dice`, `tumor_dice_std`, `tumor_dice_n`,
`tumor_dice_global`, `tumor_hd95`, `tumor_empty_both`, ...) so they can be logged as MLflow
metrics as they are; a mean over no defined case is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import registry

EMPTY_KINDS = ("both", "truth", "pred")


def aggregate(rows: Sequence[Mapping] | pd.DataFrame) -> dict[str, float | int]:
    """Mean, std, count and pooled value per class and metric, plus empty-mask counts."""
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if table.empty:
        raise TumorsweepError("aggregate: no case rows to summarise")
    summary: dict[str, float | int] = {}
    for name in registry.CLASSES:
        empty = _column(table, f"{name}_empty").fillna("").astype(str)
        for metric in registry.METRICS:
            key = f"{name}_{metric.name}"
            undefined = (empty != "") if metric.nan_when_empty else None
            values = _numeric(table, key, undefined)
            defined = values[~np.isnan(values)]
            summary[key] = float(defined.mean()) if defined.size else math.nan
            summary[f"{key}_std"] = float(defined.std(ddof=0)) if defined.size else math.nan
            summary[f"{key}_n"] = int(defined.size)
            if metric.pooled is not None:
                summary[f"{key}_global"] = metric.pooled(
                    lambda count, name=name: _numeric(table, f"{name}_{count}")
                )
        for kind in EMPTY_KINDS:
            summary[f"{name}_empty_{kind}"] = int((empty == kind).sum())
    return summary


def _column(table: pd.DataFrame, column: str) -> pd.Series:
    """One column, or an error naming it (rows must come from `case_metrics`)."""
    if column not in table.columns:
        raise TumorsweepError(f"aggregate: rows lack column {column!r} (use case_metrics rows)")
    return table[column]


def _numeric(table: pd.DataFrame, column: str, undefined: pd.Series | None = None) -> np.ndarray:
    """A column as float64 values; missing or non-numeric entries are an error naming it.

    `undefined` marks the rows where the value may be NaN (a metric undefined for that case).
    """
    values = pd.to_numeric(_column(table, column), errors="coerce").to_numpy(np.float64)
    missing = np.isnan(values)
    if undefined is not None:
        missing &= ~undefined.to_numpy(bool)
    if missing.any():
        raise TumorsweepError(f"aggregate: column {column!r} has missing or non-numeric values")
    return values
