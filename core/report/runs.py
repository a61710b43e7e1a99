"""Read a sweep's MLflow runs into tidy DataFrames (one row per trial x metric, per-case values).

Follows the MLflow naming of core/tracking.py: an experiment per study, a parent run per sweep
(`tumorsweep.role`="sweep", with `tumorsweep.swept`, `tumorsweep.baseline`, and where the sweep
wrote them `tumorsweep.data_warnings`, `tumorsweep.driver_host`, `tumorsweep.driver_pid`), a
nested child run per trial with `backbone`, `eval_set` and `tumorsweep.config_key` tags, params
as strings. A trial still RUNNING whose sweep driver ran on this machine and is gone is STALE.
With cross-validation (`--folds K`) every trial carries `data.fold` (k) and `data.folds` (K);
like the seed, the fold is not part of the configuration: it never enters the swept knobs, the
config key or the label, and becomes the `fold` column beside `seed`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tumorsweep import tracking
from tumorsweep.config import TrialConfig
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate.registry import pooled_names, summary_names
from tumorsweep.report.labels import trial_labels
from tumorsweep.report.reference import DEFAULT_PROTOCOL, protocol_deviations, reference_param_names
from tumorsweep.report.store import reading
from tumorsweep.strict import LEGACY_RANGE_SUFFIXES, legacy_range_key

# Final metrics every trial should carry; a trial lacking one still gets a row (value NaN).
FINAL_METRICS = (*summary_names(), *pooled_names())
PER_CASE_ARTIFACT = tracking.PER_CASE_TEST_ARTIFACT
PER_CASE_METRICS = tuple(summary_names())
PER_CASE_COLUMNS = ["experiment", "label", "run_id", "seed", "fold", "case", "metric", "value"]
# A finished trial whose per-case table was not found: which artifact, where it was looked for
MISSING_COLUMNS = ["experiment", "label", "run_id", "artifact", "looked_in"]

# Params kept as columns whether swept or not: they name the column (label), key the
# published numbers, or are overrides the table must declare.
PROTOCOL_PARAM = "eval.protocol"
FOLD_PARAM, FOLDS_PARAM = "data.fold", "data.folds"  # a trial's fold k of K (absent: no folds)
OVERRIDE_PARAMS = (
    "eval.allow_test_selection",
    "data.allow_overlap",
    tracking.GENERATOR_RELEASED_PARAM,
)
SPHERE_MODE_PARAM = "synthesis.sphere_mode"  # absent in trials from before it: "replace"
_KEPT_PARAMS = (
    "model.name", "model.pretrained", "data.real_tumors", "data.real_fraction", PROTOCOL_PARAM,
    SPHERE_MODE_PARAM, "synthesis.style",
)  # fmt: skip


def training_pool(params: dict[str, Any]) -> dict[str, dict[str, int]]:
    """A trial's training pool {source: {arm: cases}} from its `train_pool.*` params (empty
    for trials from before they were logged)."""
    pool: dict[str, dict[str, int]] = {}
    for name, value in params.items():
        if name.startswith(tracking.POOL_PARAM_PREFIX) and name != tracking.POOL_TOTAL_PARAM:
            source, arm = name[len(tracking.POOL_PARAM_PREFIX) :].rsplit(".", 1)
            pool.setdefault(source, {})[arm] = int(value)
    return pool


def parse_param(text: str) -> Any:
    """Turn an MLflow param string back into the value logged (int, float, bool, None, list)."""
    lowered = text.strip().lower()
    if lowered == "none":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """All runs matching the filter, newest first, following MLflow's pagination."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        existing = sorted(e.name for e in client.search_experiments())
        raise TumorsweepError(
            f"experiment {name!r} not found in {tracking_uri}; "
            f"experiments there: {', '.join(existing) or '(none)'}"
        )
    return experiment.experiment_id


def _json_tag(run: Run, tag: str, default: Any, experiment: str) -> Any:
    text = run.data.tags.get(tag)
    if text is None:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TumorsweepError(
            f"experiment {experiment!r}, sweep run {run.info.run_id}: "
            f"tag {tag} is not JSON: {text!r}"
        ) from exc


def _parent_runs(
    client: MlflowClient,
    experiment: str,
    experiment_id: str,
    parent_run_id: str | None,
    all_sweeps: bool,
) -> list[Run]:
    parents = _search_all(client, experiment_id, f"tags.`{tracking.ROLE_TAG}` = 'sweep'")
    if parent_run_id is not None:
        parents = [p for p in parents if p.info.run_id == parent_run_id]
        if not parents:
            raise TumorsweepError(
                f"experiment {experiment!r} has no sweep run with id {parent_run_id!r}"
            )
    if not parents:
        raise TumorsweepError(f"experiment {experiment!r} is empty: it has no sweep (parent) runs")
    return parents if all_sweeps else parents[:1]


