"""Run a study: Ray Tune over trials, each trial one MLflow run; multi-worker trials are Ray
Train (DDP) runs.

Each trial is a Tune function trainable. A one-worker trial trains in that process; a
multi-worker trial builds and fits a TorchTrainer (Ray 2.60 runs Train inside Tune this way),
with `TuneReportCallback` forwarding rank 0's reports. The driver creates the MLflow store and
the parent run before any trial starts; every trial re-attaches to its own nested run by Tune
trial id, so a resumed sweep never logs a trial twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorsweep import tracking
from tumorsweep.config import TrialConfig, apply_overrides, flatten
from tumorsweep.data.cases import CaseLists
from tumorsweep.errors import TumorsweepError
from tumorsweep.progress import Progress, trial_name, tune_callback
from tumorsweep.ray_cluster import connect_ray, driver_reserve
from tumorsweep.search_space import (
    SearchSpace,
    check_metric,
    config_key,
    param_space,
    trial_count,
    trial_overrides,
)

STATE_FILE = "tumorsweep_sweep.json"


@dataclass
class SweepOptions:
    """Where and how a study runs (the shared flags of every `sweeps/*.py`)."""

    preset: str = "demo"
    overrides: dict[str, Any] = field(default_factory=dict)
    address: str | None = None
    tracking_uri: str = ""
    experiment: str = ""
    storage: str = ""
    workers_per_trial: int = 1
    gpus_per_trial: int = 0
    cpus_per_worker: int = 1
    max_concurrent: int = 0
    seeds: int = 0
    resume: bool = False
    max_failures: int = 1
    verbose: bool = False


@dataclass
class TrialContext:
    """Everything a trial needs that is the same for the whole sweep (sent once via Ray)."""

    base: dict[str, Any]
    cases_by_fold: dict[int | None, CaseLists]  # key None without cross-validation
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    swept: list[str]
    storage: str
    workers: int
    use_gpu: bool
    resources_per_worker: dict[str, float]
    max_failures: int
    first_seed: int = 0


def run_trial(tune_config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable: one trial, one nested MLflow run. A one-worker trial trains
    right here in the Tune trial's process (no Train controller or worker group to start: a
    failed trial is retried by Tune from its last checkpoint); a multi-worker trial is one
    TorchTrainer.fit() (DDP, worker-group restarts). Both run
    `tumorsweep.train.train_loop_per_worker`.
    """
    from ray import tune

    from tumorsweep.train import prepare_location_model, train_loop_per_worker

    overrides = trial_overrides(tune_config)
    base = TrialConfig.model_validate(context.base)
    cfg = apply_overrides(base, overrides, source="trial")
    trial_id = tune.get_context().get_trial_id()
    cases = context.cases_by_fold[cfg.data.fold]
    flat = flatten(cfg)
    run_name = trial_name(flat, context.swept, cfg.seed, cfg.data.fold)
    run_id = tracking.attach_trial_run(
        context.tracking_uri,
        context.experiment_id,
        context.parent_run_id,
        trial_id,
        run_name,
        tags={
            tracking.BACKBONE_TAG: cfg.model.name,
            tracking.EVAL_SET_TAG: cases.eval_set,
            tracking.CONFIG_KEY_TAG: config_key(overrides, context.swept),
        },
        params={
            **flat,
            tracking.SEED_PARAM: cfg.seed,
            **tracking.pool_params(cases.pool(cfg.data.real_share())),
        },
    )
    real_share = 1.0 if cfg.data.real_tumors else (cfg.data.real_fraction or 0.0)
    real, synthetic = real_share > 0, real_share < 1
    tracking.log_case_lists(
        context.tracking_uri,
        run_id,
        {
            "training": cases.train if synthetic else (),
            "training-real-tumours": cases.train_tumor if real else (),
            "validation": cases.selection_cases(),
            "test": cases.test,
        },
    )
    loop_config = {
        "trial": cfg.model_dump(mode="json"),
        "cases": cases,
        "tracking_uri": context.tracking_uri,
        "run_id": run_id,
        "threads": int(context.resources_per_worker.get("CPU", 1)),
        "location_model": prepare_location_model(cfg, cases),
        "preview": cfg.seed == context.first_seed,  # one preview per configuration
    }
    try:
        if context.workers == 1:
            train_loop_per_worker(loop_config, session_kind="tune")
        else:
            _torch_trainer(loop_config, context, trial_id).fit()
    except Exception as exc:
        reason = _root_cause(exc)
        tracking.finish_run(context.tracking_uri, run_id, status="FAILED", error=reason)
        raise RuntimeError(f"trial {trial_id} ({run_name}) failed: {reason}") from None
    tracking.finish_run(context.tracking_uri, run_id)


