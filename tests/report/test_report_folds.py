"""The report of a cross-validated sweep, read from a real MLflow SQLite store written here the
way the sweep writes trials (`data.fold` k and `data.folds` K params, each trial's
per_case_test.csv holding its own fold's cases): the fold is no part of a configuration,
numbers are mean ± std over folds, intervals pool the cases of all folds, and the paired test
takes folds as its second level. Expected numbers are computed here with numpy and scipy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from tumorsweep.report import build_report, load_runs, paper_table
from tumorsweep.report.stats import bootstrap_ci
from tumorsweep.report.tables import table_notes

K = 3
CASES = [f"liver_{n}" for n in range(12)]
FOLDS = {k: CASES[k::K] for k in range(K)}  # each case in one fold's test list
METRICS = ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd")
FOLD_SHIFT = {0: 0.04, 1: -0.03, 2: 0.01}  # a fold's model is better or worse on all its cases
EFFECT = {0.0: 0.0, 0.25: -0.05}


def _values(ratio: float, seed: int, fold: int) -> pd.DataFrame:
    rng = np.random.default_rng([int(ratio * 100), seed, fold])
    cases = FOLDS[fold]
    base = np.linspace(0.5, 0.8, len(CASES))[[CASES.index(c) for c in cases]]
    values = base + FOLD_SHIFT[fold] + EFFECT[ratio] + 0.01 * seed + rng.normal(0, 0.02, len(cases))
    return pd.DataFrame({"case": cases, **{m: values + 0.01 * i for i, m in enumerate(METRICS)}})


def _write(store: Path, experiment: str, seeds: int, fold_in_key: bool) -> dict:
    """One sweep: sphere ratio 0 (baseline) and 0.25, `seeds` seeds x K folds."""
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.create_experiment(experiment, artifact_location=str(store / experiment))
    swept = ["synthesis.sphere_ratio", *(["data.fold"] if fold_in_key else [])]
    parent = client.create_run(
        exp,
        tags={
            "tumorsweep.role": "sweep",
            "tumorsweep.swept": json.dumps(swept),
            "tumorsweep.baseline": json.dumps({"synthesis.sphere_ratio": 0.0}),
        },
    ).info.run_id
    written = {}
    for ratio in EFFECT:
        for seed in range(seeds):
            for fold in range(K):
                params = {
                    "model.name": "unet", "synthesis.sphere_ratio": ratio, "seed": seed,
                    "data.fold": fold, "data.folds": K, "eval.protocol": "tumorsweep",
                }  # fmt: skip
                key = {k: params[k] for k in swept}
                tags = {
                    "mlflow.parentRunId": parent,
                    "tumorsweep.role": "trial",
                    "backbone": "unet",
                    "eval_set": "test",
                    "tumorsweep.config_key": json.dumps(key, sort_keys=True),
                }
                run_id = client.create_run(exp, tags=tags).info.run_id
                client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
                table = _values(ratio, seed, fold)
                path = store / run_id / "per_case_test.csv"
                path.parent.mkdir()
                table.to_csv(path, index=False)
                client.log_artifact(run_id, str(path))
                now = int(time.time() * 1000)
                metrics = [Metric(m, float(table[m].mean()), now, 0) for m in METRICS]
                client.log_batch(run_id, metrics=metrics)
                client.set_terminated(run_id)
                written[(ratio, seed, fold)] = table
    client.set_terminated(parent)
    return written


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("folds")
    return {
        "uri": f"sqlite:///{root / 'mlflow.db'}",
        "cv": _write(root, "cv", seeds=1, fold_in_key=False),
        "cv_seeds": _write(root, "cv_seeds", seeds=2, fold_in_key=True),
    }


def _pooled(written: dict, ratio: float, seeds: int, metric: str) -> np.ndarray:
    """seeds x cases: every case from the one fold that scored it."""
    rows = []
    for seed in range(seeds):
        values = pd.concat([written[(ratio, seed, k)] for k in range(K)]).set_index("case")
        rows.append(values[metric].reindex(sorted(CASES)).to_numpy())
    return np.array(rows)


def _fold_p(written: dict, seeds: int, metric: str) -> float:
    """scipy's one-sample t-test of the per-fold mean differences (seed-averaged)."""
    differences = []
    for k in range(K):
        ours = np.mean([written[(0.25, s, k)][metric] for s in range(seeds)], axis=0)
        base = np.mean([written[(0.0, s, k)][metric] for s in range(seeds)], axis=0)
        differences.append(np.mean(ours - base))
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


@pytest.mark.parametrize(("experiment", "seeds"), [("cv", 1), ("cv_seeds", 2)])
def test_folds_are_no_configuration_and_numbers_pool_over_them(
    store: dict, experiment: str, seeds: int
) -> None:
    written = store[experiment]
    runs = load_runs(store["uri"], experiment)
    assert set(runs["label"]) == {"UNET", "UNET(+25% Sphere)"}  # no "fold=" in any label
    assert set(runs["fold"]) == {0, 1, 2} and set(runs["folds"]) == {K}
    assert runs.groupby("label")["config_key"].nunique().eq(1).all()
    report = build_report(store["uri"], experiment)
    summary = report.summary.set_index(["label", "metric"])
    unit = "folds" if seeds == 1 else "seeds x folds"
    for metric in METRICS:
        row = summary.loc[("UNET(+25% Sphere)", metric)]
        trials = [written[(0.25, s, k)][metric].mean() for s in range(seeds) for k in range(K)]
        assert row["n_seeds"] == seeds * K and row["unit"] == unit and row["n_folds"] == K
        assert row["mean"] == pytest.approx(np.mean(trials), abs=1e-12)
        assert row["std"] == pytest.approx(np.std(trials, ddof=1), abs=1e-12)
        low, high = bootstrap_ci(_pooled(written, 0.25, seeds, metric))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-12)
        assert row["n_cases"] == len(CASES)
        assert row["ci_method"] == ("cases" if seeds == 1 else "seeds+cases")
        assert row["test"] == "fold-paired t" and row["n_paired"] == len(CASES)
        assert row["p_value"] == pytest.approx(_fold_p(written, seeds, metric), rel=1e-9)
    table = paper_table(report.summary, experiment)
    assert table.loc["Trials", "UNET"] == f"{seeds * K}/{seeds * K} {unit} (baseline)"
    cell = summary.loc[("UNET(+25% Sphere)", "tumor_dice")]
    star = "*" if cell["significant"] else ""
    assert table.loc["Tumor Dice", "UNET(+25% Sphere)"] == (
        f"{cell['mean']:.5f} ± {cell['std']:.5f} [{cell['ci_low']:.5f}, {cell['ci_high']:.5f}]"
        f"{star}"
    )
    notes = " ".join(table_notes(report.summary, experiment))
    assert f"mean ± sample std over {unit} [95% bootstrap CI" in notes
    assert "over seeds [" not in notes
    assert "cross-validation in UNET, UNET(+25% Sphere): each case scored by the fold(s)" in notes
    assert "t-test of the per-fold mean differences (folds paired" in notes
