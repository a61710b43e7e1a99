"""How a sweep stops: SIGTERM (from `timeout`, systemd or a scheduler, often to the whole
process group) stops Tune the way Ctrl-C does and closes every open run as KILLED, and the
runs Tune left open after an interruption are closed."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tumorsweep.tracking import RunStore

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
def stop_on_sigterm(close_runs) -> Iterator[_Stop]:
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


def close_unfinished(store: RunStore, experiment_id: str, parent_run_id: str) -> int:
    """Mark trial runs Tune left running (an interrupted sweep) KILLED; returns how many."""
    running = store.running_trials(experiment_id, parent_run_id)
    for run_id in running:
        store.finish_run(run_id, status="KILLED", error="sweep interrupted (resume with --resume)")
    return len(running)
