"""Registering a sweep's best trial in the MLflow Model Registry (`--register-best`)."""

from __future__ import annotations

from tumorsweep.errors import TumorsweepError
from tumorsweep.tracking import REGISTERED_METRIC_TAG, REGISTERED_VALUE_TAG, RunStore


def check_registrable(metric: str) -> None:
    """Only a validation metric may pick the model to register: picking it by a test metric
    would make the test list a selection list and its reported numbers optimistic."""
    if not metric.startswith("best_val_"):
        raise TumorsweepError(
            f"--register-best: the study's metric {metric!r} is not a validation metric "
            "(best_val_*); the registered model must be chosen on the validation list"
        )


def register_best(
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    metric: str,
    mode: str,
    name: str,
) -> tuple[int, str, float]:
    """Register the sweep's best finished trial by its validation `metric` in the MLflow
    Model Registry as a new version of `name`; returns (version, run id, metric value)."""
    check_registrable(metric)
    store = RunStore(tracking_uri)
    best = store.best_trial(experiment_id, parent_run_id, metric, mode)
    if best is None:
        raise TumorsweepError(
            f"--register-best {name}: no finished trial of sweep run {parent_run_id} has {metric}"
        )
    run_id, value = best
    version = store.register_trial(
        name,
        run_id,
        tags={REGISTERED_METRIC_TAG: f"{metric} ({mode})", REGISTERED_VALUE_TAG: f"{value!r}"},
        description=f"best trial of sweep run {parent_run_id} by {metric} ({mode}): {value:.5f}",
    )
    return version, run_id, value
