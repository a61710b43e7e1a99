"""The Tune wiring of a sweep: how many trials fit the cluster at once, the searcher (grid, or
Optuna's TPE / random sampler behind a concurrency limit), the ASHA scheduler, what a trial
holds, and the Tuner itself (new, or the interrupted one restored for `--resume`)."""

from __future__ import annotations

from pathlib import Path

from tumorsweep.errors import TumorsweepError
from tumorsweep.progress import Progress, trial_name, tune_callback
from tumorsweep.ray_cluster import driver_reserve
from tumorsweep.search_space import SearchSpace, param_space, trial_overrides
from tumorsweep.sweep.options import SweepOptions, TrialContext
from tumorsweep.sweep.trial import run_trial
from tumorsweep.tracking import RunStore


def _trial_events(context: TrialContext, progress: Progress):
    """Driver-side Tune callback: the console's trial lines and progress (tumorsweep.progress),
    and a safety net: a trial that Tune ends without the trial itself closing its MLflow run
    (stopped early by ASHA, its actor killed, an error outside fit) still gets a final status
    and reason instead of staying RUNNING."""

    store = RunStore(context.tracking_uri)

    def run_id(trial) -> str | None:
        return store.find_trial_run(context.experiment_id, context.parent_run_id, trial.trial_id)

    def name_of(trial) -> str:
        config = trial.config
        overrides = trial_overrides(config)
        return trial_name(overrides, context.swept, config.get("seed", 0), config.get("data.fold"))

    def on_finished(trial) -> None:
        if found := run_id(trial):
            store.close_if_running(found, "FINISHED")

    def error_of(trial) -> str:
        found = run_id(trial)
        if not found:
            return ""
        reason = store.run_error(found)
        store.close_if_running(found, "FAILED", f"trial {trial.trial_id} errored")
        return reason

    return tune_callback(progress, name_of, on_finished, error_of)


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


def concurrency(options: SweepOptions) -> int:
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


def build_tuner(
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
        param_space=param_space(space, seeds, folds=context.folds()),
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


def _trial_resources(context: TrialContext) -> dict[str, float]:
    """What a Tune trial holds: a one-worker trial the worker's CPUs and GPUs (it trains in
    place), a multi-worker trial a sliver for its driver (the workers hold the rest)."""
    if context.workers > 1:
        return {"cpu": 0.01}
    gpus = context.resources_per_worker.get("GPU", 0)
    return {"cpu": context.resources_per_worker["CPU"]} | ({"gpu": gpus} if gpus else {})
