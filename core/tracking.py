"""MLflow names and logging, shared by the sweep driver, the rank-0 trainer and the report.

Naming (what the notebook and the UI rely on): experiment = study, tagged as model training
(its runs table: `runs_page_url`, not MLflow's GenAI traces view); parent run = one sweep
invocation (`ROLE_TAG` "sweep"); a nested child run per trial (`ROLE_TAG` "trial",
`PARENT_TAG`) tagged with backbone and evaluation set; params = the flattened config plus
`seed` and the training pool per source (`train_pool.*`); metrics `liver_dice`... plus
per-epoch curves with step = epoch. Every tag, param and artifact name lives here; other
modules import them. A trial's selected weights and config are its `model/` artifact folder,
which `tumorsweep predict --run` downloads and which a registered model version points at
(`models:/NAME/VERSION`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tumorsweep.errors import TumorsweepError

# Tags
# MLflow 3's kind of experiment. The 3.17 UI picks its view from its own GenAI / Model training
# switch instead (default GenAI, kept per browser): `runs_page_url` opens the runs view anyway.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # model training: runs, not traces
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
ROLE_TAG = "tumorsweep.role"  # "sweep" (parent run) or "trial" (child run)
PARENT_TAG = "mlflow.parentRunId"
TRIAL_ID_TAG = "tumorsweep.trial_id"
CONFIG_KEY_TAG = "tumorsweep.config_key"
ERROR_TAG = "tumorsweep.error"
BACKBONE_TAG = "backbone"
EVAL_SET_TAG = "eval_set"
STUDY_TAG = "tumorsweep.study"
SWEPT_TAG = "tumorsweep.swept"  # JSON list of the swept dotted fields
BASELINE_TAG = "tumorsweep.baseline"  # JSON object: the baseline column's swept values
PRESET_TAG = "tumorsweep.preset"
DATA_ROOT_TAG = "tumorsweep.data_root"
DATA_WARNINGS_TAG = "tumorsweep.data_warnings"  # JSON list of strings
GENERATOR_DIR_TAG = "tumorsweep.generator_dir"  # on a generator job's run: its output folder
BEST_TRIAL_TAG = "tumorsweep.best_trial"  # the best trial's run name, on the sweep's run
DATA_SOURCES_TAG = "tumorsweep.data_sources"  # JSON list of {name, path, layout, role}
DRIVER_HOST_TAG = "tumorsweep.driver_host"
DRIVER_PID_TAG = "tumorsweep.driver_pid"
# A trial that evaluates a released checkpoint (no training): the published column it
# reproduces (JSON [table, label] of core/reference/published.yaml) and the file's SHA-256.
PUBLISHED_COLUMN_TAG = "tumorsweep.published_column"
CHECKPOINT_SHA256_TAG = "tumorsweep.checkpoint_sha256"
# Params beyond the flattened config
SEED_PARAM = "seed"
# The trial's training pool per source: `train_pool.<source>.<arm>` = cases (arm healthy or
# real_tumor, the arms the trial draws from, 0 included), and `train_pool.total`.
POOL_PARAM_PREFIX = "train_pool."
POOL_TOTAL_PARAM = "train_pool.total"
# Artifacts of a trial
PER_CASE_TEST_ARTIFACT = "per_case_test.csv"
PER_CASE_VAL_ARTIFACT = "per_case_val.csv"
# one row per true tumour lesion of the test list: case, lesion, voxels, diameter_mm, detected,
# matched_dice (tumorsweep.evaluate.lesions.lesion_records)
PER_LESION_TEST_ARTIFACT = "per_lesion_test.csv"
CONFIG_ARTIFACT = "config.yaml"
PREVIEW_ARTIFACT = "synthesis_preview.png"
MODEL_ARTIFACT_DIR = "model"  # holds BEST_WEIGHTS_FILE and CONFIG_ARTIFACT
BEST_WEIGHTS_FILE = "best_weights.pt"  # state dict of the selected weights (weights_only load)
# Model-version tags of a registered best trial
REGISTERED_METRIC_TAG = "tumorsweep.selected_by"
REGISTERED_VALUE_TAG = "tumorsweep.selected_value"
# Metrics the trainer logs per epoch (step = epoch) and which mark a logged epoch
TRAIN_STEP_METRIC = "train_loss"
VAL_STEP_METRIC = "val_liver_dice"
RESUMED_METRIC = "resumed_at_epoch"
# per epoch, every synthesis style: share of training patches holding tumour voxels (real or
# synthetic), and share holding a synthetic tumour (the check that synthesis reaches the patch)
PATCH_TUMOR_FRACTION = "train_patch_tumor_fraction"
# Param of a trial whose DiffTumor generator is Chen et al.'s released weights (true), trained on
# cases outside the study's control; the report notes it beside the trial's column.
GENERATOR_RELEASED_PARAM = "generator.released"
PATCH_SYNTHETIC_FRACTION = "train_patch_synthetic_fraction"
MAX_PARAM_LENGTH = 6000
# Counters and timings of a trial's final scoring that nobody compares across runs (cases
# scored per metric, empty-mask counts, voxel totals, seconds spent): one JSON artifact per
# trial instead of dozens of metrics before the ones that matter in the UI.
BOOKKEEPING_ARTIFACT = "bookkeeping.json"
_BOOKKEEPING_SUFFIXES = ("_n", "_total")
_BOOKKEEPING_PARTS = ("_empty_", "_cases_no_")


def is_bookkeeping(name: str) -> bool:
    """Whether a final metric is a counter or timing (`BOOKKEEPING_ARTIFACT`), not a result."""
    return (
        name.startswith("time_")
        or name.endswith(_BOOKKEEPING_SUFFIXES)
        or any(part in name for part in _BOOKKEEPING_PARTS)
    )


def split_bookkeeping(
    metrics: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, float]]:
    """(results to log as metrics, counters and timings for `BOOKKEEPING_ARTIFACT`)."""
    results = {k: v for k, v in metrics.items() if not is_bookkeeping(k)}
    return results, {k: v for k, v in metrics.items() if is_bookkeeping(k)}


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """A local SQLite store in the working directory (absolute, so Ray workers agree)."""
    base = Path(cwd or os.getcwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


def check_model_name(name: str, flag: str = "model name") -> None:
    """A registered-model name MLflow accepts (no empty name, no '/' or ':', no '..' or
    absolute-path parts), checked before a sweep runs rather than after it."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    if not name.strip():
        raise TumorsweepError(f"{flag} {name!r}: the model name is empty")
    if name != name.strip() or any(ord(c) < 32 for c in name):
        raise TumorsweepError(f"{flag} {name!r}: leading/trailing spaces or control characters")
    try:
        _validate_model_name(name)
    except MlflowException as exc:
        raise TumorsweepError(f"{flag} {name!r}: {_first_line(exc)}") from None


