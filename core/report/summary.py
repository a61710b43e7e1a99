"""Tidy runs and per-case values -> one row of statistics per configuration x metric.

A configuration is one table column (experiment, label). Its numbers come from finished
trials only: mean and sample std (ddof=1) over its trials (seeds; with cross-validation,
folds or seeds x folds: `unit`) of the trial's logged metric, the bootstrap interval and the
paired test of `tumorsweep.report.stats` on its trials x cases matrix (with folds: cases pooled
over folds for the interval, folds as the second level of the test), and Holm's correction
over all comparisons of one experiment's table. A published value is
matched on backbone, evaluation set and params (`tumorsweep.report.reference`) and is comparable
only when our trials used the protocol it was scored with.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from tumorsweep.evaluate.registry import summary_names
from tumorsweep.report.labels import is_missing
from tumorsweep.report.reference import match_published
from tumorsweep.report.runs import PROTOCOL_PARAM, param_columns
from tumorsweep.report.stats import (
    ALPHA,
    BOOTSTRAP_SEED,
    N_RESAMPLES,
    bootstrap_ci,
    ci_method,
    fold_paired_test,
    holm,
    paired_test,
    pool_folds,
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
    """One configuration's per-case values: trials (run_id, by seed and fold) x cases (sorted),
    NaN kept (with folds, a trial has values for its fold's cases only)."""
    chosen = _chosen(per_case, experiment, label, metric)
    matrix = chosen.groupby(["run_id", "case"])["value"].mean().unstack("case")
    order = chosen.drop_duplicates("run_id").sort_values(
        ["seed", "fold", "run_id"], na_position="last"
    )
    return matrix.reindex(index=order["run_id"], columns=sorted(matrix.columns))


def _chosen(per_case: pd.DataFrame, experiment: str, label: str, metric: str) -> pd.DataFrame:
    return per_case[
        (per_case["experiment"] == experiment)
        & (per_case["label"] == label)
        & (per_case["metric"] == metric)
    ]


def _trial_column(per_case: pd.DataFrame, experiment: str, label: str, column: str) -> pd.Series:
    """The seed or fold of each trial of a configuration, indexed by run_id."""
    chosen = per_case[(per_case["experiment"] == experiment) & (per_case["label"] == label)]
    return chosen.drop_duplicates("run_id").set_index("run_id")[column]


def trial_unit(seeds: int, folds: int) -> str:
    """What a configuration's trials are: "seeds", "folds" or "seeds x folds"."""
    if not folds:
        return "seeds"
    return "folds" if seeds <= 1 else "seeds x folds"


def case_means(per_case: pd.DataFrame, experiment: str, label: str, metric: str) -> pd.Series:
    """One configuration's per-case values averaged over its trials (seeds, and folds that
    scored the case), indexed by sorted case name."""
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
    "mixed: ..."), overrides, deviations and data_warnings (lists over its trials and their
    sweeps), the
    trial counts n_trials, n_finished, n_failed, n_killed, n_running, n_stale, n_folds
    (distinct folds, 0 without cross-validation) and unit (`trial_unit`).
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
        n_folds = int(group["fold"].dropna().nunique())
        rows.append(
            {
                "experiment": experiment,
                "label": label,
                "backbone": first["backbone"],
                "eval_set": first["eval_set"],
                "config_key": first["config_key"],
                "published_column": first.get("published_column"),
                "swept": swept,
                "is_baseline": bool(baseline)
                and all(_equal(first.get(k), v) for k, v in baseline.items()),
                **{name: first[name] for name in params},
                "protocol": protocol,
                "overrides": _union(group["overrides"]),
                "deviations": _union(group["deviations"]),
                "data_warnings": _union(group.drop_duplicates("parent_run_id")["data_warnings"]),
                "n_trials": len(group),
                "n_finished": int((status == "FINISHED").sum()),
                "n_failed": int((status == "FAILED").sum()),
                "n_killed": int((status == "KILLED").sum()),
                "n_running": int((status == "RUNNING").sum()),
                "n_stale": int((status == "STALE").sum()),
                "n_folds": n_folds,
                "unit": trial_unit(group["seed"].nunique(), n_folds),
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
    column = config.get("published_column")
    published = match_published(
        str(config["backbone"]),
        str(config["eval_set"]),
        params,
        config["swept"],
        column=None if is_missing(column) else tuple(json.loads(column)),
    )
    return {metric: row for metric, row in published.set_index("metric").iterrows()}


def _missing_counts(missing: pd.DataFrame | None) -> dict[tuple[str, str], int]:
    """Finished trials without their per-case table, per (experiment, label)."""
    if missing is None or missing.empty:
        return {}
    return {key: len(group) for key, group in missing.groupby(["experiment", "label"])}


def _case_statistics(
    per_case: pd.DataFrame,
    config: dict[str, Any],
    base: pd.Series | None,
    metric: str,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Interval and paired test of one configuration x metric from its per-case values
    (none where its or its baseline's per-case tables are missing)."""
    experiment, label = config["experiment"], config["label"]
    baseline_label = None if base is None else base["label"]
    none = {"n_cases": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": None}
    none |= {"baseline_label": baseline_label, "test": None, "p_value": math.nan, "n_paired": 0}
    if config["n_per_case_missing"]:
        return none
    scored = case_matrix(per_case, experiment, label, metric)
    scored = scored.dropna(how="all").dropna(axis=1, how="all")
    scored_rows = scored
    if config["n_folds"] and not scored.empty:  # one row per seed, folds' cases pooled
        scored_rows = pool_folds(scored, _trial_column(per_case, experiment, label, "seed"))
    low, high = bootstrap_ci(scored_rows.to_numpy(), n_resamples, seed)
    result = none | {"n_cases": scored.shape[1], "ci_low": low, "ci_high": high}
    result["ci_method"] = ci_method(len(scored_rows)) if scored.size else None
    if base is None or baseline_label == label or base["n_per_case_missing"]:
        return result
    theirs = case_matrix(per_case, experiment, baseline_label, metric).dropna(how="all")
    if config["n_folds"] and base["n_folds"]:
        test = fold_paired_test(
            scored,
            theirs,
            _trial_column(per_case, experiment, label, "fold"),
            _trial_column(per_case, experiment, baseline_label, "fold"),
        )
    else:
        test = paired_test(scored, theirs, seed)
    return result | {"test": test.method, "p_value": test.p_value, "n_paired": test.n_cases}


def _published_columns(reference: pd.Series | None, config: dict[str, Any]) -> dict[str, Any]:
    """The published value matched to a configuration x metric, and the deviations from it."""

    def given(key: str) -> Any:
        return None if reference is None else reference[key]

    return {
        "published": math.nan if reference is None else reference["value"],
        "paper": math.nan if reference is None else reference["paper"],
        "published_label": given("label"),
        "published_source": given("source"),
        "published_protocol": given("protocol"),
        "published_comparable": reference is not None
        and reference["protocol"] == config["protocol"],
        "published_pool": given("pool"),
        "published_no_code": given("no_public_code"),
        "published_reading": given("reading"),
        # a param the published column itself sets is no deviation from it
        "deviations": [
            d
            for d in config["deviations"]
            if reference is None or d.split("=", 1)[0] not in reference["params"]
        ],
    }


def _baseline_row(configs: pd.DataFrame, config: dict[str, Any]) -> pd.Series | None:
    """The baseline configuration of a configuration's experiment and evaluation set."""
    baseline = configs[
        (configs["experiment"] == config["experiment"])
        & (configs["eval_set"] == config["eval_set"])
        & configs["is_baseline"]
    ]
    return None if baseline.empty else baseline.iloc[0]


def summarise(
    runs: pd.DataFrame,
    per_case: pd.DataFrame,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = ALPHA,
    missing: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Statistics per configuration x metric (of `TABLE_METRICS`), in table order.

    Columns: the `configurations` columns, then metric, n_seeds (trials with a value: seeds,
    or seeds x folds), mean, std, status ("ok", or why there is no number: "running", "stale
    (driver gone)", "KILLED", "FAILED", "n/a"), n_per_case_missing (finished trials whose
    per-case table was not found, from `missing` of `read_per_case`), n_cases (NaN where
    tables are missing), ci_low, ci_high, ci_method
    ("seeds+cases", "cases"; with folds over the cases pooled over folds), baseline_label,
    test ("two-level t", "case sign-flip", "fold-paired t" when both have folds), p_value
    (raw), n_paired (shared cases), p_holm (Holm over the experiment's comparisons),
    significant (p_holm < alpha), published, paper, published_label, published_source,
    published_protocol, published_comparable, published_pool ({"cases", "text"} or None),
    published_no_code (why no public code makes it, or None), published_reading; deviations
    keeps only the params the matched published column does not set itself. A column with a
    missing per-case table gets no interval and no test, nor does any column tested against
    it: an interval over the trials that happen to have tables would claim what is not there.
    """
    configs = configurations(runs)
    lacking = _missing_counts(missing)
    configs["n_per_case_missing"] = [
        lacking.get((c["experiment"], c["label"]), 0) for c in configs.to_dict("records")
    ]
    finished = runs[(runs["status"] == "FINISHED") & runs["value"].notna()]
    rows = []
    for config in configs.to_dict("records"):
        base = _baseline_row(configs, config)
        published = _published(config, {name: config[name] for name in param_columns(runs)})
        for metric in TABLE_METRICS:
            values = finished[
                (finished["experiment"] == config["experiment"])
                & (finished["label"] == config["label"])
                & (finished["metric"] == metric)
            ]["value"].to_numpy()
            row = {
                **config,
                "metric": metric,
                "n_seeds": len(values),
                "mean": float(values.mean()) if len(values) else math.nan,
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "status": "ok" if len(values) else _status_without_numbers(config),
                **_case_statistics(per_case, config, base, metric, n_resamples, seed),
            }
            rows.append(row | _published_columns(published.get(metric), config))
    summary = pd.DataFrame.from_records(rows)
    summary["p_holm"] = math.nan
    for _, group in summary.groupby("experiment", sort=False):
        summary.loc[group.index, "p_holm"] = holm(group["p_value"].to_numpy())
    summary["significant"] = summary["p_holm"] < alpha
    return summary
