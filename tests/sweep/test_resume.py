"""Fault tolerance with real processes: a killed sweep driver and a crashed trial worker.

Each case runs `sweeps/sphere_ratio.py` as a separate process (its own local Ray), as a user
would, against a real MLflow SQLite store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--set", "schedule.epochs=2", "--set", "schedule.warmup_epochs=1",
    "--set", "schedule.val_every=1", "--set", "schedule.patch_size=[32, 32, 32]",
    "--set", "eval.overlap=0.0",
]  # fmt: skip


def _command(tmp_path: Path, phantom_dir: Path, space: str, *extra: str) -> list[str]:
    path = tmp_path / "space.yaml"
    path.write_text(space)
    return [
        sys.executable, str(ROOT / "sweeps" / "sphere_ratio.py"),
        "--data", str(phantom_dir), "--preset", "demo", "--search-space", str(path),
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--storage", str(tmp_path / "ray"), "--experiment", "ft", "--max-concurrent", "1",
        *TINY, *extra,
    ]  # fmt: skip


def _trials(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ft")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if r.data.tags.get("tumorsweep.role") == "trial"]


def _history(tmp_path: Path, run_id: str, metric: str) -> list[int]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


GRID = """
study: ft
sweep:
  synthesis.sphere_ratio: {grid: [0.0, 0.5, 1.0]}
searcher: {type: grid}
"""


def test_killed_driver_resumes_without_repeating_trials(tmp_path: Path, phantom_dir: Path) -> None:
    command = _command(tmp_path, phantom_dir, GRID)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline:
        if any(t.info.status == "FINISHED" for t in _trials(tmp_path)):
            break
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(2)
    else:
        pytest.fail("no trial finished before the deadline")
    ray_processes = psutil.Process(first.pid).children(recursive=True)
    assert any("raylet" in " ".join(p.cmdline()) for p in ray_processes)
    os.kill(first.pid, signal.SIGKILL)  # the driver alone, mid-sweep (as the OOM killer would)
    first.wait()
    # the local Ray it started follows it: dashboard and agents included, within seconds
    gone, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]
    done_before = {t.info.run_id for t in _trials(tmp_path) if t.info.status == "FINISHED"}
    assert 1 <= len(done_before) < 3

    second = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=600, check=False
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Resuming sweep ft-" in second.stdout
    trials = _trials(tmp_path)
    assert len(trials) == 3, [t.info.run_name for t in trials]
    assert len({t.data.tags["tumorsweep.trial_id"] for t in trials}) == 3
    assert all(t.info.status == "FINISHED" for t in trials)
    assert done_before <= {t.info.run_id for t in trials}
    for trial in trials:  # no epoch logged twice, whichever process trained it
        assert _history(tmp_path, trial.info.run_id, "train_loss") == [0, 1]
        assert 0.0 <= trial.data.metrics["tumor_dice"] <= 1.0


def test_crashed_worker_resumes_from_its_checkpoint(tmp_path: Path, phantom_dir: Path) -> None:
    space = "study: ft\nconfigs:\n  - {synthesis.sphere_ratio: 0.0}\nsearcher: {type: grid}\n"
    command = _command(tmp_path, phantom_dir, space, "--set", "schedule.epochs=3")
    # tests/fault_injection/sitecustomize.py makes the trial's chief exit hard after epoch 2
    hook = str(ROOT / "tests" / "fault_injection")
    path = os.pathsep.join(filter(None, [hook, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TUMORSWEEP_FAULT_AT_EPOCH": "2", "PYTHONPATH": path}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (trial,) = _trials(tmp_path)
    assert trial.info.status == "FINISHED"
    # Restored from the last checkpoint the controller had registered (after epoch 0 or 1).
    assert trial.data.metrics["resumed_at_epoch"] in (1.0, 2.0)
    assert _history(tmp_path, trial.info.run_id, "train_loss") == [0, 1, 2]
    assert 0.0 <= trial.data.metrics["liver_dice"] <= 1.0


def test_sigterm_marks_the_runs_killed_and_exits_non_zero(
    tmp_path: Path, phantom_dir: Path
) -> None:
    space = "study: ft\nconfigs:\n  - {synthesis.sphere_ratio: 0.0}\nsearcher: {type: grid}\n"
    command = _command(tmp_path, phantom_dir, space, "--set", "schedule.epochs=40")
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        trials = _trials(tmp_path)
        if trials and _history(tmp_path, trials[0].info.run_id, "train_loss"):
            break
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(1)
    else:
        pytest.fail("the trial never logged an epoch")
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=180) == 130, (tmp_path / "driver.log").read_text()[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ft")
    statuses = {r.data.tags["tumorsweep.role"]: r.info.status for r in client.search_runs(
        [experiment.experiment_id])}  # fmt: skip
    assert statuses == {"sweep": "KILLED", "trial": "KILLED"}
    assert "--resume finishes them" in (tmp_path / "driver.log").read_text()


def test_sigterm_to_the_process_group_closes_every_run_within_seconds(
    tmp_path: Path, phantom_dir: Path
) -> None:
    """`timeout -s TERM`, systemd and schedulers signal the whole process group: Ray's own
    processes die with the driver's trials, yet every run is KILLED within 10 s and the driver
    exits promptly (it used to wait a minute on the dead cluster, runs left RUNNING)."""
    space = "study: ft\nconfigs:\n  - {synthesis.sphere_ratio: 0.0}\nsearcher: {type: grid}\n"
    command = _command(tmp_path, phantom_dir, space, "--set", "schedule.epochs=40")
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )  # its own process group, as under `timeout`
    deadline = time.time() + 300
    while time.time() < deadline:
        trials = _trials(tmp_path)
        if trials and _history(tmp_path, trials[0].info.run_id, "train_loss"):
            break
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(1)
    else:
        pytest.fail("the trial never logged an epoch")
    group = [p for p in psutil.Process(driver.pid).children(recursive=True)]
    assert any(p.name() == "raylet" for p in group)  # Ray's core is in the group: it dies too
    os.killpg(driver.pid, signal.SIGTERM)
    signalled = time.monotonic()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ft")
    while time.monotonic() - signalled < 10:
        runs = client.search_runs([experiment.experiment_id])
        if all(r.info.status != "RUNNING" for r in runs):
            break
        time.sleep(0.25)
    closed_after = time.monotonic() - signalled
    statuses = {r.data.tags["tumorsweep.role"]: r.info.status for r in runs}
    assert statuses == {"sweep": "KILLED", "trial": "KILLED"}, statuses
    assert closed_after < 10
    assert driver.wait(timeout=30) == 130, (tmp_path / "driver.log").read_text()[-3000:]
    assert time.monotonic() - signalled < 20  # not the 60 s wait on a dead cluster
    assert "--resume finishes them" in (tmp_path / "driver.log").read_text()