def _torch_trainer(loop_config: dict[str, Any], context: TrialContext, trial_id: str):
    """The DDP run of a multi-worker trial (Ray Train V2 inside a Tune function trainable)."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from tumorsweep.train import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=context.workers,
            use_gpu=context.use_gpu,
            resources_per_worker=context.resources_per_worker,
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=context.storage,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(
                max_failures=context.max_failures, controller_failure_limit=1
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )


def _trial_events(context: TrialContext, progress: Progress):
    """Driver-side Tune callback: the console's trial lines and progress (tumorsweep.progress),
    and a safety net: a trial that Tune ends without the trial itself closing its MLflow run
    (stopped early by ASHA, its actor killed, an error outside fit) still gets a final status
    and reason instead of staying RUNNING."""

    def run_id(trial) -> str | None:
        return tracking.find_trial_run(
            context.tracking_uri, context.experiment_id, context.parent_run_id, trial.trial_id
        )

    def name_of(trial) -> str:
        config = trial.config
        overrides = trial_overrides(config)
        return trial_name(overrides, context.swept, config.get("seed", 0), config.get("data.fold"))

    def on_finished(trial) -> None:
        if found := run_id(trial):
            tracking.close_if_running(context.tracking_uri, found, "FINISHED")

    def error_of(trial) -> str:
        found = run_id(trial)
        if not found:
            return ""
        reason = tracking.run_error(context.tracking_uri, found)
        tracking.close_if_running(
            context.tracking_uri, found, "FAILED", f"trial {trial.trial_id} errored"
        )
        return reason

    return tune_callback(progress, name_of, on_finished, error_of)


def _root_cause(exc: BaseException) -> str:
    """The innermost message of a chain of Ray wrappers (what actually went wrong)."""
    seen = exc
    while seen.__cause__ is not None or getattr(seen, "cause", None) is not None:
        seen = seen.__cause__ or seen.cause
    text = f"{type(seen).__name__}: {seen}".strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def safe_name(name: str) -> str:
    """A name usable as one file name (sweep folders and state files are named after the
    experiment, which may hold '/' or '..')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "experiment"


