"""Summaries of per-case metric rows over a case set: what the paper tables and MLflow report.

Per class and registered metric (`tumorsweep.evaluate.registry`): the mean over cases (the number
the tables report), the population standard deviation and the number of cases it is taken over
(`_n`; a metric undefined for empty masks, HD95, counts only the cases where it is defined),
plus the pooled "global" value from the raw counts where the metric has one (LiTS global Dice
= 2 sum|P and G| / sum(|P| + |G|); pooled NSD likewise from surface areas), and the counts of
empty-mask cases. Keys are flat (`tumor_dice`, `tumor_dice_std`, `tumor_dice_n`,
`tumor_dice_global`, `tumor_hd95`, `tumor_empty_both`, ...) so they can be logged as MLflow
metrics as they are; a mean over no defined case is NaN. Lesion metrics (rows with a
`lesion_size_edges_mm` column, as `case_metrics` writes them; older rows without it get none)
add the pooled lesion counts (`tumor_lesions_true_total`, `tumor_lesions_fp_total`, ...) and
`tumor_cases_no_lesion` (cases without a true lesion: what case specificity is taken over).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import registry
from tumorsweep.evaluate.lesions import parse_edges
from tumorsweep.evaluate.metrics import LESION_EDGES_COLUMN

EMPTY_KINDS = ("both", "truth", "pred")


def aggregate(rows: Sequence[Mapping] | pd.DataFrame) -> dict[str, float | int]:
    """Mean, std, count and pooled value per class and metric, plus empty-mask counts."""
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if table.empty:
        raise TumorsweepError("aggregate: no case rows to summarise")
    metrics, lesions = _row_metrics(table)
    summary: dict[str, float | int] = {}
    for name in registry.CLASSES:
        empty = _column(table, f"{name}_empty").fillna("").astype(str)

        def column(count: str, name: str = name) -> np.ndarray:
            return _numeric(table, f"{name}_{count}")

        for metric in metrics:
            if name not in metric.classes:
                continue
            key = metric.key(name)
            undefined = (empty != "") if metric.nan_when_empty else None
            if metric.defined_when is not None:
                undefined = pd.Series(~metric.defined_when(column), index=table.index)
            values = _numeric(table, key, undefined)
            defined = values[~np.isnan(values)]
            summary[key] = float(defined.mean()) if defined.size else math.nan
            summary[f"{key}_std"] = float(defined.std(ddof=0)) if defined.size else math.nan
            summary[f"{key}_n"] = int(defined.size)
            if metric.pooled is not None:
                summary[f"{key}_global"] = metric.pooled(column)
            for count in metric.totals:
                summary[f"{name}_{count}_total"] = int(column(count).sum())
        for kind in EMPTY_KINDS:
            summary[f"{name}_empty_{kind}"] = int((empty == kind).sum())
    if lesions:
        summary["tumor_cases_no_lesion"] = int((_numeric(table, "tumor_lesions_true") == 0).sum())
    return summary


def _row_metrics(table: pd.DataFrame) -> tuple[tuple[registry.Metric, ...], bool]:
    """The metrics the rows were scored with, and whether they carry lesion metrics: the
    diameter buckets come from the rows' `lesion_size_edges_mm` (one value for all rows)."""
    if LESION_EDGES_COLUMN not in table.columns:
        plain = tuple(m for m in registry.METRICS if m not in registry.LESION_METRICS)
        return plain, False
    edges = set(table[LESION_EDGES_COLUMN].astype(str))
    if len(edges) != 1:
        raise TumorsweepError(
            f"aggregate: rows scored with different lesion size edges {sorted(edges)}"
        )
    try:
        parsed = parse_edges(edges.pop())
    except ValueError:
        raise TumorsweepError(
            f"aggregate: column {LESION_EDGES_COLUMN!r} is not a list of numbers"
        ) from None
    return registry.metrics(parsed), True


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
