"""The train-generator job: the study's real-tumour training cases -> a generator folder.

It trains on `CaseLists.train_tumor` only (never validation or test cases) and records them,
so the leakage guard can refuse a generator fitted on held-out cases. One MLflow run per job
(tag `tumorsweep.role` = "generator", its folder as a tag; per-epoch losses, previews and
`generator.json` as artifacts). Locally the job runs in this process (`LocalSession`); with a
Ray address it is a Ray Train run of `workers` DDP workers (`RaySession`), the same loop.
The chief rank writes the folder atomically and checks that it loads.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tumorsweep import tracking
from tumorsweep.config import flatten_dict
from tumorsweep.data.cases import CaseLists, cache_dir
from tumorsweep.difftumor.training import fit_generator
from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import GeneratorConfig
from tumorsweep.generative.patches import load_cases
from tumorsweep.generative.preview import save_previews
from tumorsweep.generative.store import CONFIG_FILE, load_generator, save_generator
from tumorsweep.ray_cluster import DRIVER_RESERVE_CPU, connect_ray
from tumorsweep.session import LocalSession, RaySession, Session

GENERATOR_ROLE = "generator"  # value of tracking.ROLE_TAG for a generator's run


@dataclass
class GeneratorJob:
    """What to train, on which cases, where to write it and where it runs."""

    config: GeneratorConfig
    cases: CaseLists
    out: Path
    tracking_uri: str | None = None
    experiment: str = "difftumor_generator"
    address: str | None = None  # Ray cluster; None = this process
    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    storage: str = ""


def training_entries(cases: CaseLists) -> list[dict[str, Any]]:
    """The real-tumour training cases (refused, naming the dataset, when there are none)."""
    if not cases.train_tumor:
        raise TumorsweepError(
            f"{cases.root}: no real-tumour training cases to train the DiffTumor generator on "
            f"(test list {cases.eval_set!r}; validation and test cases are never used). Use a "
            "split that leaves tumour cases for training, or a generator trained elsewhere "
            "with synthesis.generator=DIR"
        )
    return [dict(entry) for entry in cases.train_tumor]


def run_job(job: GeneratorJob) -> Path:
    """Train and write the generator folder; returns its path."""
    entries = training_entries(job.cases)
    if job.out.exists():
        raise TumorsweepError(f"{job.out}: already exists; choose a new --out folder")
    lpips = job.config.training.perceptual_weights
    if job.config.training.perceptual_weight > 0 and lpips:
        from tumorsweep.generative.vqgan import LPIPS

        LPIPS(lpips)  # a missing or foreign LPIPS file is refused before the run starts
    run_id = _start_run(job, len(entries)) if job.tracking_uri else None
    loop_config = {
        "config": job.config.model_dump(mode="json"),
        "entries": entries,
        "data_root": job.cases.root,
        "out": str(job.out),
        "tracking_uri": job.tracking_uri,
        "run_id": run_id,
        "threads": job.cpus_per_worker,
    }
    try:
        if job.address:
            _ray_fit(loop_config, job, run_id)
        else:
            generator_worker(loop_config, LocalSession())
        if not (job.out / CONFIG_FILE).is_file():
            raise TumorsweepError(f"{job.out}: the training run wrote no generator")
    except BaseException as exc:
        if run_id:
            tracking.finish_run(job.tracking_uri, run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    if run_id:
        tracking.finish_run(job.tracking_uri, run_id)
    return job.out


def _start_run(job: GeneratorJob, n_cases: int) -> str:
    experiment_id = tracking.ensure_experiment(job.tracking_uri, job.experiment)
    run_id = tracking.start_parent_run(
        job.tracking_uri,
        experiment_id,
        f"generator-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            tracking.ROLE_TAG: GENERATOR_ROLE,
            tracking.GENERATOR_DIR_TAG: str(job.out.resolve()),
            tracking.DATA_ROOT_TAG: job.cases.root,
            tracking.EVAL_SET_TAG: job.cases.eval_set,
        },
    )
    params = flatten_dict(job.config.model_dump(mode="json"), "generator.")
    tracking.log_params(job.tracking_uri, run_id, {**params, "generator.cases": n_cases})
    return run_id


def generator_worker(loop_config: dict[str, Any], session: Session | None = None) -> None:
    """Ray Train entry point (and the local path): train, then the chief writes the folder,
    loads it back and logs previews."""
    if session is None:
        torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
        session = RaySession()
    chief = session.world_rank == 0
    uri, run_id = loop_config.get("tracking_uri"), loop_config.get("run_id")
    logger = tracking.MlflowTrialLogger(uri, run_id) if chief and uri and run_id else None
    config = GeneratorConfig.model_validate(loop_config["config"])
    cases = load_cases(loop_config["entries"], config)
    fitted = fit_generator(config, cases, session, logger)
    if chief:
        out = save_generator(
            loop_config["out"],
            config,
            fitted.weights,
            fitted.latent_scale,
            trained_on=[
                {key: entry[key] for key in ("case", "image", "label")}
                for entry in loop_config["entries"]
            ],
            extra={
                "data_root": loop_config["data_root"],
                "tumours": fitted.tumours,
                "fallbacks": fitted.fallbacks,
                "history": fitted.history,
                "seconds": fitted.seconds,
                "mlflow_run_id": run_id,
            },
        )
        generator = load_generator(out, session.device)
        if logger is not None:
            with tempfile.TemporaryDirectory() as tmp:
                previews = save_previews(generator, cases, Path(tmp))
                logger.log_artifacts([out / CONFIG_FILE, *previews])
    session.barrier()


def _ray_fit(loop_config: dict[str, Any], job: GeneratorJob, run_id: str | None) -> None:
    """A Ray Train DDP run of `generator_worker` (the folder must be on storage every node
    sees: the chief writes it)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    connect_ray(job.address, reserve=DRIVER_RESERVE_CPU, worker_output=True)  # its progress
    resources = {"CPU": job.cpus_per_worker} | (
        {"GPU": job.gpus_per_worker} if job.gpus_per_worker else {}
    )
    trainer = TorchTrainer(
        generator_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.workers,
            use_gpu=bool(job.gpus_per_worker),
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=f"generator-{run_id or time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=job.storage or str((cache_dir() / "ray_results").resolve()),
            failure_config=ray.train.FailureConfig(max_failures=1, controller_failure_limit=1),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise TumorsweepError(f"generator training failed: {result.error}")