def local_artifact_root(tracking_uri: str) -> str | None:
    """For a local SQLite store, artifacts live beside the database file."""
    if tracking_uri.startswith("sqlite:///"):
        db_path = Path(tracking_uri[len("sqlite:///") :])
        return (db_path.parent / "mlartifacts").as_uri()
    return None


def runs_page_url(tracking_uri: str, experiment_id: str, order_by: str | None = None) -> str:
    """The MLflow UI page of an experiment's runs table (the server itself for an http store,
    else a local `mlflow ui`), in the model-training view whatever the browser last used;
    with `order_by` (a metric name, e.g. the study's search metric) the runs are sorted on
    it, best first, so the page opens on the answer."""
    from urllib.parse import urlencode

    base = (
        tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    )
    query = {"workflowType": "machine_learning"}
    if order_by:
        query |= {"orderByKey": f"metrics.`{order_by}`", "orderByAsc": "false"}
    return f"{base}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


# MLflow 3.17's UI reads a saved runs-table view from an experiment tag
# `mlflow.sharedViewState.<key>` (JSON of its search facets and table state) when the page is
# opened with `?viewStateShareKey=<key>` (and no search facet in the URL).
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
HEADLINE_METRICS = ("tumor_dice", "tumor_nsd", "liver_dice", "liver_nsd")


def trials_view_url(
    tracking_uri: str, experiment_id: str, metric: str, swept: Sequence[str]
) -> str:
    """Save (as an experiment tag) and return the link of a runs-table view that opens on the
    answer: the trials only (not the sweep's parent row), best first by `metric`, with the
    swept params, the four headline metrics and the search metric as columns (the dataset,
    source and model columns left out: they take the width the answer needs)."""
    columns = [
        *(f"params.`{name}`" for name in swept),
        *(f"metrics.`{name}`" for name in dict.fromkeys([*HEADLINE_METRICS, metric])),
    ]
    state = {
        "searchFilter": f"tags.`{ROLE_TAG}` = 'trial'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": False,
        "selectedColumns": columns,
    }
    text = json.dumps(state, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:32]
    RunStore(tracking_uri).client.set_experiment_tag(
        experiment_id, SHARED_VIEW_TAG_PREFIX + key, text
    )
    return f"{runs_page_url(tracking_uri, experiment_id)}&viewStateShareKey={key}"


