"""Real local Ray + real MLflow (SQLite in a tmp dir): grid and Optuna sweeps end to end.

Each trial costs ~20 s of Ray Train start-up on 2 cores, so these few sweeps are the only
Ray-level tests; the training loop itself is tested without Ray in test_train.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from notebook_util import execute_aggregate_notebook

from tumorsweep import tracking
from tumorsweep.cli import main as cli_main
from tumorsweep.cli.study import main

pytestmark = pytest.mark.ray

TINY = [
    "--set", "schedule.epochs=2",
    "--set", "schedule.warmup_epochs=1",
    "--set", "schedule.val_every=1",
    "--set", "schedule.patch_size=[32, 32, 32]",
    "--set", "eval.overlap=0.0",
]  # fmt: skip


def _runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id])


def _sweep(tmp_path: Path, phantom_dir: Path, space: str, extra: list[str]) -> tuple[int, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "space.yaml"
    path.write_text(space)
    code = main(
        "sphere_ratio",
        [
            "--data", str(phantom_dir),
            "--preset", "demo",
            "--search-space", str(path),
            "--tracking-uri", uri,
            "--storage", str(tmp_path / "ray"),
            "--max-concurrent", "2",
            *TINY,
            *extra,
        ],
    )  # fmt: skip
    return code, uri


GRID = """
study: sphere_ratio
fixed: {model.name: unet}
configs:
  - {synthesis.sphere_ratio: 0.0}
  - {synthesis.sphere_ratio: 1.0}
  - {synthesis.sphere_ratio: 0.5, model.options: {strides: [3, 3, 3, 3]}}
searcher: {type: grid}
baseline: {synthesis.sphere_ratio: 0.0}
"""


def test_grid_sweep_logs_nested_runs_and_isolates_a_failure(
    ray_local, tmp_path: Path, phantom_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    code, uri = _sweep(tmp_path, phantom_dir, GRID, ["--experiment", "grid"])
    assert code == 1  # one trial failed, the sweep finished the others
    runs = _runs(uri, "grid")
    parents = [r for r in runs if r.data.tags.get("tumorsweep.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("tumorsweep.role") == "trial"]
    assert len(parents) == 1 and len(trials) == 3
    parent = parents[0]
    assert json.loads(parent.data.tags["tumorsweep.swept"]) == [
        "synthesis.sphere_ratio",
        "model.options",
    ]
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.data.tags["eval_set"] == "test"
        assert trial.data.params["seed"] == "0"
    finished = [t for t in trials if t.info.status == "FINISHED"]
    failed = [t for t in trials if t.info.status == "FAILED"]
    assert len(finished) == 2 and len(failed) == 1
    # an architecture override that only fails once the network runs: caught per trial
    assert "Expected more than 1 spatial element" in failed[0].data.tags["tumorsweep.error"]
    for trial in finished:
        metrics = trial.data.metrics
        for name in ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd", "liver_dice_global"):
            assert 0.0 <= metrics[name] <= 1.0
        assert trial.data.params["model.name"] == "unet"
        assert {trial.data.params["synthesis.sphere_ratio"]} <= {"0.0", "1.0"}
        from mlflow import MlflowClient

        history = MlflowClient(uri).get_metric_history(trial.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == [0, 1]
        artifacts = {a.path for a in MlflowClient(uri).list_artifacts(trial.info.run_id)}
        assert {"per_case_test.csv", "config.yaml", "synthesis_preview.png"} <= artifacts
        # counters and timings go to one artifact, not among the metrics compared in the UI
        assert "bookkeeping.json" in artifacts
        assert [m for m in metrics if tracking.is_bookkeeping(m)] == []
        books = MlflowClient(uri).download_artifacts(trial.info.run_id, "bookkeeping.json")
        books = json.loads(Path(books).read_text())
        assert books["time_train_s"] > 0 and books["liver_dice_n"] >= 1
    # the parent row: what the trials share, and the study's answer
    assert "synthesis.sphere_ratio" not in parent.data.params and "seed" not in parent.data.params
    assert parent.data.params["model.name"] == "unet"
    best = max(finished, key=lambda t: t.data.metrics["best_val_tumor_dice"])
    assert parent.data.tags["tumorsweep.best_trial"] == best.info.run_name
    assert parent.data.metrics["best_val_tumor_dice"] == best.data.metrics["best_val_tumor_dice"]
    assert {t.info.run_name for t in trials} >= {"sphere_ratio=0.0 s0", "sphere_ratio=1.0 s0"}
    inputs = {i.tags[0].value: i.dataset for i in finished[0].inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}  # synthetic arm: healthy cases
    from mlflow import MlflowClient

    table = MlflowClient(uri).download_artifacts(finished[0].info.run_id, "per_case_test.csv")
    test_cases = len(Path(table).read_text().splitlines()) - 1
    assert json.loads(inputs["test"].profile) == {"num_cases": test_cases}
    assert (
        inputs["test"].digest
        == {i.tags[0].value: i.dataset for i in finished[1].inputs.dataset_inputs}["test"].digest
    )
    out = capsys.readouterr().out
    assert "mlflow ui --backend-store-uri" in out and "&viewStateShareKey=" in out
    # the console: event lines named as the MLflow runs, progress lines, none of Tune's boxes
    assert "[tumorsweep] sphere_ratio=0.0 s0: finished, tumor_dice " in out
    assert "[tumorsweep] 2/3 done, 0 running, 0 pending, 1 failed; best " in out
    assert "Configuration for experiment" not in out and "tensorboard" not in out.lower()
    for trial in finished:  # the printed results table holds each trial's tumour Dice
        assert f"{trial.data.metrics['tumor_dice']:.5f}" in out

    # The aggregation notebook runs top to bottom on what this real sweep recorded.
    (tmp_path / "nb").mkdir()
    outputs = execute_aggregate_notebook(uri, "grid", tmp_path / "nb")
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| Tumor Dice |" in markdown and "FAILED" in markdown
    for trial in finished:
        assert f"{trial.data.metrics['tumor_dice']:.5f}" in markdown
        assert f"{trial.data.metrics['liver_nsd']:.5f}" in markdown

    # The store moved without its artifact folder: the report names each missing table and
    # claims no interval; pointed at the folder (or with it beside a copy) it is whole again.
    capsys.readouterr()
    (tmp_path / "mlartifacts").rename(tmp_path / "moved")
    args = ["report", "--tracking-uri", uri, "--experiment", "grid", "--resamples", "100"]
    assert cli_main([*args, "--out", str(tmp_path / "r1")]) == 0
    err = capsys.readouterr().err
    for trial in finished:
        assert f"run {trial.info.run_id}: per_case_test.csv not found (looked in " in err
    lacking = pd.read_csv(tmp_path / "r1" / "summary.csv")
    assert lacking["ci_low"].isna().all() and (lacking["n_per_case_missing"] == 1).any()
    moved = ["--artifact-root", str(tmp_path / "moved"), "--out", str(tmp_path / "r2")]
    assert cli_main([*args, *moved]) == 0
    assert "not found" not in capsys.readouterr().err
    whole = pd.read_csv(tmp_path / "r2" / "summary.csv")
    assert whole.loc[whole["metric"] == "tumor_dice", "ci_low"].notna().sum() == len(finished)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tmp_path / "mlflow.db", copy / "mlflow.db")
    shutil.copytree(tmp_path / "moved", copy / "mlartifacts")
    args[2] = f"sqlite:///{copy / 'mlflow.db'}"
    assert cli_main([*args, "--out", str(copy / "report")]) == 0
    assert "not found" not in capsys.readouterr().err


OPTUNA = """
study: texture
fixed: {model.name: unet}
sweep:
  synthesis.texture.hu_drop.low: {uniform: [40.0, 60.0]}
