"""The driver of one study: `run_sweep` creates the MLflow experiment and the parent run
before any trial starts (or reopens them for `--resume`), writes the resume state, runs the
Tuner under the SIGTERM handler and closes the parent run with the sweep's summary."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tumorsweep import tracking
from tumorsweep.config import TrialConfig, flatten
from tumorsweep.data.cases import CaseLists
from tumorsweep.progress import Progress, trial_name
from tumorsweep.ray_cluster import connect_ray, driver_reserve
from tumorsweep.search_space import SearchSpace, check_metric, trial_count, trial_overrides
from tumorsweep.sweep.options import SweepOptions, TrialContext
from tumorsweep.sweep.state import resume_parent, safe_name, write_sweep_state
from tumorsweep.sweep.stop import close_unfinished, stop_on_sigterm
from tumorsweep.sweep.tuner import build_tuner, concurrency


def run_sweep(
    space: SearchSpace,
    options: SweepOptions,
    cases_by_fold: dict[int | None, CaseLists],
    base: TrialConfig,
) -> dict[str, Any]:
    """Run (or resume) the sweep on the study's case lists (one per fold with
    cross-validation, else under key None); returns the parent run id, experiment (name and
    id) and Tune results."""
    check_metric(space.metric, space.mode, f"study {space.study}")
    experiment = options.experiment or space.study
    storage = options.storage if "://" in options.storage else str(Path(options.storage).resolve())
    if not options.verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    connect_ray(options.address, driver_reserve(options.workers_per_trial), options.verbose)
    concurrent = concurrency(options)
    store = tracking.RunStore(options.tracking_uri)
    experiment_id = store.ensure_experiment(experiment)
    if options.resume:
        sweep_name, parent_run_id = resume_parent(store, storage, experiment)
    else:
        sweep_name = f"{safe_name(experiment)}-{time.strftime('%Y%m%d-%H%M%S')}"
        cases = next(iter(cases_by_fold.values()))
        parent_run_id = _start_parent(store, options, experiment_id, sweep_name, space, cases, base)
    seeds = list(range(base.seed, base.seed + (options.seeds or space.seeds)))
    context = _context(options, base, cases_by_fold, storage, (experiment_id, parent_run_id))
    context.swept, context.first_seed = space.swept_names(), seeds[0]
    total = trial_count(space, len(seeds), context.folds())
    progress = Progress(total, space.metric, space.mode, concurrent)
    tuner = build_tuner(space, options, context, sweep_name, seeds, progress, base.schedule.epochs)
    if not options.resume:
        write_sweep_state(storage, experiment, sweep_name, parent_run_id)
    if not options.verbose:  # Tune's experiment box and TensorBoard hint: --verbose
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    def close_runs() -> None:
        close_unfinished(store, experiment_id, parent_run_id)
        store.finish_run(parent_run_id, status="KILLED")

    with stop_on_sigterm(close_runs) as stop:
        results = tuner.fit()
    killed = close_unfinished(store, experiment_id, parent_run_id) or stop.requested
    _log_summary(store, parent_run_id, space, context, results)
    failed = [r for r in results if r.error is not None]
    status = "FAILED" if failed and len(failed) == len(results) else "FINISHED"
    store.finish_run(parent_run_id, status="KILLED" if killed else status)
    return {
        "experiment": experiment,
        "experiment_id": experiment_id,
        "parent_run_id": parent_run_id,
        "sweep_name": sweep_name,
        "storage": storage,
        "results": results,
        "failed": len(failed),
        "interrupted": bool(killed),
    }


def _context(
    options: SweepOptions,
    base: TrialConfig,
    cases_by_fold: dict[int | None, CaseLists],
    storage: str,
    runs: tuple[str, str],
) -> TrialContext:
    """What every trial of this sweep shares; `runs`: the experiment and parent run ids (the
    swept names and the first seed are the caller's to set)."""
    experiment_id, parent_run_id = runs
    gpus = {"GPU": options.gpus_per_trial} if options.gpus_per_trial else {}
    return TrialContext(
        base=base.model_dump(mode="json"),
        cases_by_fold=cases_by_fold,
        tracking_uri=options.tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        swept=[],
        storage=storage,
        workers=options.workers_per_trial,
        use_gpu=bool(options.gpus_per_trial),
        resources_per_worker={"CPU": options.cpus_per_worker} | gpus,
        max_failures=options.max_failures,
    )


def _start_parent(
    store: tracking.RunStore,
    options: SweepOptions,
    experiment_id: str,
    sweep_name: str,
    space: SearchSpace,
    cases: CaseLists,
    base: TrialConfig,
) -> str:
    """The MLflow parent run of a new sweep, with the study's tags and the base config."""
    parent_run_id = store.start_parent_run(
        experiment_id,
        sweep_name,
        tags={
            tracking.STUDY_TAG: space.study,
            tracking.SWEPT_TAG: json.dumps(space.swept_names()),
            tracking.BASELINE_TAG: json.dumps(space.baseline),
            tracking.PRESET_TAG: options.preset,
            tracking.EVAL_SET_TAG: cases.eval_set,
            tracking.DATA_ROOT_TAG: cases.root,
            tracking.DATA_WARNINGS_TAG: json.dumps(list(cases.warnings)),
            tracking.DATA_SOURCES_TAG: json.dumps(list(cases.sources)),
        },
    )
    # only what every trial shares: a swept field's base value (or the first seed) on the
    # parent row would read as one more trial in the MLflow UI
    per_trial = {*space.swept_names(), tracking.SEED_PARAM, "data.fold"}
    shared = {k: v for k, v in flatten(base).items() if k not in per_trial}
    store.log_params(parent_run_id, shared)
    return parent_run_id


def _log_summary(
    store: tracking.RunStore,
    parent_run_id: str,
    space: SearchSpace,
    context: TrialContext,
    results: Any,
) -> None:
    """The best trial of the whole sweep (restored trials of a resumed one included) on the
    parent run; nothing when no trial reported the search metric."""
    scored = [r for r in results if isinstance((r.metrics or {}).get(space.metric), (int, float))]
    if not scored:
        return
    pick = max if space.mode == "max" else min
    best = pick(scored, key=lambda r: r.metrics[space.metric])
    config = best.config or {}
    name = trial_name(
        trial_overrides(config), context.swept, config.get("seed", 0), config.get("data.fold")
    )
    store.log_sweep_summary(parent_run_id, space.metric, best.metrics[space.metric], name)
