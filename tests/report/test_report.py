"""tumorsweep.report against a real MLflow SQLite store holding known sweeps (tracking names).

The store: experiment `sphere_ratio` with an old sweep and a latest one scored with the hu2023
protocol (sphere ratio 0, 0.15, 0.25 x seeds 0-2 finished, one 0.25 seed FAILED, 0.05 only
RUNNING, 0.10 only FAILED, 0.12 one seed without liver_nsd, one 0.15 seed without tumor_nsd); a
small `backbones` study from before the `eval.protocol` param; `seed_noise`, where whole
training runs are better or worse on every case, with overrides and a data warning;
`stopped`, with KILLED trials and RUNNING ones whose driver is gone, alive, or elsewhere;
studies with hostile names; and an experiment with no runs. Expected numbers are computed
here from the values written, with scipy and numpy.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from notebook_util import execute_aggregate_notebook
from report_util import (  # tests/ is on the path
    CASES,
    METRICS,
    ROW_NAMES,
    SPHERE_SWEPT,
    RunStore,
    unet_params,
)
from scipy import stats

from tumorsweep.cli import main
from tumorsweep.errors import TumorsweepError
from tumorsweep.report import build_report, file_stem, load_runs, paper_table, summary_table
from tumorsweep.report.stats import bootstrap_ci
from tumorsweep.report.tables import notes_markdown, table_notes

HU2023 = {"eval.protocol": "hu2023"}
BASE_CASES = np.linspace(0.45, 0.75, len(CASES))
# seed_noise: per-trial shifts shared by every case (no other noise): seeds dominate
SEED_SHIFTS = {0.0: [0.0, 0.08, -0.06], 0.15: [0.07, -0.02, 0.12], 0.25: [0.20, 0.22, 0.24]}
DATA_WARNING = "training and test lists share 2 cases: liver_13, liver_15"


def _shifted(shift: float) -> pd.DataFrame:
    return pd.DataFrame({"case": CASES, **{m: BASE_CASES + shift for m in METRICS}})


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _driver(pid: int, host: str | None = None) -> dict:
    return {"tumorsweep.driver_host": host or socket.gethostname(), "tumorsweep.driver_pid": pid}


HOSTILE = ("../../escape_study", "report")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    root = tmp_path_factory.mktemp("mlflow")
    s = RunStore(root)
    exp = s.experiment("sphere_ratio")
    old = s.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=1_000)
    new = s.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=2_000)
    s.trial(exp, old, unet_params(0.5), seed=0)
    for ratio in (0.0, 0.15, 0.25):
        for seed in range(3):
            failed = ratio == 0.25 and seed == 2
            drop = ("tumor_nsd",) if (ratio, seed) == (0.15, 0) else ()
            status = "FAILED" if failed else "FINISHED"
            s.trial(exp, new, unet_params(ratio, **HU2023), seed, status, drop)
    s.trial(exp, new, unet_params(0.05, **HU2023), 0, "RUNNING")
    s.trial(exp, new, unet_params(0.10, **HU2023), 0, "FAILED")
    s.trial(exp, new, unet_params(0.12, **HU2023), 0, drop=("liver_nsd",))
    bb = s.experiment("backbones")
    swept = ["model.name", "data.real_fraction"]
    sweep = s.sweep(bb, swept, {"model.name": "unet", "data.real_fraction": 0.0}, start=3_000)
    for real in (False, True):
        s.trial(
            bb, sweep, {**unet_params(0.0), "data.real_fraction": float(real)}, 0, eval_set="global"
        )
    noise = s.experiment("seed_noise")
    warned = {"tumorsweep.data_warnings": json.dumps([DATA_WARNING])}
    sweep = s.sweep(noise, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, 4_000, warned)
    for ratio, shifts in SEED_SHIFTS.items():
        for seed, shift in enumerate(shifts):
            params = unet_params(ratio, **{"eval.protocol": "tumorsweep"})
            params["eval.allow_test_selection"] = ratio == 0.15
            params["data.allow_overlap"] = (ratio, seed) == (0.0, 1)
            params["generator.released"] = ratio == 0.15
            s.trial(noise, sweep, params, seed, eval_set="test", table=_shifted(shift))
    stopped = s.experiment("stopped")
    gone = s.sweep(
        stopped, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, 5_000, _driver(_dead_pid())
    )
    s.trial(stopped, gone, unet_params(0.15), 0, "KILLED")
    s.trial(stopped, gone, unet_params(0.25), 0, "RUNNING")
    elsewhere = s.sweep(
        stopped, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, 6_000, _driver(1, "elsewhere")
    )
    s.trial(stopped, elsewhere, unet_params(0.10), 0, "RUNNING")
    alive = s.sweep(
        stopped, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, 7_000, _driver(os.getpid())
    )
    s.trial(stopped, alive, unet_params(0.0), 0)
    s.trial(stopped, alive, unet_params(0.05), 0, "RUNNING")
    for name in (str(root / "outside" / "abs_study"), *HOSTILE):
        hostile = s.experiment(name)
        sweep = s.sweep(hostile, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=8_000)
        s.trial(hostile, sweep, unet_params(0.0), 0)
    s.experiment("empty_study")
    return s


def _trials(store: RunStore, exp: str, ratio: float) -> list[pd.DataFrame]:
    key = json.dumps({"synthesis.sphere_ratio": ratio})
    return [t for (e, k, _), t in store.per_case.items() if (e, k) == (exp, key)]


def _matrix(tables: list[pd.DataFrame], metric: str) -> pd.DataFrame:
    """trials x sorted cases, cases no trial scored dropped."""
    rows = [t.set_index("case")[metric].reindex(sorted(CASES)) for t in tables]
    return pd.DataFrame(rows).reset_index(drop=True).dropna(axis=1, how="all")


def _p_value(ours: pd.DataFrame, base: pd.DataFrame) -> float:
    """Two-level Welch t from scipy's standard errors, or scipy's exact paired permutation
    test for a single seed, over the cases every trial of both scored."""
    shared = [c for c in ours.columns if c in base.columns]
    shared = [c for c in shared if ours[c].notna().all() and base[c].notna().all()]
    a, b = ours[shared].to_numpy(), base[shared].to_numpy()
    if len(a) == 1:
        return stats.permutation_test(
            (a.mean(axis=0), b.mean(axis=0)),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            n_resamples=np.inf,
            vectorized=True,
        ).pvalue
    diffs = a.mean(axis=0) - b.mean(axis=0)
    terms = np.array([stats.sem(a.mean(axis=1)), stats.sem(b.mean(axis=1)), stats.sem(diffs)])
    terms = terms**2
    dof = terms.sum() ** 2 / (terms**2 / np.array([len(a) - 1, len(b) - 1, len(diffs) - 1])).sum()
    return 2 * stats.t.sf(abs(diffs.mean()) / np.sqrt(terms.sum()), dof)


def _holm_adjusted(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    scaled = np.minimum(1, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    adjusted = np.empty_like(p)
    adjusted[order] = scaled
    return adjusted


def _expected(store: RunStore, ratio: float, metric: str) -> dict:
    """Mean/std over seeds, bootstrap CI, raw and Holm p computed from what was written."""
    exp = store.client.get_experiment_by_name("sphere_ratio").experiment_id
    key = json.dumps({"synthesis.sphere_ratio": ratio})
    seeds = [v for (e, k, _), v in store.metrics.items() if (e, k) == (exp, key)]
    values = np.array([m[metric] for m in seeds if metric in m])
    ours = _matrix(_trials(store, exp, ratio), metric)
    low, high = bootstrap_ci(ours)
    compared = (0.12, 0.15, 0.25)
    raw = {
        (r, m): _p_value(_matrix(_trials(store, exp, r), m), _matrix(_trials(store, exp, 0.0), m))
        for r in compared
        for m in METRICS
    }
    holm = dict(zip(raw, _holm_adjusted(np.array(list(raw.values()))), strict=True))
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    return {
        "mean": values.mean() if len(values) else math.nan,
        "std": std,
        "low": low,
        "high": high,
        "p": raw.get((ratio, metric), math.nan),
        "p_holm": holm.get((ratio, metric), math.nan),
        "n": len(values),
    }


def report_notes(report, experiment: str) -> list[str]:
    return table_notes(report.summary, experiment)


@pytest.fixture(scope="module")
def report(store: RunStore):
    return build_report(store.uri, "sphere_ratio")


def test_load_runs_is_tidy_and_takes_the_latest_sweep(store: RunStore) -> None:
    runs = load_runs(store.uri, "sphere_ratio")
    assert runs["parent_run_id"].nunique() == 1
    assert 0.5 not in set(runs["synthesis.sphere_ratio"])  # the old sweep's trial
    assert runs["run_id"].nunique() == 3 * 3 + 3
    assert {"experiment", "run_id", "status", "backbone", "eval_set", "config_key", "seed"} <= set(
        runs.columns
    )
    failed = runs[(runs["status"] == "FAILED") & (runs["metric"] == "tumor_dice")]
    assert len(failed) == 2 and failed["value"].isna().all()
    assert set(failed["error"]) == {"RuntimeError: CUDA out of memory"}
    assert np.allclose(runs[runs["metric"] == "train_loss"]["value"], 1 / 3)  # latest epoch
    assert set(runs["label"]) == {
        "UNET",
        "UNET(+5% Sphere)",
        "UNET(+10% Sphere)",
        "UNET(+12% Sphere)",
        "UNET(+15% Sphere)",
        "UNET(+25% Sphere)",
    }
    assert set(runs["eval.protocol"]) == {"hu2023"}
    pooled = load_runs(store.uri, "sphere_ratio", all_sweeps=True)
    assert pooled["parent_run_id"].nunique() == 2 and 0.5 in set(pooled["synthesis.sphere_ratio"])


@pytest.mark.parametrize("ratio", [0.15, 0.25])
@pytest.mark.parametrize("metric", METRICS)
def test_summary_holds_the_independently_computed_numbers(
    store: RunStore, report, ratio: float, metric: str
) -> None:
    expected = _expected(store, ratio, metric)
    label = f"UNET(+{ratio * 100:g}% Sphere)"
    row = report.summary.set_index(["label", "metric"]).loc[(label, metric)]
    assert row["n_seeds"] == expected["n"]
    assert row["mean"] == pytest.approx(expected["mean"], abs=1e-12)
    assert row["std"] == pytest.approx(expected["std"], abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (expected["low"], expected["high"]), abs=1e-12
    )
    assert (row["ci_method"], row["test"]) == ("seeds+cases", "two-level t")
    assert row["p_value"] == pytest.approx(expected["p"], rel=1e-9)
    assert row["p_holm"] == pytest.approx(expected["p_holm"], rel=1e-9)
    cell = paper_table(report.summary, "sphere_ratio").loc[ROW_NAMES[metric], label]
    star = "*" if expected["p_holm"] < 0.05 else ""
    assert cell == (
        f"{expected['mean']:.5f} ± {expected['std']:.5f} "
        f"[{expected['low']:.5f}, {expected['high']:.5f}]{star}"
    )


def test_a_single_seed_gets_a_case_interval_and_a_sign_flip_test(store: RunStore, report) -> None:
    expected = _expected(store, 0.12, "tumor_dice")
    row = report.summary.set_index(["label", "metric"]).loc[("UNET(+12% Sphere)", "tumor_dice")]
    assert (row["ci_method"], row["test"], row["n_paired"]) == ("cases", "case sign-flip", 7)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (expected["low"], expected["high"]), abs=1e-12
    )
    assert row["p_value"] == pytest.approx(expected["p"], abs=1e-12)
    assert row["p_holm"] == pytest.approx(expected["p_holm"], rel=1e-9)
    notes = " ".join(report_notes(report, "sphere_ratio"))
    assert "bootstrap over cases only (one seed: seed-to-seed variance not included) for " in notes
    assert (
        "case-level sign-flip test for UNET(+12% Sphere) (a column with a single seed: the "
        "p-value cannot account for seed variance)" in notes
    )


def test_a_consistent_drop_survives_holm(store: RunStore, report) -> None:
    summary = report.summary.set_index(["label", "metric"])
    row = summary.loc[("UNET(+25% Sphere)", "tumor_dice")]
    assert row["significant"] and row["p_holm"] < 0.05 and row["n_paired"] == len(CASES) - 1
    # liver values carry no effect: raw p-values are not starred once corrected
    liver = summary.xs("liver_dice", level="metric")
    assert not liver["significant"].any()
    assert math.isnan(summary.loc[("UNET", "tumor_dice"), "p_value"])  # the baseline itself
    notes = report_notes(report, "sphere_ratio")
    assert "Holm's correction over the 12 comparisons (metric x column)" in " ".join(notes)


def test_seed_luck_is_not_called_significant(store: RunStore) -> None:
    """Whole runs better or worse on every case: the per-case Wilcoxon of the old report
    calls the columns different; the two-level test (= Welch on per-trial means here, as every
    per-case difference is the same) does not."""
    report = build_report(store.uri, "seed_noise", n_resamples=200)
    row = report.summary.set_index(["label", "metric"]).loc[("UNET(+15% Sphere)", "tumor_dice")]
    ours = np.array(SEED_SHIFTS[0.15]) + BASE_CASES.mean()
    base = np.array(SEED_SHIFTS[0.0]) + BASE_CASES.mean()
    welch = stats.ttest_ind(ours, base, equal_var=False).pvalue
    assert row["p_value"] == pytest.approx(welch, rel=1e-9) and welch > 0.3
    difference = np.mean(SEED_SHIFTS[0.15]) - np.mean(SEED_SHIFTS[0.0])
    old = stats.wilcoxon(BASE_CASES + difference, BASE_CASES).pvalue
    assert old < 0.01 and not row["significant"]
    assert (
        not paper_table(report.summary, "seed_noise")
        .loc["Tumor Dice", "UNET(+15% Sphere)"]
        .endswith("*")
    )


def test_holm_takes_back_a_raw_p_below_alpha(store: RunStore) -> None:
    """seed_noise: 2 columns x 4 metrics against the baseline; +25% beats it on every seed, raw
    p (Welch here) 0.027, but not after Holm over the 8 comparisons."""
    summary = build_report(store.uri, "seed_noise", n_resamples=200).summary
    tested = summary.dropna(subset=["p_value"])
    raw = {
        ratio: stats.ttest_ind(SEED_SHIFTS[ratio], SEED_SHIFTS[0.0], equal_var=False).pvalue
        for ratio in (0.15, 0.25)
    }
    expected = [raw[0.15] if "15%" in label else raw[0.25] for label in tested["label"]]
    assert tested["p_value"].to_numpy() == pytest.approx(expected, rel=1e-9)
    holm = _holm_adjusted(np.array(expected))
    assert tested["p_holm"].to_numpy() == pytest.approx(holm, rel=1e-9)
    strong = tested[tested["label"] == "UNET(+25% Sphere)"]
    assert (strong["p_value"] < 0.05).all() and not strong["significant"].any()
    table = paper_table(summary, "seed_noise")
    assert not any(cell.endswith("*") for cell in table["UNET(+25% Sphere)"])


def test_failed_running_and_missing_are_shown_as_such(report) -> None:
    table = paper_table(report.summary, "sphere_ratio")
    assert (table["UNET(+5% Sphere)"].iloc[:4] == "running").all()
    assert (table["UNET(+10% Sphere)"].iloc[:4] == "FAILED").all()
    assert table.loc["Liver NSD", "UNET(+12% Sphere)"] == "n/a"
    assert table.loc["Tumor Dice", "UNET(+12% Sphere)"].startswith("0.")
    assert table.loc["Trials", "UNET(+25% Sphere)"] == "2/3 seeds, 1 FAILED"
    assert table.loc["Trials", "UNET"] == "3/3 seeds (baseline)"
    assert "0.00000" not in table.to_string()


def test_killed_and_stale_trials_are_shown_as_such(store: RunStore) -> None:
    report = build_report(store.uri, "stopped", all_sweeps=True, n_resamples=200)
    table = paper_table(report.summary, "stopped")
    assert (table["UNET(+15% Sphere)"].iloc[:4] == "KILLED").all()
    assert table.loc["Trials", "UNET(+15% Sphere)"] == "0/1 seeds, 1 KILLED"
    assert (table["UNET(+25% Sphere)"].iloc[:4] == "stale (driver gone)").all()
    assert table.loc["Trials", "UNET(+25% Sphere)"] == "0/1 seeds, 1 stale (driver gone)"
    # driver alive on this machine, or on another machine (cannot tell): still running
    assert (table["UNET(+5% Sphere)"].iloc[:4] == "running").all()
    assert (table["UNET(+10% Sphere)"].iloc[:4] == "running").all()
    assert "0.00000" not in table.to_string()
    notes = " ".join(report_notes(report, "stopped"))
    assert "KILLED: trials stopped by a signal" in notes and "stale (driver gone): " in notes
    assert "no paired tests: no column besides UNET has per-case values" in notes
    latest = build_report(store.uri, "stopped", n_resamples=200).summary
    assert set(latest["label"]) == {"UNET", "UNET(+5% Sphere)"}


def test_published_values_sit_beside_ours_when_scored_alike(report) -> None:
    table = paper_table(report.summary, "sphere_ratio")
    assert list(table.columns[:2]) == ["UNET", "UNET [published]"]
    assert table.loc["Tumor Dice", "UNET [published]"] == "0.57500 (paper 0.5981)"
    assert table.loc["Tumor Dice", "UNET(+15% Sphere) [published]"] == "0.58081"
    assert table.loc["Liver NSD", "UNET(+25% Sphere) [published]"] == "0.85615"
    order = [c for c in table.columns if not c.endswith("[published]")]
    assert order == [
        "UNET",
        "UNET(+5% Sphere)",
        "UNET(+10% Sphere)",
        "UNET(+12% Sphere)",
        "UNET(+15% Sphere)",
        "UNET(+25% Sphere)",
    ]
    notes = " ".join(report_notes(report, "sphere_ratio"))
    assert "published values beside ours were scored like ours (hu2023 protocol)" in notes


def test_a_column_that_left_the_paper_protocol_says_so_beside_the_published_value(
    store: RunStore, report
) -> None:
    """Same protocol and evaluation set, but trained 200 epochs instead of 4000: the published
    value still stands beside ours, and the notes name what differs (neutral params such as
    the dataset path or the selection list are not listed)."""
    exp = store.experiment("short_training")
    sweep = store.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=5_000)
    neutral = {"data.root": "/data/Task03_Liver", "eval.select_on": "validation"}
    for ratio in (0.0, 0.15):
        store.trial(
            exp, sweep, unet_params(ratio, **HU2023, **neutral, **{"schedule.epochs": 200}), 0
        )
    short = build_report(store.uri, "short_training", n_resamples=200)
    assert short.table("short_training").loc["Tumor Dice", "UNET [published]"].startswith("0.575")
    notes = " ".join(report_notes(short, "short_training"))
    assert (
        "UNET, UNET(+15% Sphere) also differ from the published protocol in "
        "schedule.epochs=200: the published value beside them is a reference" in notes
    )
    assert "data.root" not in notes and "eval.select_on" not in notes
    # A param the published column sets itself (the real-tumour control) is no deviation.
    real = store.experiment("short_real_control")
    sweep = store.sweep(real, ["model.name"], {"model.name": "unet"}, start=6_000)
    control = {**HU2023, "data.real_fraction": 1.0, "schedule.epochs": 200}
    store.trial(real, sweep, unet_params(0.0, **control), 0)
    report_real = build_report(store.uri, "short_real_control", n_resamples=200)
    notes = " ".join(report_notes(report_real, "short_real_control"))
    assert "published values beside ours were scored like ours" in notes
    assert "differ from the published protocol in schedule.epochs=200:" in notes
    assert "differ from the published protocol" not in " ".join(
        report_notes(report, "sphere_ratio")
    )


def test_published_values_scored_otherwise_stand_apart(store: RunStore) -> None:
    """Trials from before `eval.protocol` count as tumorsweep; the published UNET(Global) was
    scored with hu2023: it goes to a labelled column at the right, not beside ours."""
    report = build_report(store.uri, "backbones", n_resamples=200)
    table = report.table("backbones")
    apart = "UNET(Synthetic,Global) [published, hu2023 protocol; ours: tumorsweep]"
    assert list(table.columns) == ["UNET(Synthetic,Global)", "UNET(Real,Global)", apart]
    assert table.loc["Tumor Dice", apart] == "0.60817"
    assert not any(c.endswith("[published]") for c in table.columns)
    notes = " ".join(report_notes(report, "backbones"))
    assert (
        "published values for UNET(Synthetic,Global) were scored with the hu2023 protocol "
        "(Hu et al.'s validation.py" in notes
    )
    assert "ours with tumorsweep" in notes and "not comparable" in notes
    assert summary_table(store.uri, "backbones").count("0.60817") == 0


def test_overrides_and_data_warnings_are_declared(store: RunStore, report) -> None:
    report = build_report(store.uri, "seed_noise", n_resamples=200)
    notes = report_notes(report, "seed_noise")
    assert (
        "override eval.allow_test_selection=true in UNET(+15% Sphere): checkpoints may have "
        "been selected on the test list, so these numbers are optimistic" in notes
    )
    assert (
        "override data.allow_overlap=true in UNET: training cases may overlap the validation "
        "or test list, so these numbers are optimistic" in notes
    )
    assert (
        "override generator.released=true in UNET(+15% Sphere): the DiffTumor generator is Chen "
        "et al.'s released weights, trained on cases outside this study's control"
        in " ".join(notes)
    )
    assert f"data warning recorded by the sweep: {DATA_WARNING}" in notes
    assert "no published value matches these columns (backbone, evaluation set test" in " ".join(
        notes
    )
    clean = " ".join(report_notes(report, "sphere_ratio"))
    assert "override" not in clean and "data warning" not in clean


def test_several_experiments_and_real_vs_synthetic_labels(store: RunStore) -> None:
    report = build_report(store.uri, "sphere_ratio, backbones", n_resamples=200)
    assert report.experiments == ["sphere_ratio", "backbones"]
    table = report.table("backbones")
    assert {"UNET(Synthetic,Global)", "UNET(Real,Global)"} <= set(table.columns)
    assert table.loc["Trials", "UNET(Synthetic,Global)"] == "1/1 seeds (baseline)"


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        ("no_such_study", "experiment 'no_such_study' not found"),
        ("empty_study", "experiment 'empty_study' is empty"),
    ],
)
def test_unknown_or_empty_experiment_is_a_clear_error(
    store: RunStore, experiment: str, message: str
) -> None:
    with pytest.raises(TumorsweepError, match=message) as caught:
        load_runs(store.uri, experiment)
    if "not found" in message:
        assert "backbones, empty_study, " in str(caught.value)


def test_summary_table_for_the_end_of_a_sweep(store: RunStore) -> None:
    text = summary_table(store.uri, "sphere_ratio")
    expected = _expected(store, 0.15, "tumor_dice")
    line = next(r for r in text.splitlines() if r.startswith("| UNET(+15% Sphere) "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:4] == [f"{expected['mean']:.5f}", f"{expected['std']:.5f}", "3/3 seeds"]
    assert cells[5] == "0.58081"
    assert "| UNET(+10% Sphere) | FAILED |" in text
    assert (
        text.splitlines()[-1]
        == "- intervals and paired tests against the baseline: tumorsweep report"
    )


def test_summary_table_drops_empty_columns_and_says_why(store: RunStore) -> None:
    # one seed per configuration, scored with tumorsweep's protocol: no std, no published value
    text = summary_table(store.uri, "backbones")
    header = text.splitlines()[0]
    assert "± std" not in header and "Published" not in header and "Seeds" in header
    assert "- no ± std: every configuration ran one seed (--seeds N for more)" in text
    assert "- no published column: no configuration matches a published one" in text


def _report_args(uri: str, experiment: str, out: Path, *more: str) -> list[str]:
    return ["report", "--tracking-uri", uri, "--experiment", experiment, "--out", str(out), *more]


def test_cli_writes_markdown_csv_latex_and_plots(
    store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    assert main(_report_args(store.uri, "sphere_ratio", out, "--resamples", "300")) == 0
    printed = capsys.readouterr().out
    assert "| Tumor Dice |" in printed and "UNET(+15% Sphere)" in printed
    for name in ("report.md", "summary.csv", "runs.csv", "sphere_ratio.md", "sphere_ratio.csv"):
        assert (out / name).stat().st_size > 0
    tex = (out / "sphere_ratio.tex").read_text()
    assert r"\begin{tabular}" in tex and r"UNET(+15\% Sphere)" in tex and r"$\pm$" in tex
    assert "Holm's correction" in tex
    summary = pd.read_csv(out / "summary.csv")
    wanted = {"mean", "std", "ci_low", "ci_high", "ci_method", "test", "p_value", "p_holm"}
    assert wanted | {"published", "published_comparable"} <= set(summary.columns)
    assert (out / "sphere_ratio_knob.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "sphere_ratio_per_case.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "sphere_ratio_lesion_sizes.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_cli_keeps_hostile_experiment_names_inside_out(store: RunStore, tmp_path: Path) -> None:
    absolute = str(store.root / "outside" / "abs_study")
    out = tmp_path / "a" / "b" / "out"
    before = _files_under(store.root) | _files_under(tmp_path)
    names = [absolute, *HOSTILE]
    assert main(_report_args(store.uri, ",".join(names), out, "--resamples", "50")) == 0
    written = (_files_under(store.root) | _files_under(tmp_path)) - before
    assert written and all(out in p.parents for p in written)
    assert not (store.root / "outside").exists()
    assert not (tmp_path / "a" / "escape_study.md").exists()
    stems = [file_stem(n) for n in names]
    assert len(set(stems)) == 3 and "report" not in stems
    for stem in stems:
        assert {f"{stem}{e}" for e in (".md", ".csv", ".tex", "_knob.png")} <= {
            p.name for p in written
        }
    assert "## ../../escape_study" in (out / "report.md").read_text()


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("tumorsweep report: error: ")
    return err


def test_cli_unknown_experiment_is_one_line_and_writes_nothing(
    store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert main(_report_args(store.uri, "nope", out)) == 2
    assert "experiment 'nope' not found" in _one_line_error(capsys)
    assert not out.exists()


def test_cli_store_in_a_missing_folder_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"
    assert main(_report_args(uri, "sphere_ratio", tmp_path / "out")) == 2
    err = _one_line_error(capsys)
    assert f"SQLite database {tmp_path / 'missing' / 'mlflow.db'} does not exist" in err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "out").exists()


def test_cli_out_that_is_a_file_is_refused(
    store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "taken.txt"
    out.write_text("mine")
    assert main(_report_args(store.uri, "sphere_ratio", out)) == 2
    assert f"--out {out} is an existing file, not a directory" in _one_line_error(capsys)
    assert out.read_text() == "mine" and _files_under(tmp_path) == {out}


def test_cli_zero_resamples_is_refused(
    store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert main(_report_args(store.uri, "sphere_ratio", out, "--resamples", "0")) == 2
    assert "--resamples must be at least 1, got 0" in _one_line_error(capsys)
    assert not out.exists()


def test_cli_unreachable_server_fails_fast(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    code = main(_report_args(f"http://127.0.0.1:{port}", "sphere_ratio", tmp_path / "out"))
    assert code == 2 and time.monotonic() - start < 10
    assert f"cannot reach the MLflow server at http://127.0.0.1:{port}" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_notebook_runs_top_to_bottom_and_shows_the_tables(
    store: RunStore, report, tmp_path: Path
) -> None:
    outputs = execute_aggregate_notebook(store.uri, "sphere_ratio", tmp_path)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    expected_cell = paper_table(report.summary, "sphere_ratio").loc["Tumor Dice"]
    assert f"| Tumor Dice | {' | '.join(expected_cell)} |" in markdown
    assert "| running |" in markdown and "| FAILED |" in markdown
    assert notes_markdown(report_notes(report, "sphere_ratio")) in markdown
    assert "\n- \\* differs from UNET at 0.05 after Holm's correction" in markdown  # the star kept
    text = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "p_holm" in text and "ci_method" in text and "published_comparable" in text
    assert "| Tumor lesion sensitivity lt10mm |" in markdown  # lesion rows, n/a here
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # knob, per case, sizes


def test_report_with_no_flags_reads_the_store_a_study_wrote_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2  # nothing here yet: refused, nothing created
    assert "does not exist (a report never creates a store)" in _one_line_error(capsys)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "report").exists()
    s = RunStore(tmp_path)  # the store `make study` leaves in its folder
    for name in ("sphere_ratio", "texture"):
        exp = s.experiment(name)
        sweep = s.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=1_000)
        s.trial(exp, sweep, unet_params(0.0), 0)
    s.experiment("not_a_study")  # no sweep run: not reported
    assert main(["report", "--resamples", "50"]) == 0
    assert "## sphere_ratio" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert "sphere_ratio.md" in written and "texture.md" in written
    assert not any(name.startswith("not_a_study") for name in written)


def _moved_store(root: Path) -> tuple[RunStore, dict[str, str]]:
    """A two-column study (2 seeds each) whose artifact folder is then moved away, as when
    mlflow.db is copied without it; returns the store and {run_id: label}."""
    s = RunStore(root)
    exp = s.experiment("moved")
    sweep = s.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=1_000)
    runs = {}
    for ratio in (0.0, 0.25):
        for seed in (0, 1):
            run_id = s.trial(exp, sweep, unet_params(ratio), seed)
            runs[run_id] = f"UNET(+{ratio:.0%} Sphere)" if ratio else "UNET"
    return s, runs


def test_a_store_without_its_artifacts_names_them_and_claims_no_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    s, runs = _moved_store(tmp_path / "store")
    whole = build_report(s.uri, "moved", n_resamples=200)
    assert whole.missing.empty and whole.summary["ci_low"].notna().any()
    recorded = {r: Path(s.client.get_run(r).info.artifact_uri) for r in runs}
    (tmp_path / "store" / "artifacts").rename(tmp_path / "moved_artifacts")
    out = tmp_path / "report"
    assert main(_report_args(s.uri, "moved", out, "--resamples", "200")) == 0
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if line.startswith("tumorsweep report: warning: ")]
    assert len(err) == 4  # one line per run: which artifact, where it was looked for
    experiment_id = s.client.get_experiment_by_name("moved").experiment_id
    for run_id in runs:
        beside = tmp_path / "store" / "mlartifacts"
        places = [
            recorded[run_id],
            beside / experiment_id / run_id / "artifacts",
            beside / run_id / "artifacts",
        ]
        (line,) = [line for line in err if run_id in line]
        looked = " and ".join(map(str, places))
        assert f"per_case_test.csv not found (looked in {looked})" in line
    summary = pd.read_csv(out / "summary.csv")
    assert summary["ci_low"].isna().all() and summary["p_value"].isna().all()
    assert summary["n_cases"].isna().all() and (summary["n_per_case_missing"] == 2).all()
    # the means are still the logged ones, the same as with the artifacts
    pd.testing.assert_series_equal(summary["mean"], whole.summary["mean"], check_names=False)
    markdown = (out / "report.md").read_text()
    assert "[95% bootstrap CI" not in markdown and "95% CI:" not in markdown
    assert "| UNET † |" in markdown and "no 95% intervals" in markdown
    assert markdown.count("per_case_test.csv not found") == 4
    tex = (out / "moved.tex").read_text()
    assert tex.count(r"\begin{table}") == 1 and "bootstrap intervals" not in tex
    assert r"UNET $^\dagger$" in tex and "[0." not in tex
    # the plot legend claims no interval either
    from tumorsweep.report import plot_knob

    report = build_report(s.uri, "moved", n_resamples=200)
    legends = [t.get_text() for ax in plot_knob(report.summary, "moved").axes for t in
               ax.get_legend().get_texts()]  # fmt: skip
    assert legends and not any("CI)" in t for t in legends)
    assert any("no CI" in t for t in legends)

    # pointed at the moved folder, the report is whole again: the same intervals
    out2 = tmp_path / "report2"
    more = ("--resamples", "200", "--artifact-root", str(tmp_path / "moved_artifacts"))
    assert main(_report_args(s.uri, "moved", out2, *more)) == 0
    assert "not found" not in capsys.readouterr().err
    again = pd.read_csv(out2 / "summary.csv")
    np.testing.assert_allclose(again["ci_low"], whole.summary["ci_low"], equal_nan=True)
    np.testing.assert_allclose(again["p_value"], whole.summary["p_value"], equal_nan=True)
    assert (again["n_per_case_missing"] == 0).all()
    tex = (out2 / "moved.tex").read_text()
    assert tex.count(r"\begin{table}") == 2 and "$^\\dagger$" not in tex


def test_one_trial_without_its_table_costs_its_column_and_the_tests_against_it(
    tmp_path: Path,
) -> None:
    s, runs = _moved_store(tmp_path / "store")
    lost = next(r for r, label in runs.items() if label == "UNET")
    import shutil

    shutil.rmtree(Path(s.client.get_run(lost).info.artifact_uri).parent)
    report = build_report(s.uri, "moved", n_resamples=200)
    assert list(report.missing["run_id"]) == [lost]
    by_label = report.summary.set_index(["label", "metric"])
    assert np.isnan(by_label.loc[("UNET", "tumor_dice"), "ci_low"])
    # the other column keeps its interval, but no test against a baseline it cannot pair with
    other = by_label.loc[("UNET(+25% Sphere)", "tumor_dice")]
    assert other["ci_low"] < other["mean"] < other["ci_high"] and np.isnan(other["p_value"])
    notes = table_notes(report.summary, "moved")
    assert any(n.startswith("† per-case tables (per_case_test.csv) not found for UNET (1 of 2")
               for n in notes)  # fmt: skip


def test_notebook_on_a_store_without_its_artifacts_says_so(tmp_path: Path) -> None:
    s, runs = _moved_store(tmp_path / "store")
    (tmp_path / "store" / "artifacts").rename(tmp_path / "moved_artifacts")
    (tmp_path / "nb").mkdir()
    outputs = execute_aggregate_notebook(s.uri, "moved", tmp_path / "nb")
    streams = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    for run_id in runs:
        assert f"run {run_id}: per_case_test.csv not found" in streams
    assert "TqdmWarning" not in streams and "IProgress" not in streams
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "[95% bootstrap CI" not in markdown and "| UNET † |" in markdown
    # pointed at the moved folder: whole
    (tmp_path / "nb2").mkdir()
    outputs = execute_aggregate_notebook(
        s.uri, "moved", tmp_path / "nb2", artifact_root=str(tmp_path / "moved_artifacts")
    )
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "[95% bootstrap CI of the mean]" in markdown and "†" not in markdown


def test_deviations_are_from_the_studys_own_preset(store: RunStore) -> None:
    """A trial run with the hu2023-commands preset (the authors' released commands) follows
    its learning rate, AMP and validation interval: no deviation there; the same trial under
    a study tagged with the paper preset lists exactly the params where the two presets
    differ (from the preset files themselves)."""
    from tumorsweep.config import flatten, make_config

    commands = flatten(make_config("hu2023-commands"))
    paper = flatten(make_config("paper"))
    differ = sorted(k for k in commands if json.dumps(commands[k], sort_keys=True, default=str)
                    != json.dumps(paper.get(k), sort_keys=True, default=str))  # fmt: skip
    assert {"optim.lr", "schedule.amp_dtype"} & set(differ)  # the presets do differ
    params = {k: v for k, v in commands.items() if not k.startswith("data.phantom_")}
    params = {**params, "data.root": "/data/Task03_Liver", "synthesis.sphere_ratio": 0.0}
    deviations = {}
    for preset in ("hu2023-commands", "paper"):
        exp = store.experiment(f"preset_{preset}")
        tags = {"tumorsweep.preset": preset}
        sweep = store.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, 9_000, tags)
        store.trial(exp, sweep, params, 0)
        runs = load_runs(store.uri, f"preset_{preset}")
        deviations[preset] = json.loads(runs["deviations"].iloc[0])
    assert deviations["hu2023-commands"] == []
    neutral = ("data.root", "eval.select_on", "data.cache", "synthesis.sphere_ratio")
    named = [d.split("=", 1)[0] for d in deviations["paper"]]
    assert named and set(named) <= set(differ) and not set(named) & set(neutral)
    assert "optim.lr" in named or "schedule.amp_dtype" in named


def test_latex_is_two_narrow_tables_with_the_notes_as_footnote_lines(
    report, tmp_path: Path
) -> None:
    from tumorsweep.report import write_report

    write_report(report, tmp_path)
    means, intervals = (tmp_path / "sphere_ratio.tex").read_text().split(r"\end{table}")[:2]
    table = paper_table(report.summary, "sphere_ratio")
    expected = report.summary.set_index(["label", "metric"]).loc[
        ("UNET(+15% Sphere)", "tumor_dice")
    ]
    assert f"{expected['mean']:.5f} $\\pm$ {expected['std']:.5f}" in means
    assert f"[{expected['ci_low']:.5f}, {expected['ci_high']:.5f}]" in intervals
    assert f"{expected['ci_low']:.5f}" not in means  # the intervals live in the second table
    assert r"\par\footnotesize * differs from UNET at 0.05 after Holm's correction" in means
    assert r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" in means
    assert "Tumor Dice" in table.index


def test_hd95_has_two_decimals_and_scores_five() -> None:
    from tumorsweep.report.tables import format_value

    row = {"status": "ok", "std": 1.2345, "ci_low": 10.004, "ci_high": 14.696,
           "significant": True}  # fmt: skip
    hd95 = format_value(pd.Series({**row, "metric": "tumor_hd95", "mean": 12.3456}))
    assert hd95 == "12.35 ± 1.23 [10.00, 14.70]*"
    dice = format_value(pd.Series({**row, "metric": "tumor_dice", "mean": 0.61234567}))
    assert dice == "0.61235 ± 1.23450 [10.00400, 14.69600]*"