def driver_tags() -> dict[str, str]:
    """Tags saying which process drives a sweep (so a dead driver's runs can be recognised)."""
    return {DRIVER_HOST_TAG: socket.gethostname(), DRIVER_PID_TAG: str(os.getpid())}


def _params(params: Mapping[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]


def _metrics(metrics: Mapping[str, float], step: int | None) -> list:
    """Finite numeric metrics as MLflow entities (NaN stays out: missing, never zero)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(k, float(v), now, step or 0)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]


def _log_batches(client, run_id: str, params: list | None = None, metrics: list | None = None):
    """MLflow caps a batch at 100 params and 1000 metrics."""
    for start in range(0, len(params or []), 100):
        client.log_batch(run_id, params=params[start : start + 100])
    for start in range(0, len(metrics or []), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def pool_params(pool: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """MLflow params of a training pool {source: {arm: cases}} (see POOL_PARAM_PREFIX): every
    source and arm given (0 included: a source that gives the trial nothing is listed), and
    the total."""
    params = {
        f"{POOL_PARAM_PREFIX}{source}.{arm}": int(count)
        for source, arms in pool.items()
        for arm, count in arms.items()
    }
    return {**params, POOL_TOTAL_PARAM: sum(params.values())}


class RunStore:
    """One MLflow store (a tracking URI) and the one client that talks to it: everything the
    sweep driver, a trial, the generator job and the released-checkpoint study write to or read
    from MLflow goes through here, named by the tags and params above.

    Args:
        tracking_uri: the store (`sqlite:///...`, a folder, or an `http(s)://` server).
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._mlflow = None

    @property
    def client(self):
        """The MLflow client, built on first use (a store travels to Ray workers unbuilt)."""
        if self._mlflow is None:
            from mlflow import MlflowClient

            self._mlflow = MlflowClient(tracking_uri=self.tracking_uri)
        return self._mlflow

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "_mlflow": None}

    def ensure_experiment(self, name: str) -> str:
        """Create the store and the experiment once (in the driver, before any trial starts),
        marked as a training experiment (`EXPERIMENT_KIND_TAG`); returns its id."""
        try:
            client = self.client
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                experiment_id = client.create_experiment(
                    name, artifact_location=local_artifact_root(self.tracking_uri)
                )
            else:
                experiment_id = experiment.experiment_id
                if experiment.lifecycle_stage == "deleted":
                    client.restore_experiment(experiment_id)
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return experiment_id
        except TumorsweepError:
            raise
        except Exception as exc:  # unreachable server, unwritable file, bad URI
            raise TumorsweepError(f"MLflow tracking URI {self.tracking_uri!r}: {exc}") from None

    def start_parent_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        """The parent run of one sweep invocation (or generator job, or released study)."""
        all_tags = {ROLE_TAG: "sweep", **driver_tags(), **tags}
        return self.client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id

    def attach_trial_run(
        self,
        experiment_id: str,
        parent_run_id: str,
        trial_id: str,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
    ) -> str:
        """The nested run of one trial: re-attach to it if this trial already has one
        (resume)."""
        run_id = self.find_trial_run(experiment_id, parent_run_id, trial_id)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        all_tags = {ROLE_TAG: "trial", PARENT_TAG: parent_run_id, TRIAL_ID_TAG: trial_id, **tags}
        run = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_trial_run(self, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
        """The nested run of a Tune trial in this sweep, if it has one."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = "
            f"'{parent_run_id}'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def reopen_parent_run(self, run_id: str) -> None:
        """A resumed sweep's parent run: RUNNING again, driven by this process."""
        self.client.update_run(run_id, status="RUNNING")
        for key, value in driver_tags().items():
            self.client.set_tag(run_id, key, value)

    def running_trials(self, experiment_id: str, parent_run_id: str) -> list[str]:
        """Ids of the sweep's trial runs still marked RUNNING."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and "
            "attributes.status = 'RUNNING'",
            max_results=10_000,
        )
        return [run.info.run_id for run in found]

    def experiment_of(self, run_id: str) -> str | None:
        """The name of the experiment run `run_id` belongs to; None when the store has no such
        run."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
            return self.client.get_experiment(run.info.experiment_id).name
        except MlflowException:
            return None

    def run_error(self, run_id: str) -> str:
        """The failure reason a run was closed with ("" if none)."""
        return self.client.get_run(run_id).data.tags.get(ERROR_TAG, "")

    def close_if_running(self, run_id: str, status: str, error: str = "") -> None:
        """Give a run its final status unless it already has one (the trial set it itself)."""
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.finish_run(run_id, status=status, error=error)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in batches."""
        _log_batches(self.client, run_id, params=_params(params))

    def finish_run(self, run_id: str, status: str = "FINISHED", error: str = "") -> None:
        """Close a run; a failed one keeps its reason as a tag so the UI and the report show
        it."""
        if error:
            self.client.set_tag(run_id, ERROR_TAG, error[:5000])
        self.client.set_terminated(run_id, status=status)

    def log_case_lists(self, run_id: str, lists: Mapping[str, Sequence[Mapping]]) -> None:
        """Register the case lists a trial used as MLflow dataset inputs (the UI's Dataset
        column and lineage): one dataset per list (`training`, `validation`, `test`...), named
        by the list and its data folder, with a digest of its case files (paths, sizes,
        modification times) so two runs on the same cases show the same dataset."""
        inputs = [_dataset_input(context, cases) for context, cases in lists.items() if cases]
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def log_sweep_summary(self, run_id: str, metric: str, value: float, best: str) -> None:
        """The study's answer on its sweep run: the best trial by the search metric (its run
        name as a tag, the metric as `best_<metric>`), so the parent row reads as a summary."""
        self.client.set_tag(run_id, BEST_TRIAL_TAG, best)
        self.client.log_metric(run_id, f"best_{metric.removeprefix('best_')}", float(value))

    def trial_logger(self, run_id: str) -> MlflowTrialLogger:
        """The logger a trainer records its trial with, on this store's client."""
        return MlflowTrialLogger(self.tracking_uri, run_id, client=self.client)

    def download_trial_model(self, run_id: str, dst: str | Path) -> Path:
        """Download a trial's `model/` folder (selected weights + config) into `dst`; returns
        the local folder. A run without it is an error naming the run and why it may lack
        it."""
        try:
            self.client.get_run(run_id)
        except Exception as exc:  # unknown id, unreachable store
            raise TumorsweepError(
                f"--run {run_id}: no such run in {self.tracking_uri} ({exc})"
            ) from None
        listed = {Path(a.path).name for a in self.client.list_artifacts(run_id, MODEL_ARTIFACT_DIR)}
        missing = sorted({BEST_WEIGHTS_FILE, CONFIG_ARTIFACT} - listed)
        if missing:
            raise TumorsweepError(
                f"--run {run_id}: no {MODEL_ARTIFACT_DIR}/{missing[0]} artifact (the trial did "
                "not finish its test, was run with eval.log_best_model=false, or predates "
                "logged weights)"
            )
        return Path(self.client.download_artifacts(run_id, MODEL_ARTIFACT_DIR, str(dst)))

    def download_registered_model(self, model_uri: str, dst: str | Path) -> Path:
        """Download the folder a `models:/NAME/VERSION` URI points at into `dst`; returns
        it."""
        name, _, version = model_uri.removeprefix("models:/").partition("/")
        if not model_uri.startswith("models:/") or not name or not version.isdigit():
            raise TumorsweepError(f"--model {model_uri!r}: expected models:/NAME/VERSION")
        try:
            source = self.client.get_model_version_download_uri(name, version)
        except Exception as exc:
            raise TumorsweepError(
                f"--model {model_uri}: no such model version in {self.tracking_uri} "
                f"({_first_line(exc)})"
            ) from None
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        if not source.startswith("runs:/") or path != MODEL_ARTIFACT_DIR:
            raise TumorsweepError(
                f"--model {model_uri}: points at {source}, not at a tumorsweep trial's "
                f"{MODEL_ARTIFACT_DIR}/ folder (register trials with --register-best)"
            )
        return self.download_trial_model(run_id, dst)

    def best_trial(
        self, experiment_id: str, parent_run_id: str, metric: str, mode: str
    ) -> tuple[str, float] | None:
        """The finished trial of a sweep with the best value of `metric` (`mode` "max" or
        "min") and that value; None when no finished trial has it. Ties go to the earliest
        trial."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and "
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )
        scored = [
            (run.info.run_id, run.data.metrics[metric])
            for run in found
            if run.data.tags.get(ROLE_TAG) == "trial"
            and math.isfinite(run.data.metrics.get(metric, math.nan))
        ]
        if not scored:
            return None
        sign = 1.0 if mode == "max" else -1.0
        return max(scored, key=lambda item: sign * item[1])

    def register_trial(
        self, name: str, run_id: str, tags: Mapping[str, str], description: str
    ) -> int:
        """Register a trial's `model/` folder as a new version of model `name` (created if
        new); returns the version number."""
        from mlflow.exceptions import MlflowException

        client = self.client
        listed = {Path(a.path).name for a in client.list_artifacts(run_id, MODEL_ARTIFACT_DIR)}
        if BEST_WEIGHTS_FILE not in listed:
            raise TumorsweepError(
                f"--register-best {name!r}: trial run {run_id} has no {MODEL_ARTIFACT_DIR}/"
                f"{BEST_WEIGHTS_FILE} (was eval.log_best_model false?)"
            )
        try:
            try:
                client.get_registered_model(name)
            except MlflowException:
                client.create_registered_model(name)
            version = client.create_model_version(
                name,
                source=f"runs:/{run_id}/{MODEL_ARTIFACT_DIR}",
                run_id=run_id,
                tags=dict(tags),
                description=description,
            )
        except MlflowException as exc:
            raise TumorsweepError(f"--register-best {name!r}: {_first_line(exc)}") from None
        return int(version.version)


def _dataset_input(context: str, cases: Sequence[Mapping]):
    """One case list as an MLflow dataset input (see `RunStore.log_case_lists`)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    digest = hashlib.sha256()
    for case in sorted(cases, key=lambda c: c["image"]):
        for path in (case["image"], case["label"]):
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    root = os.path.commonpath([os.path.dirname(c["image"]) for c in cases])
    dataset = Dataset(
        name=f"{Path(root).name}:{context}",
        digest=digest.hexdigest()[:16],
        source_type="local",
        source=json.dumps({"uri": root}),
        profile=json.dumps({"num_cases": len(cases)}),
    )
    return DatasetInput(dataset, [InputTag("mlflow.data.context", context)])