def driver_gone(parent: Run) -> bool:
    """Whether the sweep's driver process ran on this machine and no longer exists."""
    host = parent.data.tags.get(tracking.DRIVER_HOST_TAG)
    try:
        pid = int(parent.data.tags.get(tracking.DRIVER_PID_TAG, ""))
    except ValueError:
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def _sweep_facts(parent: Run, experiment: str) -> dict[str, Any]:
    """What every trial row repeats of its sweep: swept knobs, baseline, warnings, staleness."""
    warnings = _json_tag(parent, tracking.DATA_WARNINGS_TAG, [], experiment)
    return {
        "swept": _json_tag(parent, tracking.SWEPT_TAG, [], experiment),
        "baseline": parent.data.tags.get(tracking.BASELINE_TAG, "{}"),
        "data_warnings": [str(w) for w in warnings] if isinstance(warnings, list) else [warnings],
        "stale": driver_gone(parent),
        "preset": parent.data.tags.get(tracking.PRESET_TAG),
    }


def _without_fold(config_key: str) -> str:
    """A config key (JSON of the swept values) without the fold, if a sweep put it there."""
    try:
        values = json.loads(config_key)
    except json.JSONDecodeError:
        return config_key
    if not isinstance(values, dict) or FOLD_PARAM not in values:
        return config_key
    values.pop(FOLD_PARAM)
    return json.dumps(values, sort_keys=True, default=str)


def logged_params(raw: dict[str, str]) -> dict[str, Any]:
    """A trial's MLflow params, parsed, with the names of older trials also under today's:
    `data.real_tumors` as `data.real_fraction` 1 / 0, and a range end logged as
    `synthesis.texture.hu_drop_min` also as `synthesis.texture.hu_drop.low`."""
    params = {name: parse_param(value) for name, value in raw.items()}
    if params.get("data.real_fraction") is None and "data.real_tumors" in params:
        params["data.real_fraction"] = 1.0 if params["data.real_tumors"] else 0.0
    for name in [name for name in params if name.endswith(tuple(LEGACY_RANGE_SUFFIXES))]:
        if (renamed := legacy_range_key(TrialConfig, name)) is not None:
            params.setdefault(renamed, params[name])
    return params


def _trial_record(run: Run, experiment: str, parent: Run, sweep: dict[str, Any]) -> dict[str, Any]:
    params = logged_params(run.data.params)
    swept = [name for name in sweep["swept"] if name != FOLD_PARAM]
    swept_values = {name: params.get(name) for name in swept}
    config_key = _without_fold(
        run.data.tags.get(tracking.CONFIG_KEY_TAG) or json.dumps(swept_values, sort_keys=True)
    )
    status = "RUNNING" if run.info.status == "SCHEDULED" else run.info.status
    if status == "RUNNING" and sweep["stale"]:
        status = "STALE"
    record = {
        "experiment": experiment,
        "parent_run_id": parent.info.run_id,
        "run_id": run.info.run_id,
        "status": status,
        "error": run.data.tags.get(tracking.ERROR_TAG),
        "backbone": run.data.tags.get(tracking.BACKBONE_TAG) or params.get("model.name"),
        "eval_set": run.data.tags.get(tracking.EVAL_SET_TAG),
        "config_key": config_key,
        "seed": params.get(tracking.SEED_PARAM),
        "fold": params.get(FOLD_PARAM),
        "folds": params.get(FOLDS_PARAM),
        "published_column": run.data.tags.get(tracking.PUBLISHED_COLUMN_TAG),
        "swept": json.dumps(swept),
        "baseline": sweep["baseline"],
        "data_warnings": json.dumps(sweep["data_warnings"]),
        "overrides": json.dumps([name for name in OVERRIDE_PARAMS if params.get(name) is True]),
        "deviations": json.dumps(protocol_deviations(params, swept, sweep["preset"])),
        "train_pool": json.dumps(training_pool(params)),
        "metrics": dict(run.data.metrics),
    }
    kept = dict.fromkeys([*swept, *_KEPT_PARAMS, *reference_param_names()])
    record.update({name: params.get(name) for name in kept})
    if record[PROTOCOL_PARAM] is None:  # trials from before the protocol param
        record[PROTOCOL_PARAM] = DEFAULT_PROTOCOL
    if record[SPHERE_MODE_PARAM] is None:  # trials from before the sphere reading was a param
        record[SPHERE_MODE_PARAM] = "replace"
    return record