def _capacity(options: SweepOptions) -> int:
    """How many trials fit at once; fail clearly (instead of waiting) when none does."""
    import ray

    total = ray.cluster_resources()
    need_cpu = options.workers_per_trial * options.cpus_per_worker
    need_gpu = options.workers_per_trial * options.gpus_per_trial
    reserve = driver_reserve(options.workers_per_trial)
    cpu_free = total.get("CPU", 0) - reserve
    fits = int(cpu_free // need_cpu) if need_cpu else 1 << 30
    if need_gpu:
        fits = min(fits, int(total.get("GPU", 0) // need_gpu))
    if fits < 1:
        raise TumorsweepError(
            f"one trial needs {options.workers_per_trial} worker(s) x "
            f"{options.cpus_per_worker} CPU / {options.gpus_per_trial} GPU = {need_cpu} CPU, "
            f"{need_gpu} GPU, but the Ray cluster has {cpu_free:g} CPU (after "
            f"{reserve} kept for trial drivers), {total.get('GPU', 0):g} GPU; lower "
            "--workers-per-trial/--cpus-per-worker/--gpus-per-trial or add nodes"
        )
    return fits


def _searcher(space: SearchSpace, concurrent: int):
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if space.searcher.type == "grid":
        return None
    import optuna

    sampler = (
        optuna.samplers.TPESampler(seed=space.searcher.seed)
        if space.searcher.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=space.searcher.seed)
    )
    search = OptunaSearch(sampler=sampler, metric=space.metric, mode=space.mode)
    return ConcurrencyLimiter(search, max_concurrent=concurrent)


def _scheduler(space: SearchSpace, epochs: int):
    if space.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=epochs,
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )


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
    cases = next(iter(cases_by_fold.values()))
    experiment = options.experiment or space.study
    storage = options.storage if "://" in options.storage else str(Path(options.storage).resolve())
    if not options.verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    connect_ray(options.address, driver_reserve(options.workers_per_trial), options.verbose)
    concurrent = _concurrency(options)
    experiment_id = tracking.ensure_experiment(options.tracking_uri, experiment)
    if options.resume:
        sweep_name, parent_run_id = _resume_parent(options.tracking_uri, storage, experiment)
    else:
        sweep_name = f"{safe_name(experiment)}-{time.strftime('%Y%m%d-%H%M%S')}"
        parent_run_id = _start_parent(options, experiment_id, sweep_name, space, cases, base)
    seeds = list(range(base.seed, base.seed + (options.seeds or space.seeds)))
    context = TrialContext(
        base=base.model_dump(mode="json"),
        cases_by_fold=cases_by_fold,
        tracking_uri=options.tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        swept=space.swept_names(),
        storage=storage,
        workers=options.workers_per_trial,
        use_gpu=bool(options.gpus_per_trial),
        resources_per_worker={"CPU": options.cpus_per_worker}
        | ({"GPU": options.gpus_per_trial} if options.gpus_per_trial else {}),
        max_failures=options.max_failures,
        first_seed=seeds[0],
    )
    total = trial_count(space, len(seeds), _folds(context))
    progress = Progress(total, space.metric, space.mode, concurrent)
    tuner = _tuner(space, options, context, sweep_name, seeds, progress, base.schedule.epochs)
    if not options.resume:
        _write_sweep_state(storage, experiment, sweep_name, parent_run_id)
    if not options.verbose:  # Tune's experiment box and TensorBoard hint: --verbose
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    def close_runs() -> None:
        _close_unfinished(options.tracking_uri, experiment_id, parent_run_id)
        tracking.finish_run(options.tracking_uri, parent_run_id, status="KILLED")

    with _stop_on_sigterm(close_runs) as stop:
        results = tuner.fit()
    killed = _close_unfinished(options.tracking_uri, experiment_id, parent_run_id) or stop.requested
    _log_summary(options.tracking_uri, parent_run_id, space, context, results)
    failed = [r for r in results if r.error is not None]
    status = "FAILED" if failed and len(failed) == len(results) else "FINISHED"
    tracking.finish_run(options.tracking_uri, parent_run_id, status="KILLED" if killed else status)
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
    best = tracking.best_trial(tracking_uri, experiment_id, parent_run_id, metric, mode)
    if best is None:
        raise TumorsweepError(
            f"--register-best {name}: no finished trial of sweep run {parent_run_id} has {metric}"
        )
    run_id, value = best
    version = tracking.register_trial(
        tracking_uri,
        name,
        run_id,
        tags={
            tracking.REGISTERED_METRIC_TAG: f"{metric} ({mode})",
            tracking.REGISTERED_VALUE_TAG: f"{value!r}",
        },
        description=f"best trial of sweep run {parent_run_id} by {metric} ({mode}): {value:.5f}",
    )
    return version, run_id, value


def _concurrency(options: SweepOptions) -> int:
    """Trials at once: what the cluster fits, capped by --max-concurrent."""
    import ray

    fits = _capacity(options)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    total = ray.cluster_resources()
    print(
        f"Ray cluster: {len(nodes)} node(s), {total.get('CPU', 0):g} CPU, "
        f"{total.get('GPU', 0):g} GPU; up to {fits} trial(s) at once",
        flush=True,
    )
    if options.max_concurrent > fits:
        print(
            f"note: --max-concurrent {options.max_concurrent} capped at {fits}: the cluster "
            "fits no more trials at once (more would time out waiting for workers)"
        )
    return min(options.max_concurrent, fits) if options.max_concurrent else fits


def _start_parent(
    options: SweepOptions,
    experiment_id: str,
    sweep_name: str,
    space: SearchSpace,
    cases: CaseLists,
    base: TrialConfig,
) -> str:
    """The MLflow parent run of a new sweep, with the study's tags and the base config."""
    parent_run_id = tracking.start_parent_run(
        options.tracking_uri,
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
    tracking.log_params(options.tracking_uri, parent_run_id, shared)
    return parent_run_id


def _log_summary(tracking_uri: str, parent_run_id: str, space: SearchSpace, context, results):
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
    tracking.log_sweep_summary(
        tracking_uri, parent_run_id, space.metric, best.metrics[space.metric], name
    )


def _latest_file(storage: str, experiment: str) -> Path | None:
    return None if "://" in storage else Path(storage) / f"{safe_name(experiment)}.latest"


def _write_sweep_state(storage: str, experiment: str, sweep_name: str, parent: str) -> None:
    """Where `--resume` finds this sweep: its folder's state file and the experiment's
    `.latest` pointer (both under the storage folder whatever the experiment is called)."""
    folder = Path(storage, sweep_name)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"parent_run_id": parent, "experiment": experiment}
    (folder / STATE_FILE).write_text(json.dumps(state))
    latest = _latest_file(storage, experiment)
    if latest is not None:
        latest.write_text(sweep_name)


def _resume_parent(tracking_uri: str, storage: str, experiment: str) -> tuple[str, str]:
    """The interrupted sweep's name and parent run, reopened under this driver."""
    latest = _latest_file(storage, experiment)
    if latest is None or not latest.is_file():
        raise TumorsweepError(f"--resume: no earlier sweep of {experiment!r} under {storage}")
    sweep_name = latest.read_text().strip()
    state = json.loads((Path(storage) / sweep_name / STATE_FILE).read_text())
    parent_run_id = state["parent_run_id"]
    tracking.reopen_parent_run(tracking_uri, parent_run_id)
    print(f"Resuming sweep {sweep_name} (MLflow parent run {parent_run_id})")
    return sweep_name, parent_run_id


def _tuner(
    space: SearchSpace,
    options: SweepOptions,
    context: TrialContext,
    sweep_name: str,
    seeds: list[int],
    progress: Progress,
    epochs: int,
):
    """A new Tuner over the study's param space, or the interrupted one restored (with the
    callbacks it was created with)."""
    concurrent = progress.concurrent
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context), _trial_resources(context)
    )
    if options.resume:
        return tune.Tuner.restore(
            str(Path(context.storage) / sweep_name),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
        )
    return tune.Tuner(
        trainable,
        param_space=param_space(space, seeds, folds=_folds(context)),
        tune_config=tune.TuneConfig(
            search_alg=_searcher(space, concurrent),
            scheduler=_scheduler(space, epochs),
            metric=space.metric,
            mode=space.mode,
            num_samples=space.searcher.num_samples,
            max_concurrent_trials=concurrent,
            reuse_actors=context.workers == 1,  # a reused actor has MONAI imported already
        ),
        run_config=tune.RunConfig(
            name=sweep_name,
            storage_path=context.storage,
            # one-worker trials are retried by Tune; multi-worker ones by Ray Train
            failure_config=tune.FailureConfig(
                max_failures=context.max_failures if context.workers == 1 else 0
            ),
            callbacks=[_trial_events(context, progress)],
            verbose=1 if options.verbose else 0,  # Tune's own status boxes: --verbose
        ),
    )


