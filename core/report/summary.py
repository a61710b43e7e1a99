"""Tidy runs and per-case values -> one row of statistics per configuration x metric.

A configuration is one table column (experiment, label). Its numbers come from finished
trials only: mean and sample std (ddof=1) over seeds of the trial's logged metric, the
bootstrap interval and the paired test of `core.report.stats` on its trials x cases matrix,
and Holm's correction over all comparisons of one experiment's table. A published value is
matched on backbone, evaluation set and params (`core.report.reference`) and is comparable
only when our trials used the protocol it was scored with.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from core.evaluate.registry import summary_names
from core.report.labels import is_missing
from core.report.reference import match_published
from core.report.runs import PROTOCOL_PARAM, param_columns
from core.report.stats import (
    ALPHA,
    BOOTSTRAP_SEED,
    N_RESAMPLES,
    bootstrap_ci,
    ci_method,
    holm,
    paired_test,
)

TABLE_METRICS = tuple(summary_names())
# Why a column has no number, most hopeful first (what `status` says when nothing finished).
NO_NUMBER_STATUS = (
    ("n_running", "running"),
    ("n_stale", "stale (driver gone)"),
    ("n_killed", "KILLED"),
    ("n_failed", "FAILED"),
)


def case_matrix(per_case: pd.DataFrame, experiment: str, label: str, metric: str) -> pd.DataFrame:
    """One configuration's per-case values: trials (run_id, by seed) x cases (sorted), NaN kept."""
    chosen = per_case[
        (per_case["experiment"] == experiment)
        & (per_case["label"] == label)
        & (per_case["metric"] == metric)
    ]
    matrix = chosen.groupby(["run_id", "case"])["value"].mean().unstack("case")
    trials = chosen.drop_duplicates("run_id").sort_values(["seed", "run_id"], na_position="last")
    return matrix.reindex(index=trials["run_id"], columns=sorted(matrix.columns))


def case_means(per_case: pd.DataFrame, experiment: str, label: str, metric: str) -> pd.Series:
    """One configuration's per-case values averaged over seeds, indexed by sorted case name."""
    return case_matrix(per_case, experiment, label, metric).mean(axis=0).dropna()


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


def _union(json_lists: pd.Series) -> list[str]:
    return list(dict.fromkeys(item for text in json_lists for item in json.loads(text)))


def configurations(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (experiment, label), in table order: baseline, then by knob.

    Columns: experiment, label, backbone, eval_set, config_key, swept (list), is_baseline,
    the param columns (values of its first trial), protocol (its trials' `eval.protocol`, or
    "mixed: ..."), overrides and data_warnings (lists over its trials and their sweeps), and
    the trial counts n_trials, n_finished, n_failed, n_killed, n_running, n_stale.
    """
    trials = runs.drop_duplicates("run_id")
    params = param_columns(runs)
    rows = []
    for (experiment, label), group in trials.groupby(["experiment", "label"], sort=False):
        first = group.iloc[0]
        swept = json.loads(first["swept"])
        baseline = json.loads(first["baseline"])
        status = group["status"]
        protocols = sorted(set(group[PROTOCOL_PARAM]))
        protocol = protocols[0] if len(protocols) == 1 else "mixed: " + ", ".join(protocols)
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
                "protocol": protocol,
                "overrides": _union(group["overrides"]),
                "data_warnings": _union(group.drop_duplicates("parent_run_id")["data_warnings"]),
                "n_trials": len(group),
                "n_finished": int((status == "FINISHED").sum()),
                "n_failed": int((status == "FAILED").sum()),
                "n_killed": int((status == "KILLED").sum()),
                "n_running": int((status == "RUNNING").sum()),
                "n_stale": int((status == "STALE").sum()),
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


def _status_without_numbers(config: dict[str, Any]) -> str:
    if not config["n_finished"]:
        for count, status in NO_NUMBER_STATUS:
            if config[count]:
                return status
    return "n/a"


def _published(config: dict[str, Any], params: dict[str, Any]) -> dict[str, pd.Series]:
    published = match_published(
        str(config["backbone"]), str(config["eval_set"]), params, config["swept"]
    )
    return {metric: row for metric, row in published.set_index("metric").iterrows()}


def summarise(
    runs: pd.DataFrame,
    per_case: pd.DataFrame,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Statistics per configuration x metric (of `TABLE_METRICS`), in table order.

    Columns: the `configurations` columns, then metric, n_seeds, mean, std, status ("ok", or
    why there is no number: "running", "stale (driver gone)", "KILLED", "FAILED", "n/a"),
    n_cases, ci_low, ci_high, ci_method ("seeds+cases", "cases"), baseline_label, test
    ("two-level t", "case sign-flip"), p_value (raw), n_paired (shared cases), p_holm (Holm
    over the experiment's comparisons), significant (p_holm < alpha), published, paper,
    published_label, published_source, published_protocol, published_comparable.
    """
    configs = configurations(runs)
    finished = runs[(runs["status"] == "FINISHED") & runs["value"].notna()]
    rows = []
    for config in configs.to_dict("records"):
        baseline = configs[
            (configs["experiment"] == config["experiment"])
            & (configs["eval_set"] == config["eval_set"])
            & configs["is_baseline"]
        ]
        baseline_label = None if baseline.empty else baseline["label"].iloc[0]
        published = _published(config, {name: config[name] for name in param_columns(runs)})
        for metric in TABLE_METRICS:
            values = finished[
                (finished["experiment"] == config["experiment"])
                & (finished["label"] == config["label"])
                & (finished["metric"] == metric)
            ]["value"].to_numpy()
            matrix = case_matrix(per_case, config["experiment"], config["label"], metric)
            scored = matrix.dropna(how="all").dropna(axis=1, how="all")
            low, high = bootstrap_ci(scored.to_numpy(), n_resamples, seed)
            test = None
            if baseline_label is not None and baseline_label != config["label"]:
                base = case_matrix(per_case, config["experiment"], baseline_label, metric)
                test = paired_test(scored, base.dropna(how="all"), seed)
            reference = published.get(metric)
            rows.append(
                {
                    **config,
                    "metric": metric,
                    "n_seeds": len(values),
                    "mean": float(values.mean()) if len(values) else math.nan,
                    "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "status": "ok" if len(values) else _status_without_numbers(config),
                    "n_cases": scored.shape[1],
                    "ci_low": low,
                    "ci_high": high,
                    "ci_method": ci_method(len(scored)) if scored.size else None,
                    "baseline_label": baseline_label,
                    "test": test.method if test else None,
                    "p_value": test.p_value if test else math.nan,
                    "n_paired": test.n_cases if test else 0,
                    "published": math.nan if reference is None else reference["value"],
                    "paper": math.nan if reference is None else reference["paper"],
                    "published_label": None if reference is None else reference["label"],
                    "published_source": None if reference is None else reference["source"],
                    "published_protocol": None if reference is None else reference["protocol"],
                    "published_comparable": reference is not None
                    and reference["protocol"] == config["protocol"],
                }
            )
    summary = pd.DataFrame.from_records(rows)
    summary["p_holm"] = math.nan
    for _, group in summary.groupby("experiment", sort=False):
        summary.loc[group.index, "p_holm"] = holm(group["p_value"].to_numpy())
    summary["significant"] = summary["p_holm"] < alpha
    return summary