def load_runs(
    tracking_uri: str,
    experiments: str | list[str],
    all_sweeps: bool = False,
    parent_run_id: str | None = None,
) -> pd.DataFrame:
    """Tidy table of trials: one row per trial x metric, with status, tags, seed and params.

    `experiments` is a name, a comma-separated string of names or a list. By default only the
    latest sweep (parent run) of each experiment counts; `all_sweeps` pools every sweep, and
    `parent_run_id` picks one. Every trial gets a row for each of `FINAL_METRICS` (value NaN
    when missing, e.g. failed or unfinished trials) plus one per other metric it logged
    (latest value). Columns: experiment, parent_run_id, run_id, status (MLflow's FINISHED,
    FAILED, KILLED, RUNNING, or STALE), error, backbone, eval_set, config_key, seed, label,
    fold and folds (None without cross-validation), published_column (JSON [table, label]
    named by an evaluated released checkpoint, else None),
    metric, value, swept, baseline, data_warnings (JSON list, the sweep's), overrides (JSON
    list of `OVERRIDE_PARAMS` set true), deviations (JSON list of `name=value` where the trial
    left its study's published preset, `protocol_deviations`), train_pool (JSON {source:
    {arm: cases}} of its `train_pool.*` params, {} where it logged none), then the params
    (`eval.protocol` "tumorsweep" and `synthesis.sphere_mode` "replace" where none was logged).
    """
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    names = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if not names:
        raise TumorsweepError("no experiment named: give one or more experiment names")
    with reading(tracking_uri) as client:
        records = _records(client, tracking_uri, names, all_sweeps, parent_run_id)
    trials = pd.DataFrame.from_records(records)
    trials.insert(trials.columns.get_loc("config_key") + 2, "label", trial_labels(trials))
    return _one_row_per_metric(trials)


