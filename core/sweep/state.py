"""The files `--resume` finds an interrupted sweep by: the sweep folder's state file and the
experiment's `.latest` pointer, both under the storage folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tumorsweep.errors import TumorsweepError
from tumorsweep.tracking import RunStore

STATE_FILE = "tumorsweep_sweep.json"


def safe_name(name: str) -> str:
    """A name usable as one file name (sweep folders and state files are named after the
    experiment, which may hold '/' or '..')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "experiment"


def latest_file(storage: str, experiment: str) -> Path | None:
    """The experiment's `.latest` pointer (None for remote storage: nothing to resume from)."""
    return None if "://" in storage else Path(storage) / f"{safe_name(experiment)}.latest"


def write_sweep_state(storage: str, experiment: str, sweep_name: str, parent: str) -> None:
    """Where `--resume` finds this sweep: its folder's state file and the experiment's
    `.latest` pointer (both under the storage folder whatever the experiment is called)."""
    folder = Path(storage, sweep_name)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"parent_run_id": parent, "experiment": experiment}
    (folder / STATE_FILE).write_text(json.dumps(state))
    latest = latest_file(storage, experiment)
    if latest is not None:
        latest.write_text(sweep_name)


def resume_parent(store: RunStore, storage: str, experiment: str) -> tuple[str, str]:
    """The interrupted sweep's name and parent run, reopened under this driver."""
    latest = latest_file(storage, experiment)
    if latest is None or not latest.is_file():
        raise TumorsweepError(f"--resume: no earlier sweep of {experiment!r} under {storage}")
    sweep_name = latest.read_text().strip()
    state = json.loads((Path(storage) / sweep_name / STATE_FILE).read_text())
    parent_run_id = state["parent_run_id"]
    store.reopen_parent_run(parent_run_id)
    print(f"Resuming sweep {sweep_name} (MLflow parent run {parent_run_id})")
    return sweep_name, parent_run_id