def _folds(context: TrialContext) -> int | None:
    """The number of cross-validation folds the trials sweep (None without, or when the base
    config fixes one fold with data.fold)."""
    return None if len(context.cases_by_fold) < 2 else len(context.cases_by_fold)


def _trial_resources(context: TrialContext) -> dict[str, float]:
    """What a Tune trial holds: a one-worker trial the worker's CPUs and GPUs (it trains in
    place), a multi-worker trial a sliver for its driver (the workers hold the rest)."""
    if context.workers > 1:
        return {"cpu": 0.01}
    gpus = context.resources_per_worker.get("GPU", 0)
    return {"cpu": context.resources_per_worker["CPU"]} | ({"gpu": gpus} if gpus else {})


# After SIGTERM, how long Tune may take to stop its trials and save its state for --resume
# while Ray is still up; the runs are closed at once either way.
STOP_GRACE_S = 30.0
_RAY_CORE = ("raylet", "gcs_server", "ray-dashboard")


@dataclass
class _Stop:
    """Whether a SIGTERM asked this sweep to stop (its runs are then closed as KILLED)."""

    requested: bool = False


def _local_ray_core() -> list:
    """This driver's local Ray processes (raylet, GCS, dashboard heads; psutil) in its process
    group; none on a cluster (--address)."""
    import psutil

    try:
        return [
            p
            for p in psutil.Process().children(recursive=True)
            if p.name().startswith(_RAY_CORE) and os.getpgid(p.pid) == os.getpgrp()
        ]
    except (psutil.Error, OSError):
        return []


