"""core.report against a real MLflow SQLite store holding known sweeps (DESIGN.md naming).

The store: experiment `sphere_ratio` with an old sweep and a latest one (sphere ratio 0, 0.15,
0.25 x seeds 0-2 finished, one 0.25 seed FAILED, 0.05 only RUNNING, 0.10 only FAILED, 0.12
finished without liver_nsd, one 0.15 seed without tumor_nsd), a small `backbones` study and an
experiment with no runs. Expected numbers are computed here from the values written.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import execute_aggregate_notebook
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy.stats import wilcoxon

from core.cli import main
from core.errors import TumorsweepError
from core.report import build_report, load_runs, paper_table, summary_table

CASES = [f"liver_{n}" for n in (2, 13, 15, 17, 19, 21, 33, 42)]
METRICS = ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd")
ROW_NAMES = dict(zip(METRICS, ("Liver Dice", "Liver NSD", "Tumor Dice", "Tumor NSD"), strict=True))
SPHERE_SWEPT = ["synthesis.sphere_ratio"]


def _per_case(ratio: float, seed: int) -> pd.DataFrame:
    """Deterministic per-case values: 0.25 is ~0.1 tumour Dice worse on every case."""
    rng = np.random.default_rng(int(ratio * 100) * 10 + seed)
    base = np.linspace(0.45, 0.75, len(CASES))
    tumor_dice = base + rng.normal(0, 0.02, len(CASES)) - (0.1 if ratio == 0.25 else 0.0)
    tumor_dice[3] = np.nan  # a case whose tumour Dice is undefined
    return pd.DataFrame(
        {
            "case": CASES,
            "liver_dice": 0.95 + rng.normal(0, 0.005, len(CASES)),
            "liver_nsd": 0.88 + rng.normal(0, 0.01, len(CASES)),
            "tumor_dice": tumor_dice,
            "tumor_nsd": tumor_dice + 0.03,
            "liver_voxels": rng.integers(10_000, 20_000, len(CASES)),
        }
    )


class _Store:
    """Writes runs the way the sweep does; remembers what it wrote."""

    def __init__(self, root: Path) -> None:
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.root = root
        self.client = MlflowClient(self.uri)
        self.per_case: dict[tuple[str, float, int], pd.DataFrame] = {}
        self.metrics: dict[tuple[str, float, int], dict[str, float]] = {}
        self.swept: dict[str, list[str]] = {}

    def experiment(self, name: str) -> str:
        return self.client.create_experiment(name, artifact_location=str(self.root / name))

    def sweep(self, exp: str, swept: list[str], baseline: dict, start: int) -> str:
        tags = {
            "tumorsweep.role": "sweep",
            "tumorsweep.study": exp,
            "tumorsweep.swept": json.dumps(swept),
            "tumorsweep.baseline": json.dumps(baseline),
            "tumorsweep.preset": "demo",
        }
        run_id = self.client.create_run(exp, start_time=start, tags=tags).info.run_id
        self.swept[run_id] = swept
        return run_id

    def trial(
        self,
        exp: str,
        parent: str,
        params: dict,
        seed: int,
        status: str = "FINISHED",
        drop: tuple[str, ...] = (),
        eval_set: str = "hu-val",
    ) -> str:
        swept = {k: params[k] for k in self.swept[parent]}
        tags = {
            "mlflow.parentRunId": parent,
            "tumorsweep.role": "trial",
            "backbone": params["model.name"],
            "eval_set": eval_set,
            "tumorsweep.config_key": json.dumps(swept, sort_keys=True),
        }
        if status == "FAILED":
            tags["tumorsweep.error"] = "RuntimeError: CUDA out of memory"
        run_id = self.client.create_run(exp, tags=tags).info.run_id
        all_params = {**params, "seed": seed}
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in all_params.items()])
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric("train_loss", 1.0 / (e + 1), now, e) for e in range(3)]
        )
        if status == "FINISHED":
            key = (exp, json.dumps(swept, sort_keys=True), seed)
            table = _per_case(params.get("synthesis.sphere_ratio", 0.0), seed)
            artifact = self.root / run_id / "per_case_test.csv"
            artifact.parent.mkdir()
            table.to_csv(artifact, index=False)
            self.client.log_artifact(run_id, str(artifact))
            values = {m: float(np.nanmean(table[m])) for m in METRICS if m not in drop}
            self.client.log_batch(run_id, metrics=[Metric(m, v, now, 0) for m, v in values.items()])
            self.per_case[key] = table
            self.metrics[key] = values
        if status != "RUNNING":
            self.client.set_terminated(run_id, status=status)
        return run_id


def _unet(ratio: float) -> dict:
    return {
        "model.name": "unet",
        "model.pretrained": None,
        "data.real_tumors": False,
        "synthesis.style": "hu",
        "synthesis.location": "uniform",
        "synthesis.sphere_ratio": ratio,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> _Store:
    root = tmp_path_factory.mktemp("mlflow")
    s = _Store(root)
    exp = s.experiment("sphere_ratio")
    old = s.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=1_000)
    new = s.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, start=2_000)
    s.trial(exp, old, _unet(0.5), seed=0)
    for ratio in (0.0, 0.15, 0.25):
        for seed in range(3):
            failed = ratio == 0.25 and seed == 2
            drop = ("tumor_nsd",) if (ratio, seed) == (0.15, 0) else ()
            s.trial(exp, new, _unet(ratio), seed, "FAILED" if failed else "FINISHED", drop)
    s.trial(exp, new, _unet(0.05), 0, "RUNNING")
    s.trial(exp, new, _unet(0.10), 0, "FAILED")
    s.trial(exp, new, _unet(0.12), 0, drop=("liver_nsd",))
    bb = s.experiment("backbones")
    swept = ["model.name", "data.real_tumors"]
    sweep = s.sweep(bb, swept, {"model.name": "unet", "data.real_tumors": False}, start=3_000)
    for real in (False, True):
        s.trial(bb, sweep, {**_unet(0.0), "data.real_tumors": real}, 0, eval_set="global")
    s.experiment("empty_study")
    return s


def _expected(store: _Store, ratio: float, metric: str) -> dict:
    """Mean/std over seeds, bootstrap CI and Wilcoxon p computed from what was written."""
    exp = next(iter(store.per_case))[0]  # the sphere_ratio experiment, written first
    key = json.dumps({"synthesis.sphere_ratio": ratio})
    seeds = [v for (e, k, _), v in store.metrics.items() if (e, k) == (exp, key)]
    values = np.array([m[metric] for m in seeds if metric in m])

    def case_means(k: str) -> pd.Series:
        chosen = [t for (e, kk, _), t in store.per_case.items() if (e, kk) == (exp, k)]
        stacked = np.vstack([t.set_index("case").loc[sorted(CASES), metric] for t in chosen])
        with warnings.catch_warnings():  # the case no seed scored is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            means = pd.Series(np.nanmean(stacked, axis=0), index=sorted(CASES))
        return means.dropna()

    ours = case_means(key)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(ours), size=(2000, len(ours)))
    low, high = np.percentile(ours.to_numpy()[picks].mean(axis=1), [2.5, 97.5])
    base = case_means(json.dumps({"synthesis.sphere_ratio": 0.0}))
    p = wilcoxon(ours.to_numpy(), base.loc[ours.index].to_numpy()).pvalue if ratio else math.nan
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    return {"mean": values.mean(), "std": std, "low": low, "high": high, "p": p, "n": len(values)}


@pytest.fixture(scope="module")
def report(store: _Store):
    return build_report(store.uri, "sphere_ratio")


def test_load_runs_is_tidy_and_takes_the_latest_sweep(store: _Store) -> None:
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
    pooled = load_runs(store.uri, "sphere_ratio", all_sweeps=True)
    assert pooled["parent_run_id"].nunique() == 2 and 0.5 in set(pooled["synthesis.sphere_ratio"])


@pytest.mark.parametrize("ratio", [0.15, 0.25])
@pytest.mark.parametrize("metric", METRICS)
def test_summary_holds_the_independently_computed_numbers(
    store: _Store, report, ratio: float, metric: str
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
    assert row["p_value"] == pytest.approx(expected["p"], abs=1e-12)
    cell = paper_table(report.summary, "sphere_ratio").loc[ROW_NAMES[metric], label]
    star = "*" if expected["p"] < 0.05 else ""
    assert cell == (
        f"{expected['mean']:.5f} ± {expected['std']:.5f} "
        f"[{expected['low']:.5f}, {expected['high']:.5f}]{star}"
    )


def test_a_consistent_drop_is_flagged_with_the_exact_p_value(store: _Store, report) -> None:
    summary = report.summary.set_index(["label", "metric"])
    assert summary.loc[("UNET(+25% Sphere)", "tumor_dice"), "significant"]
    assert summary.loc[("UNET(+25% Sphere)", "tumor_dice"), "n_paired"] == len(CASES) - 1
    # all 7 paired differences negative: the exact two-sided p is 2 / 2**7
    assert summary.loc[("UNET(+25% Sphere)", "tumor_dice"), "p_value"] == 2 / 2**7
    assert math.isnan(summary.loc[("UNET", "tumor_dice"), "p_value"])  # the baseline itself


def test_failed_running_and_missing_are_shown_as_such(report) -> None:
    table = paper_table(report.summary, "sphere_ratio")
    assert (table["UNET(+5% Sphere)"].iloc[:4] == "running").all()
    assert (table["UNET(+10% Sphere)"].iloc[:4] == "FAILED").all()
    assert table.loc["Liver NSD", "UNET(+12% Sphere)"] == "n/a"
    assert table.loc["Tumor Dice", "UNET(+12% Sphere)"].startswith("0.")
    assert table.loc["Trials", "UNET(+25% Sphere)"] == "2/3 seeds, 1 FAILED"
    assert table.loc["Trials", "UNET"] == "3/3 seeds (baseline)"
    assert "0.00000" not in table.to_string()


def test_published_values_sit_beside_ours(report) -> None:
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


def test_several_experiments_and_real_vs_synthetic_labels(store: _Store) -> None:
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
    store: _Store, experiment: str, message: str
) -> None:
    with pytest.raises(TumorsweepError, match=message) as caught:
        load_runs(store.uri, experiment)
    if "not found" in message:
        assert "backbones, empty_study, sphere_ratio" in str(caught.value)


def test_summary_table_for_the_end_of_a_sweep(store: _Store) -> None:
    text = summary_table(store.uri, "sphere_ratio")
    expected = _expected(store, 0.15, "tumor_dice")
    line = next(r for r in text.splitlines() if r.startswith("| UNET(+15% Sphere) "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:4] == [f"{expected['mean']:.5f}", f"{expected['std']:.5f}", "3/3 seeds"]
    assert cells[5] == "0.58081"
    assert "| UNET(+10% Sphere) | FAILED |" in text


def test_cli_writes_markdown_csv_latex_and_plots(
    store: _Store, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "report",
            "--tracking-uri",
            store.uri,
            "--experiment",
            "sphere_ratio",
            "--out",
            str(out),
            "--resamples",
            "300",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Tumor Dice |" in printed and "UNET(+15% Sphere)" in printed
    for name in ("report.md", "summary.csv", "runs.csv", "sphere_ratio.md", "sphere_ratio.csv"):
        assert (out / name).stat().st_size > 0
    tex = (out / "sphere_ratio.tex").read_text()
    assert r"\begin{tabular}" in tex and r"UNET(+15\% Sphere)" in tex and r"$\pm$" in tex
    summary = pd.read_csv(out / "summary.csv")
    assert {"mean", "std", "ci_low", "ci_high", "p_value", "published"} <= set(summary.columns)
    assert (out / "sphere_ratio_knob.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "sphere_ratio_per_case.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_experiment_is_one_line_exit_2(
    store: _Store, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["report", "--tracking-uri", store.uri, "--experiment", "nope", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tumorsweep report: error: experiment 'nope' not found")
    assert "\n" not in err


def test_notebook_runs_top_to_bottom_and_shows_the_tables(
    store: _Store, report, tmp_path: Path
) -> None:
    outputs = execute_aggregate_notebook(store.uri, "sphere_ratio", tmp_path)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    expected_cell = paper_table(report.summary, "sphere_ratio").loc["Tumor Dice"]
    assert f"| Tumor Dice | {' | '.join(expected_cell)} |" in markdown
    assert "| running |" in markdown and "| FAILED |" in markdown
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