def _records(
    client: MlflowClient,
    tracking_uri: str,
    names: list[str],
    all_sweeps: bool,
    parent_run_id: str | None,
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for name in names:
        experiment_id = _experiment_id(client, name, tracking_uri)
        parents = _parent_runs(client, name, experiment_id, parent_run_id, all_sweeps)
        found = 0
        for parent in parents:
            sweep = _sweep_facts(parent, name)
            trials = _search_all(
                client, experiment_id, f"tags.`{tracking.PARENT_TAG}` = '{parent.info.run_id}'"
            )
            trials = [t for t in trials if t.data.tags.get(tracking.ROLE_TAG, "trial") == "trial"]
            records.extend(_trial_record(t, name, parent, sweep) for t in trials)
            found += len(trials)
        if not found:
            raise TumorsweepError(
                f"experiment {name!r} is empty: "
                f"its sweep run {parents[0].info.run_id} has no trials"
            )
    return records


def _one_row_per_metric(trials: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for trial in trials.to_dict("records"):
        metrics = trial.pop("metrics")
        names = list(FINAL_METRICS) + sorted(set(metrics) - set(FINAL_METRICS))
        for name in names:
            rows.append({**trial, "metric": name, "value": metrics.get(name, math.nan)})
    tidy = pd.DataFrame.from_records(rows)
    front = [c for c in tidy.columns if c not in ("metric", "value")]
    at = front.index("label") + 1
    order = front[:at] + ["metric", "value"] + front[at:]
    tidy = tidy[order]
    tidy["value"] = tidy["value"].astype(float)
    return tidy


def param_columns(runs: pd.DataFrame) -> list[str]:
    """The param columns of a `load_runs` table (dotted config names)."""
    return list(runs.columns[runs.columns.get_loc("baseline") + 1 :])


def load_per_case(tracking_uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-case values of finished trials (`read_per_case` without the list of what is
    missing): columns experiment, label, run_id, seed, fold, case, metric, value."""
    return read_per_case(tracking_uri, runs)[0]


def read_per_case(
    tracking_uri: str, runs: pd.DataFrame, artifact_root: str | Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-case values of finished trials from each one's `per_case_test.csv` artifact, and the
    finished trials whose artifact was not found.

    A local store records absolute artifact paths; an `mlflow.db` copied or moved without its
    artifact folder points at nothing. So a run's artifacts are looked for where the run says,
    then in `mlartifacts/` beside the SQLite file (where `tumorsweep` puts them), or only in
    `artifact_root` when given (a moved artifact folder); under a root, as
    `<experiment id>/<run id>/artifacts` or `<run id>/artifacts`.

    Returns (values, missing): values with columns experiment, label, run_id, seed, fold,
    case, metric, value (one row per trial x case x metric); missing with `MISSING_COLUMNS`,
    one row per finished trial without the table (where it was looked for). A malformed CSV
    raises naming the run and file.
    """
    finished = runs[runs["status"] == "FINISHED"].drop_duplicates("run_id")
    frames, missing = [], []
    with tempfile.TemporaryDirectory() as tmp, reading(tracking_uri) as client:
        for trial in finished.itertuples(index=False):
            info = client.get_run(trial.run_id).info
            places = _artifact_dirs(tracking_uri, info, artifact_root)
            if places is None:  # a server or remote artifact store: MLflow fetches it
                listed = {a.path for a in client.list_artifacts(trial.run_id)}
                path = None
                if PER_CASE_ARTIFACT in listed:
                    path = Path(client.download_artifacts(trial.run_id, PER_CASE_ARTIFACT, tmp))
                places = [info.artifact_uri]
            else:
                found = [p / PER_CASE_ARTIFACT for p in places if (p / PER_CASE_ARTIFACT).is_file()]
                path = found[0] if found else None
            if path is None:
                looked = " and ".join(str(p) for p in places)
                missing.append([trial.experiment, trial.label, trial.run_id, PER_CASE_ARTIFACT,
                                looked])  # fmt: skip
                continue
            frames.append(_read_per_case(path, trial))
    missing_table = pd.DataFrame(missing, columns=MISSING_COLUMNS)
    if not frames:
        return pd.DataFrame(columns=PER_CASE_COLUMNS), missing_table
    return pd.concat(frames, ignore_index=True)[PER_CASE_COLUMNS], missing_table


def _local_dir(uri: str) -> Path | None:
    """The folder a local artifact URI names (None for servers and remote stores)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:
        return Path(uri)
    return None


def _artifact_dirs(
    tracking_uri: str, info: Any, artifact_root: str | Path | None
) -> list[Path] | None:
    """Local folders where a run's artifacts may be, in order (None: not a local store)."""
    if artifact_root is not None:
        return _under(Path(artifact_root), info)
    recorded = _local_dir(info.artifact_uri)
    if recorded is None:
        return None
    beside = tracking.local_artifact_root(tracking_uri)
    if beside is None:
        return [recorded]
    return [recorded, *(p for p in _under(_local_dir(beside), info) if p != recorded)]


def _under(root: Path, info: Any) -> list[Path]:
    """A run's artifact folder under an artifact root: `<experiment id>/<run id>/artifacts`
    (MLflow's default layout) or `<run id>/artifacts` (a root that is the experiment's own
    location, as `tumorsweep` creates it)."""
    return [
        root / info.experiment_id / info.run_id / "artifacts",
        root / info.run_id / "artifacts",
    ]


def missing_lines(missing: pd.DataFrame) -> list[str]:
    """One line per trial whose per-case table was not found: which artifact, where looked."""
    return [
        f"{row.experiment}, {row.label}, run {row.run_id}: {row.artifact} not found "
        f"(looked in {row.looked_in}); no interval or paired test for this column "
        "(--artifact-root DIR if the artifact folder moved)"
        for row in missing.itertuples(index=False)
    ]


def _read_per_case(path: Path, trial: Any) -> pd.DataFrame:
    where = f"experiment {trial.experiment!r}, run {trial.run_id}, artifact {PER_CASE_ARTIFACT}"
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TumorsweepError(f"{where}: not a readable CSV ({exc})") from exc
    present = [m for m in PER_CASE_METRICS if m in table.columns]
    if "case" not in table.columns or not present:
        raise TumorsweepError(
            f"{where}: needs a 'case' column and at least one of {list(PER_CASE_METRICS)}; "
            f"has {list(table.columns)}"
        )
    long = table.melt(id_vars="case", value_vars=present, var_name="metric", value_name="value")
    try:
        long["value"] = pd.to_numeric(long["value"])
    except (ValueError, TypeError) as exc:
        raise TumorsweepError(f"{where}: non-numeric metric value ({exc})") from exc
    long["case"] = long["case"].astype(str)
    long["experiment"] = trial.experiment
    long["label"] = trial.label
    long["run_id"] = trial.run_id
    long["seed"] = trial.seed
    long["fold"] = trial.fold
    return long


def studies_in_store(tracking_uri: str) -> list[str]:
    """Names of the experiments that hold at least one sweep run, oldest first: what
    `tumorsweep report` reports when no experiment is named."""
    with reading(tracking_uri) as client:
        names = []
        for experiment in sorted(client.search_experiments(), key=lambda e: e.creation_time or 0):
            sweep = f"tags.`{tracking.ROLE_TAG}` = 'sweep'"
            if client.search_runs([experiment.experiment_id], sweep, max_results=1):
                names.append(experiment.name)
    return names