def _all_alive(processes: list) -> bool:
    """Whether every one of `processes` still runs (a zombie counts as dead). The group-wide
    SIGTERM that kills Ray's dashboard shows up here within a second or two (raylet and GCS
    may survive it, Tune's graceful stop does not)."""
    import psutil

    for process in processes:
        try:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            return False
    return True


@contextlib.contextmanager
def _stop_on_sigterm(close_runs) -> Iterator[_Stop]:
    """While Tune runs, SIGTERM stops the sweep the way Ctrl-C does (Tune saves its state and
    returns), and, whichever processes got the signal, closes every open run at once (in a
    thread: `close_runs()`) and ends the driver (exit 130) as soon as its local Ray is found
    dead, at the latest after STOP_GRACE_S. `timeout`, systemd and schedulers signal the whole
    process group, which kills Ray's own processes too: Tune's graceful stop would then wait
    a minute on a dead cluster and leave the runs RUNNING."""
    stop = _Stop()
    core = _local_ray_core()  # empty on a cluster: then Tune gets the whole grace period

    def closer() -> None:
        try:
            close_runs()
        except Exception as exc:  # the store itself failed: say so, still exit
            print(f"[tumorsweep] could not mark the runs KILLED: {exc}", file=sys.stderr)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and _all_alive(core):
            time.sleep(0.2)
        print(
            "interrupted: the unfinished trials are marked KILLED; --resume finishes them",
            flush=True,
        )
        os._exit(130)

    def forward(_signum, _frame) -> None:
        if stop.requested:
            return
        stop.requested = True
        threading.Thread(target=closer, name="tumorsweep-stop", daemon=True).start()
        os.kill(os.getpid(), signal.SIGINT)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: leave signals alone
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _close_unfinished(tracking_uri: str, experiment_id: str, parent_run_id: str) -> int:
    """Mark trial runs Tune left running (an interrupted sweep) KILLED; returns how many."""
    running = tracking.running_trials(tracking_uri, experiment_id, parent_run_id)
    for run_id in running:
        tracking.finish_run(
            tracking_uri, run_id, status="KILLED", error="sweep interrupted (resume with --resume)"
        )
    return len(running)
