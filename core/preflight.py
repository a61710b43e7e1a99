"""Everything a sweep refuses before Ray starts, dry runs included: bad resources, a tracking
store that would be created in the wrong place or hang, an unreachable cluster, broken case
files and trials that cannot run on the study's cases. Each refusal is one `TumorsweepError`
naming the flag, field or file."""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from tumorsweep.config import TrialConfig
from tumorsweep.data.cases import CaseLists, cache_dir
from tumorsweep.errors import TumorsweepError

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
        ("--gpus-per-trial", gpus_per_trial, 0),
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
                f"--gpus-per-trial {gpus_per_trial} x {workers} worker(s) needs "
                f"{workers * gpus_per_trial} GPUs, this machine has {have}"
            )


def check_tracking_uri(uri: str) -> None:
    """A local store must sit in an existing folder (never created silently elsewhere); a
    server must answer within a few seconds."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("sqlite", "file", ""):
        path = Path(uri[len("sqlite:///") :] if parsed.scheme == "sqlite" else parsed.path or uri)
        if not path.parent.is_dir():
            raise TumorsweepError(
                f"--tracking-uri {uri}: folder {path.parent} does not exist (create it first; "
                "tumorsweep does not create MLflow stores in new places)"
            )
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