searcher: {type: optuna, seed: 1, num_samples: 2}
"""


def test_optuna_sweep_two_trials(ray_local, tmp_path: Path, phantom_dir: Path) -> None:
    code, uri = _sweep(tmp_path, phantom_dir, OPTUNA, ["--experiment", "optuna"])
    assert code == 0
    trials = [r for r in _runs(uri, "optuna") if r.data.tags.get("tumorsweep.role") == "trial"]
    assert len(trials) == 2
    drops = sorted(float(t.data.params["synthesis.texture.hu_drop.low"]) for t in trials)
    assert drops[0] != drops[1] and all(40.0 <= d <= 60.0 for d in drops)
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert {"liver_dice", "tumor_dice", "liver_nsd", "tumor_nsd"} <= set(trial.data.metrics)


def test_two_gloo_workers_per_trial(ray_local, tmp_path: Path, phantom_dir: Path) -> None:
    space = "study: s\nconfigs:\n  - {synthesis.sphere_ratio: 0.0}\nsearcher: {type: grid}\n"
    code, uri = _sweep(
        tmp_path, phantom_dir, space, ["--experiment", "ddp", "--workers-per-trial", "2"]
    )
    assert code == 0
    trials = [r for r in _runs(uri, "ddp") if r.data.tags.get("tumorsweep.role") == "trial"]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
    assert 0.0 <= trials[0].data.metrics["liver_dice"] <= 1.0


def test_unplaceable_trial_fails_fast(ray_local, tmp_path: Path, phantom_dir: Path, capsys) -> None:
    space = "study: s\nconfigs:\n  - {synthesis.sphere_ratio: 0.0}\nsearcher: {type: grid}\n"
    code, _ = _sweep(tmp_path, phantom_dir, space, ["--workers-per-trial", "64"])
    assert code == 2
    assert "64 CPUs per trial, but this machine has" in capsys.readouterr().err


def test_folds_run_every_configuration_on_each_fold(ray_local, tmp_path: Path, phantom_dir) -> None:
    space = "study: s\nconfigs:\n  - {synthesis.sphere_ratio: 0.0}\nsearcher: {type: grid}\n"
    extra = ["--experiment", "cv", "--folds", "2", "--set", "data.val_fraction=0.3"]
    code, uri = _sweep(tmp_path, phantom_dir, space, extra)
    assert code == 0
    trials = [r for r in _runs(uri, "cv") if r.data.tags.get("tumorsweep.role") == "trial"]
    assert sorted(t.data.params["data.fold"] for t in trials) == ["0", "1"]
    assert {t.data.params["data.folds"] for t in trials} == {"2"}
    assert {t.data.tags["eval_set"] for t in trials} == {"2-fold"}
    assert all(t.info.status == "FINISHED" for t in trials)
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    tested = []
    for trial in trials:  # each fold reports on its own held-out cases: disjoint
        path = client.download_artifacts(trial.info.run_id, "per_case_test.csv", str(tmp_path))
        tested.append(set(Path(path).read_text().splitlines()[1:]))
        Path(path).unlink()
    cases = [{row.split(",")[0] for row in rows} for rows in tested]
    assert cases[0] and cases[1] and not cases[0] & cases[1]
