"""MLflow naming and logging shared by the sweep driver and the rank-0 trainer.

DESIGN.md fixes the names the notebook and the UI rely on: experiment = study; parent run = one
sweep invocation; nested child run per trial tagged with backbone and evaluation set; params =
flattened config; metrics `liver_dice`... plus per-epoch curves with step = epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.errors import TumorsweepError

ROLE_TAG = "tumorsweep.role"
TRIAL_ID_TAG = "tumorsweep.trial_id"
CONFIG_KEY_TAG = "tumorsweep.config_key"
ERROR_TAG = "tumorsweep.error"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """A local SQLite store in the working directory (absolute, so Ray workers agree)."""
    base = Path(cwd or os.getcwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def local_artifact_root(tracking_uri: str) -> str | None:
    """For a local SQLite store, artifacts live beside the database file."""
    if tracking_uri.startswith("sqlite:///"):
        db_path = Path(tracking_uri[len("sqlite:///") :])
        return (db_path.parent / "mlartifacts").as_uri()
    return None


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create the store and the experiment once (in the driver, before any trial starts)."""
    client = _client(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=local_artifact_root(tracking_uri))
    except TumorsweepError:
        raise
    except Exception as exc:  # unreachable server, unwritable file, bad URI
        raise TumorsweepError(f"MLflow tracking URI {tracking_uri!r}: {exc}") from None


def start_parent_run(
    tracking_uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str]
) -> str:
    """The parent run of one sweep invocation."""
    client = _client(tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags={ROLE_TAG: "sweep", **tags})
    return run.info.run_id


def attach_trial_run(
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    trial_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
) -> str:
    """The nested run of one trial: re-attach to it if this trial already has one (resume)."""
    client = _client(tracking_uri)
    run_id = find_trial_run(tracking_uri, experiment_id, parent_run_id, trial_id)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    all_tags = {ROLE_TAG: "trial", PARENT_TAG: parent_run_id, TRIAL_ID_TAG: trial_id, **tags}
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    log_params(tracking_uri, run.info.run_id, params)
    return run.info.run_id


def find_trial_run(
    tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str
) -> str | None:
    """The nested run of a Tune trial in this sweep, if it has one."""
    found = _client(tracking_uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = "
        f"'{parent_run_id}'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def close_if_running(tracking_uri: str, run_id: str, status: str, error: str = "") -> None:
    """Give a run its final status unless it already has one (the trial set it itself)."""
    if _client(tracking_uri).get_run(run_id).info.status == "RUNNING":
        finish_run(tracking_uri, run_id, status=status, error=error)


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params in batches (MLflow caps a batch at 100 params)."""
    from mlflow.entities import Param

    client = _client(tracking_uri)
    items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int | None = None
) -> None:
    """Log finite numeric metrics at one step (NaN stays out: missing, never zero)."""
    from mlflow.entities import Metric

    client = _client(tracking_uri)
    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, step or 0)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    for start in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[start : start + 1000])


def logged_steps(tracking_uri: str, run_id: str, metric: str) -> set[int]:
    """Steps at which a run already has `metric` (a resumed trial skips them)."""
    return {m.step for m in _client(tracking_uri).get_metric_history(run_id, metric)}


def log_artifacts(tracking_uri: str, run_id: str, paths: Iterable[str | Path]) -> None:
    """Upload local files to the run's artifact root."""
    client = _client(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path))


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED", error: str = "") -> None:
    """Close a run; a failed one keeps its reason as a tag so the UI and the report show it."""
    client = _client(tracking_uri)
    if error:
        client.set_tag(run_id, ERROR_TAG, error[:5000])
    client.set_terminated(run_id, status=status)


def set_tags(tracking_uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set several tags on a run."""
    client = _client(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value if isinstance(value, str) else json.dumps(value))
