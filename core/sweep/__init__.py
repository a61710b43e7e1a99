"""Run a study: Ray Tune over trials, each trial one MLflow run; multi-worker trials are Ray
Train (DDP) runs.

One room per job:

- `driver`: `run_sweep`, the driver of one study (parent run, state, Tuner, summary);
- `options`: what the driver is told (`SweepOptions`) and what every trial shares
  (`TrialContext`);
- `tuner`: the Tune wiring (searcher, scheduler, trial resources, how many trials fit);
- `trial`: the trial body (`run_trial`, the TorchTrainer of a multi-worker trial);
- `state`: the files `--resume` finds an interrupted sweep by;
- `registry`: registering the best trial in the MLflow Model Registry;
- `stop`: SIGTERM and the runs an interrupted sweep leaves open.

Connecting to Ray is `tumorsweep.ray_cluster` (shared with the generator job).
"""

from __future__ import annotations

from tumorsweep.sweep.driver import run_sweep
from tumorsweep.sweep.options import SweepOptions, TrialContext
from tumorsweep.sweep.registry import check_registrable, register_best
from tumorsweep.sweep.state import STATE_FILE, safe_name
from tumorsweep.sweep.trial import run_trial

__all__ = [
    "STATE_FILE",
    "SweepOptions",
    "TrialContext",
    "check_registrable",
    "register_best",
    "run_sweep",
    "run_trial",
    "safe_name",
]