# Callers outside the study layer's drivers (the generator job, `tumorsweep predict`) still
# use these one-call forms; each is one RunStore call.
def ensure_experiment(tracking_uri: str, name: str) -> str:
    """`RunStore(tracking_uri).ensure_experiment(name)`."""
    return RunStore(tracking_uri).ensure_experiment(name)


def start_parent_run(
    tracking_uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str]
) -> str:
    """`RunStore(tracking_uri).start_parent_run(...)`."""
    return RunStore(tracking_uri).start_parent_run(experiment_id, run_name, tags)


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    """`RunStore(tracking_uri).log_params(...)`."""
    RunStore(tracking_uri).log_params(run_id, params)


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED", error: str = "") -> None:
    """`RunStore(tracking_uri).finish_run(...)`."""
    RunStore(tracking_uri).finish_run(run_id, status, error)


def download_trial_model(tracking_uri: str, run_id: str, dst: str | Path) -> Path:
    """`RunStore(tracking_uri).download_trial_model(...)`."""
    return RunStore(tracking_uri).download_trial_model(run_id, dst)


def download_registered_model(tracking_uri: str, model_uri: str, dst: str | Path) -> Path:
    """`RunStore(tracking_uri).download_registered_model(...)`."""
    return RunStore(tracking_uri).download_registered_model(model_uri, dst)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TrialLogger(Protocol):
    """What the trainer records about its trial (MLflow, or nothing)."""

    records: bool  # False: everything is dropped (so files need not even be written)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params of the trial beyond its config (model facts)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Finite metrics at one step (epoch)."""

    def log_artifacts(self, paths: Iterable[str | Path]) -> None:
        """Files (and folders, kept under their own name) stored with the trial."""

    def logged_steps(self, metric: str) -> set[int]:
        """Steps already holding `metric` (a resumed trial does not log them twice)."""


class NullLogger:
    """A logger that records nothing (tests, notebooks, non-chief ranks)."""

    records = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        return None

    def log_artifacts(self, paths: Iterable[str | Path]) -> None:
        return None

    def logged_steps(self, metric: str) -> set[int]:
        return set()


class MlflowTrialLogger:
    """Logs to one MLflow run through one client kept for the whole trial."""

    records = True

    def __init__(self, tracking_uri: str, run_id: str, client: Any = None) -> None:
        from mlflow import MlflowClient

        self.run_id = run_id
        self._client = client if client is not None else MlflowClient(tracking_uri=tracking_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        _log_batches(self._client, self.run_id, params=_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        _log_batches(self._client, self.run_id, metrics=_metrics(metrics, step))

    def log_artifacts(self, paths: Iterable[str | Path]) -> None:
        for path in paths:
            self._client.log_artifact(self.run_id, str(path))

    def logged_steps(self, metric: str) -> set[int]:
        return {m.step for m in self._client.get_metric_history(self.run_id, metric)}
