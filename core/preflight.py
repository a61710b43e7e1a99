"""Everything a sweep refuses before Ray starts, dry runs included: bad resources, a tracking
store that would be created in the wrong place or hang, an unreachable cluster, broken case
files and trials that cannot run on the study's cases. Each refusal is one `TumorsweepError`
naming the flag, field or file.

This module is the one entry a study calls: the per-trial checks it runs are
`tumorsweep.train.check_trial` (also run by the trainer itself, so a trial built outside a
study is refused the same way), which calls `tumorsweep.difftumor.trial.check_generator` for
a DiffTumor trial; those stay beside the code they guard (the trainer's layer cannot import
this one)."""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from tumorsweep.config import TrialConfig
from tumorsweep.data.cases import CaseLists, cache_dir
from tumorsweep.errors import TumorsweepError
from tumorsweep.outputs import probe_folder
from tumorsweep.stores import check_mlflow_sqlite, check_not_file_store

CONNECT_TIMEOUT_S = 5.0


def check_resources(
    workers: int, cpus_per_worker: int, gpus_per_trial: int, seeds: int, max_concurrent: int,
    address: str | None,
) -> None:  # fmt: skip
    """Flag values that cannot describe a trial, and trials larger than this machine when the
    sweep will start a local Ray (a cluster's size is checked once Ray is up)."""
    for flag, value, low in (
        ("--workers-per-trial", workers, 1),
        ("--cpus-per-worker", cpus_per_worker, 1),
        ("--gpus-per-worker", gpus_per_trial, 0),
        ("--seeds", seeds, 0),
        ("--max-concurrent", max_concurrent, 0),
    ):
        if value < low:
            raise TumorsweepError(f"{flag} {value}: must be >= {low}")
    if address is not None:
        return
    cores = os.cpu_count() or 1
    if workers * cpus_per_worker > cores:
        raise TumorsweepError(
            f"--workers-per-trial {workers} x --cpus-per-worker {cpus_per_worker} = "
            f"{workers * cpus_per_worker} CPUs per trial, but this machine has {cores}; lower "
            "them or run on a cluster (--address)"
        )
    if gpus_per_trial:
        import torch

        have = torch.cuda.device_count()
        if workers * gpus_per_trial > have:
            raise TumorsweepError(
                f"--gpus-per-worker {gpus_per_trial} x {workers} worker(s) needs "
                f"{workers * gpus_per_trial} GPUs, this machine has {have}"
            )


def check_tracking_uri(uri: str) -> None:
    """A local store must sit in an existing folder that takes files (never created silently
    elsewhere) and, if the file exists, be an MLflow store (never another application's
    database or an empty file that MLflow would fill with its tables); a plain folder (MLflow's
    retired file store) is refused; a server must answer within a few seconds."""
    parsed = urllib.parse.urlparse(uri)
    if not uri.strip():
        raise TumorsweepError("--tracking-uri is empty")
    if parsed.scheme in ("sqlite", "file", "") or len(parsed.scheme) == 1:
        path = Path(uri[len("sqlite:///") :] if parsed.scheme == "sqlite" else parsed.path or uri)
        what = f"--tracking-uri {uri}"
        if parsed.scheme != "sqlite":
            if path.is_file():
                raise TumorsweepError(
                    f"{what}: {path} is a file; an SQLite store is sqlite:///{path}"
                )
            check_not_file_store(path, what)
        if path.name in ("", ":memory:"):
            raise TumorsweepError(f"{what}: an in-memory store keeps nothing; name a file")
        if not path.parent.is_dir():
            raise TumorsweepError(
                f"{what}: folder {path.parent} does not exist (create it first; "
                "tumorsweep does not create MLflow stores in new places)"
            )
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise TumorsweepError(f"{what}: {path} is not a regular file")
            check_mlflow_sqlite(path, what)
            if not os.access(path, os.R_OK | os.W_OK):
                raise TumorsweepError(f"{what}: {path} is not writable")
        probe_folder(path.parent, what)  # SQLite writes its journal beside the database
    elif parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        _probe(parsed.hostname or "localhost", port, f"--tracking-uri {uri}")


def check_address(address: str | None) -> None:
    """A Ray address HOST:PORT must accept a connection within a few seconds ("auto" and
    ray:// addresses are left to Ray)."""
    if address is None or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise TumorsweepError(f"--address {address!r}: expected HOST:PORT, 'auto' or ray://...")
    _probe(host, int(port), f"--address {address}")


def _probe(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except OSError as exc:
        raise TumorsweepError(
            f"{what}: nothing answers at {host}:{port} within {CONNECT_TIMEOUT_S:g} s ({exc})"
        ) from None


def check_data(cases: CaseLists) -> list[str]:
    """Read every case once (cached by file content) and refuse the first class of problem;
    returns the warnings (intensities that do not look like HU)."""
    from tumorsweep.data.check import check_entries, raise_first_problem

    lists = (
        ("train", cases.train + cases.train_tumor),
        ("validation", cases.validation),
        ("test", cases.test),
    )
    check = check_entries(lists, cache=cache_dir() / "checks")
    raise_first_problem(check)
    return check.warnings


def check_trials(configs: Iterable[TrialConfig], cases: CaseLists) -> None:
    """Every trial configuration can run on the study's cases (training arm, files, GMM)."""
    from tumorsweep.train import check_trial

    for cfg in configs:
        check_trial(cfg, cases)


def check_resume(storage: str, tracking_uri: str, experiment: str) -> None:
    """`--resume`: the storage holds an interrupted sweep of `experiment` and the tracking
    store holds that sweep's parent run in that experiment, checked (read-only) before Ray
    starts or anything is written; a store that is not the one the sweep used is refused."""
    import json

    from tumorsweep.sweep.state import STATE_FILE, safe_name

    if "://" in storage:
        return  # cloud storage: Tune's own restore checks it
    latest = Path(storage) / f"{safe_name(experiment)}.latest"
    if not latest.is_file():
        raise TumorsweepError(f"--resume: no earlier sweep of {experiment!r} under {storage}")
    sweep_name = latest.read_text().strip()
    state_file = Path(storage) / sweep_name / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        parent = str(state["parent_run_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TumorsweepError(
            f"--resume: {state_file}: not a readable sweep state ({exc})"
        ) from None
    if state.get("experiment", experiment) != experiment:
        raise TumorsweepError(
            f"--resume: {state_file} belongs to experiment {state.get('experiment')!r}, "
            f"not {experiment!r}"
        )
    found = _run_experiment(tracking_uri, parent)
    if found != experiment:
        where = "is not in it" if found is None else f"belongs to experiment {found!r}"
        raise TumorsweepError(
            f"--resume: --tracking-uri {tracking_uri} is not the store of sweep {sweep_name} "
            f"(its parent run {parent} {where}); give the --tracking-uri the sweep used"
        )


def _run_experiment(tracking_uri: str, run_id: str) -> str | None:
    """The experiment name of run `run_id` in the store (None if absent), read-only."""
    import sqlite3
    from urllib.parse import quote

    if tracking_uri.startswith("sqlite:"):
        path = Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0])
        if not path.is_file():
            return None
        connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            row = connection.execute(
                "SELECT e.name FROM runs r JOIN experiments e "
                "ON r.experiment_id = e.experiment_id WHERE r.run_uuid = ?",
                (run_id,),
            ).fetchone()
        except sqlite3.Error:
            return None
        finally:
            connection.close()
        return None if row is None else str(row[0])
    from tumorsweep.tracking import RunStore

    return RunStore(tracking_uri).experiment_of(run_id)
