"""Make a local Ray cluster's lifetime follow the driver that started it.

A driver killed with SIGKILL cannot stop the Ray it started, and Ray's dashboard and
runtime-env agents outlive it (they ignore SIGTERM and are not in its process group). `start`
spawns this module as a small detached process that polls the driver; once it is gone, every
process of that Ray session is killed.

    python -m tumorsweep.ray_watchdog DRIVER_PID SESSION_DIR
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 1.0


def start(driver_pid: int, session_dir: str) -> subprocess.Popen:
    """Spawn the watchdog of `driver_pid`'s local Ray session (detached: a new session, so a
    kill of the driver's process group does not take it down too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tumorsweep.ray_watchdog", str(driver_pid), session_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def session_processes(session_dir: str) -> list:
    """Live processes (psutil) whose command line names the session folder."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(process.info.get("cmdline") or [])
        if process.pid != os.getpid() and session_dir in line:
            found.append(process)
    return found


def watch(driver_pid: int, session_dir: str) -> None:
    """Wait for the driver to exit, then kill what is left of its Ray session: every process
    seen below the driver while it lived (Ray's agents retitle themselves, so their command
    lines no longer name the session) and any process naming the session folder."""
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, psutil.Process] = {}
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        try:
            children = driver.children(recursive=True)
            seen.update((c.pid, c) for c in children if c.pid != os.getpid())
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    time.sleep(POLL_S)  # a driver that exits cleanly stops Ray itself; give it a moment
    left = [p for p in seen.values() if p.is_running()] + session_processes(session_dir)
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=10)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
