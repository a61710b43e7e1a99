"""The trial body: one Tune trial is one nested MLflow run. A one-worker trial trains in its
Tune actor; a multi-worker trial builds and fits a TorchTrainer (Ray 2.60 runs Train inside
Tune this way), with `TuneReportCallback` forwarding rank 0's reports. Every trial re-attaches
to its own nested run by Tune trial id, so a resumed sweep never logs a trial twice."""

from __future__ import annotations

from typing import Any

from tumorsweep import tracking
from tumorsweep.config import TrialConfig, apply_overrides, flatten
from tumorsweep.data.cases import CaseLists
from tumorsweep.progress import trial_name
from tumorsweep.search_space import config_key, trial_overrides
from tumorsweep.sweep.options import TrialContext


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
    cfg = apply_overrides(TrialConfig.model_validate(context.base), overrides, source="trial")
    trial_id = tune.get_context().get_trial_id()
    cases = context.cases_by_fold[cfg.data.fold]
    store = tracking.RunStore(context.tracking_uri)
    run_name = trial_name(flatten(cfg), context.swept, cfg.seed, cfg.data.fold)
    run_id = _attach(store, context, cfg, cases, trial_id, run_name, overrides)
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
        reason = root_cause(exc)
        store.finish_run(run_id, status="FAILED", error=reason)
        raise RuntimeError(f"trial {trial_id} ({run_name}) failed: {reason}") from None
    store.finish_run(run_id)


def _attach(
    store: tracking.RunStore,
    context: TrialContext,
    cfg: TrialConfig,
    cases: CaseLists,
    trial_id: str,
    run_name: str,
    overrides: dict[str, Any],
) -> str:
    """The trial's nested run (re-attached on resume), with its tags, params (config, seed,
    training pool) and the case lists it trains, selects and tests on."""
    share = cfg.data.real_share()
    run_id = store.attach_trial_run(
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
            **flatten(cfg),
            tracking.SEED_PARAM: cfg.seed,
            **tracking.pool_params(cases.pool(share)),
        },
    )
    real, synthetic = share > 0, share < 1
    store.log_case_lists(
        run_id,
        {
            "training": cases.train if synthetic else (),
            "training-real-tumours": cases.train_tumor if real else (),
            "validation": cases.selection_cases(),
            "test": cases.test,
        },
    )
    return run_id


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


def root_cause(exc: BaseException) -> str:
    """The innermost message of a chain of Ray wrappers (what actually went wrong)."""
    seen = exc
    while seen.__cause__ is not None or getattr(seen, "cause", None) is not None:
        seen = seen.__cause__ or seen.cause
    text = f"{type(seen).__name__}: {seen}".strip()
    return text.splitlines()[-1] if text else type(exc).__name__
