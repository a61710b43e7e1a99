"""Per-configuration statistics the published tables lack: seeds, bootstrap CIs, paired tests.

For each configuration (one table column) and metric:
- mean and sample standard deviation (ddof=1) over the seeds of finished trials, from the
  trial's logged metric (the per-case mean on its evaluation set);
- a 95% bootstrap interval over cases: each case's value is first averaged over the seeds
  that scored it (NaN ignored), cases left without a value are dropped, cases are sorted by
  name, then `numpy.random.default_rng(seed).integers(0, n, size=(n_resamples, n))` picks
  the resamples and the 2.5th and 97.5th percentiles of their means are the bounds;
- a two-sided paired Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) of those seed-averaged
  per-case values against the study's baseline column on the same evaluation set, over the
  cases both have (p = 1 when every difference is zero).
Failed and unfinished trials never contribute numbers; a column without any says why.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from core.report.labels import is_missing
from core.report.reference import match_published
from core.report.runs import param_columns

TABLE_METRICS = ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd")
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ALPHA = 0.05


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of `values` (NaN, NaN when empty)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(n_resamples, values.size))
    low, high = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def paired_wilcoxon(ours: pd.Series, baseline: pd.Series) -> tuple[float, int]:
    """Two-sided Wilcoxon p-value over the cases (index) both series score, and their count."""
    shared = pd.concat([ours.rename("ours"), baseline.rename("base")], axis=1, join="inner")
    shared = shared.dropna()
    if shared.empty:
        return math.nan, 0
    if (shared["ours"] == shared["base"]).all():
        return 1.0, len(shared)
    return float(wilcoxon(shared["ours"], shared["base"]).pvalue), len(shared)


def case_means(per_case: pd.DataFrame, experiment: str, label: str, metric: str) -> pd.Series:
    """One configuration's per-case values averaged over seeds, indexed by sorted case name."""
    chosen = per_case[
        (per_case["experiment"] == experiment)
        & (per_case["label"] == label)
        & (per_case["metric"] == metric)
    ]
    return chosen.groupby("case", sort=True)["value"].mean().dropna()


def _equal(ours: Any, wanted: Any) -> bool:
    if is_missing(ours) or is_missing(wanted):
        return is_missing(ours) and is_missing(wanted)
    if isinstance(ours, int | float) and isinstance(wanted, int | float):
        return math.isclose(float(ours), float(wanted), abs_tol=1e-9)
    return ours == wanted


def _sort_key(value: Any) -> tuple[int, Any]:
    if is_missing(value):
        return (2, "")
    if isinstance(value, int | float):
        return (0, float(value))
    return (1, str(value))


def configurations(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (experiment, label), in table order: baseline, then by knob.

    Columns: experiment, label, backbone, eval_set, config_key, swept (list), is_baseline,
    the param columns (values of its first trial), and the trial counts by status.
    """
    trials = runs.drop_duplicates("run_id")
    params = param_columns(runs)
    rows = []
    for (experiment, label), group in trials.groupby(["experiment", "label"], sort=False):
        first = group.iloc[0]
        swept = json.loads(first["swept"])
        baseline = json.loads(first["baseline"])
        status = group["status"]
        rows.append(
            {
                "experiment": experiment,
                "label": label,
                "backbone": first["backbone"],
                "eval_set": first["eval_set"],
                "config_key": first["config_key"],
                "swept": swept,
                "is_baseline": bool(baseline)
                and all(_equal(first.get(k), v) for k, v in baseline.items()),
                **{name: first[name] for name in params},
                "n_trials": len(group),
                "n_finished": int((status == "FINISHED").sum()),
                "n_failed": int(status.isin(["FAILED", "KILLED"]).sum()),
                "n_running": int((status == "RUNNING").sum()),
            }
        )
    table = pd.DataFrame.from_records(rows)
    experiments = list(dict.fromkeys(trials["experiment"]))
    order = sorted(
        range(len(rows)),
        key=lambda i: (
            experiments.index(rows[i]["experiment"]),
            not rows[i]["is_baseline"],
            tuple(_sort_key(rows[i][k]) for k in rows[i]["swept"]),
            str(rows[i]["eval_set"]),
        ),
    )
    return table.iloc[order].reset_index(drop=True)


def _status_without_numbers(config: pd.Series) -> str:
    if config["n_finished"]:
        return "n/a"
    if config["n_running"]:
        return "running"
    if config["n_failed"]:
        return "FAILED"
    return "n/a"


def summarise(
    runs: pd.DataFrame,
    per_case: pd.DataFrame,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Statistics per configuration x metric (of `TABLE_METRICS`), in table order.

    Columns: the `configurations` columns, then metric, n_seeds, mean, std, status ("ok", or
    why there is no number: "FAILED", "running", "n/a"), n_cases, ci_low, ci_high,
    baseline_label, p_value, n_paired, significant (p < alpha), published, paper,
    published_label, published_source.
    """
    configs = configurations(runs)
    finished = runs[(runs["status"] == "FINISHED") & runs["value"].notna()]
    rows = []
    for config in configs.to_dict("records"):
        config_series = pd.Series(config)
        baseline = configs[
            (configs["experiment"] == config["experiment"])
            & (configs["eval_set"] == config["eval_set"])
            & configs["is_baseline"]
        ]
        baseline_label = None if baseline.empty else baseline["label"].iloc[0]
        params = {name: config[name] for name in param_columns(runs)}
        published = match_published(
            str(config["backbone"]), str(config["eval_set"]), params, config["swept"]
        )
        for metric in TABLE_METRICS:
            values = finished[
                (finished["experiment"] == config["experiment"])
                & (finished["label"] == config["label"])
                & (finished["metric"] == metric)
            ]["value"].to_numpy()
            cases = case_means(per_case, config["experiment"], config["label"], metric)
            low, high = bootstrap_ci(cases.to_numpy(), n_resamples, seed)
            p_value, n_paired = math.nan, 0
            if baseline_label is not None and baseline_label != config["label"]:
                base_cases = case_means(per_case, config["experiment"], baseline_label, metric)
                p_value, n_paired = paired_wilcoxon(cases, base_cases)
            reference = published[published["metric"] == metric]
            rows.append(
                {
                    **config,
                    "metric": metric,
                    "n_seeds": len(values),
                    "mean": float(values.mean()) if len(values) else math.nan,
                    "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "status": "ok" if len(values) else _status_without_numbers(config_series),
                    "n_cases": len(cases),
                    "ci_low": low,
                    "ci_high": high,
                    "baseline_label": baseline_label,
                    "p_value": p_value,
                    "n_paired": n_paired,
                    "significant": bool(p_value < alpha),
                    "published": reference["value"].iloc[0] if len(reference) else math.nan,
                    "paper": reference["paper"].iloc[0] if len(reference) else math.nan,
                    "published_label": reference["label"].iloc[0] if len(reference) else None,
                    "published_source": reference["source"].iloc[0] if len(reference) else None,
                }
            )
    return pd.DataFrame.from_records(rows)
