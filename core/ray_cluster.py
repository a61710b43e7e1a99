"""Where a sweep or a generator job runs: join a Ray cluster, or start a local one that stops
with its driver.

One module connects to Ray for every command that needs it (a study's sweep, `tumorsweep
train-generator`), so each gets the same local cluster (dashboard on loopback for Ray Train's
placement-group cleaner, workers' output in Ray's log files unless verbose, the watchdog that
stops it if the driver dies, even by SIGKILL) and the same one-line refusal when an address
does not answer.
"""

from __future__ import annotations

import logging
import os

from tumorsweep.errors import TumorsweepError

# A multi-worker trial's driver (the Tune function trainable) holds 0.01 CPU while its
# TorchTrainer's workers hold whole CPUs; one logical CPU is kept for those drivers so that N
# trials of c CPUs fit on N*c cores (a local Ray then gets one extra logical CPU). A one-worker
# trial trains in its Tune actor, which holds the worker's resources itself: no reserve.
DRIVER_RESERVE_CPU = 1


def driver_reserve(workers_per_trial: int) -> int:
    """Logical CPUs kept for trial drivers (see DRIVER_RESERVE_CPU)."""
    return DRIVER_RESERVE_CPU if workers_per_trial > 1 else 0


def start_local_ray(
    num_cpus: int | None = None,
    reserve: int = DRIVER_RESERVE_CPU,
    verbose: bool = False,
    worker_output: bool | None = None,
) -> None:
    """A local Ray sized for this machine, plus `reserve` logical CPUs for trial drivers;
    a watchdog stops it if this driver dies without stopping it (SIGKILL). Workers' output
    goes to Ray's log files unless `worker_output` (default: `verbose`, which also shows
    Ray's own INFO logs)."""
    import ray

    from tumorsweep import ray_watchdog

    cores = num_cpus or os.cpu_count() or 1
    if not verbose:  # the local cluster's default, not news: only the opt-out warning stays
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            lambda record: not record.getMessage().startswith("Token authentication is enabled")
        )
    # The dashboard serves Ray's state API, which Ray Train's placement-group cleaner needs:
    # without it every finished trial leaks its workers' CPUs and later trials never start.
    context = ray.init(
        num_cpus=cores + reserve,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=verbose if worker_output is None else worker_output,
        logging_level=logging.INFO if verbose else logging.WARNING,
    )
    ray_watchdog.start(os.getpid(), context.address_info["session_dir"])


def connect_ray(
    address: str | None, reserve: int, verbose: bool = False, worker_output: bool | None = None
) -> None:
    """Join the cluster at `address`, or start a local Ray (unless one is up already)."""
    import ray

    if ray.is_initialized():
        return
    if not address:
        start_local_ray(reserve=reserve, verbose=verbose, worker_output=worker_output)
        return
    try:
        ray.init(
            address=address,
            log_to_driver=verbose if worker_output is None else worker_output,
            logging_level=logging.INFO if verbose else logging.WARNING,
        )
    except (ConnectionError, RuntimeError) as exc:
        raise TumorsweepError(f"--address {address}: cannot join the Ray cluster ({exc})") from None
