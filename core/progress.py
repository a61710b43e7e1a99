"""What a sweep shows on the console: one line per trial event and a compact progress line.

Ray Tune's own output (status boxes of internal counters, a per-trial configuration box, its
TensorBoard hint) stays behind `--verbose`. By default a researcher sees, per trial event,
the trial's name as MLflow shows it (`sphere_ratio=0.05 s0`), its headline test metrics with
3 decimals or its failure reason, and a progress line: trials done / running / pending /
failed, the best so far on the study's search metric, elapsed time and an estimate of the
time left (the mean duration of the finished trials times the trials still to run, divided by
the trials running at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

HEADLINE = ("tumor_dice", "tumor_nsd", "liver_dice")


def trial_name(overrides: Mapping[str, Any], swept: list[str], seed: int, fold: int | None) -> str:
    """A trial's name from its configuration: each swept field as `name=value` (the last part
    of the dotted name; the backbone as its own name), then `s<seed>` and `f<fold>`."""
    parts = []
    for field in swept:
        if field in ("seed", "data.fold") or field not in overrides:
            continue
        value = overrides[field]
        parts.append(str(value) if field == "model.name" else f"{field.split('.')[-1]}={value}")
    parts.append(f"s{seed}")
    if fold is not None:
        parts.append(f"f{fold}")
    return " ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Counts trial events and renders the console lines (no Ray needed: the Tune callback
    below feeds it, and tests drive it directly).

    Args:
        total: trials the sweep will run (grid rows x seeds x folds, or Optuna's samples).
        metric: the study's search metric (a validation metric), `mode` "max" or "min".
        concurrent: trials that run at once (for the time estimate).
        clock: the time in seconds (`time.time` by default: a resumed sweep's callback is
            unpickled in a new process, where only wall time still means something).
    """

    def __init__(
        self,
        total: int,
        metric: str,
        mode: str,
        concurrent: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.total, self.metric, self.mode = total, metric, mode
        self.concurrent = max(1, concurrent)
        self.clock = clock
        self.start = clock()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.failed = 0
        self.best: tuple[float, str] | None = None

    def on_start(self, key: str, name: str) -> str:
        self.started.setdefault(key, self.clock())
        return f"[tumorsweep] {name}: started"

    def on_complete(self, key: str, name: str, result: Mapping[str, Any]) -> str:
        self._finish(key)
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            better = self.best is None or (
                value > self.best[0] if self.mode == "max" else value < self.best[0]
            )
            if better:
                self.best = (float(value), name)
        shown = ", ".join(
            f"{m} {result[m]:.3f}" for m in HEADLINE if isinstance(result.get(m), (int, float))
        )
        return f"[tumorsweep] {name}: finished, {shown or 'no metrics'}"

    def on_error(self, key: str, name: str, reason: str) -> str:
        self._finish(key)
        self.failed += 1
        return f"[tumorsweep] {name}: FAILED: {reason or 'see the Ray logs (--verbose)'}"

    def _finish(self, key: str) -> None:
        began = self.started.pop(key, None)
        if began is not None:
            self.durations.append(self.clock() - began)

    def line(self) -> str:
        """trials done / running / pending / failed, best so far, elapsed and time left."""
        done = len(self.durations)
        running = len(self.started)
        pending = max(0, self.total - done - running)
        elapsed = self.clock() - self.start
        text = (
            f"[tumorsweep] {done - self.failed}/{self.total} done, {running} running, "
            f"{pending} pending, {self.failed} failed"
        )
        if self.best is not None:
            text += f"; best {self.metric} {self.best[0]:.3f} ({self.best[1]})"
        text += f"; {_clock(elapsed)} elapsed"
        if self.durations and (running or pending):
            mean = sum(self.durations) / len(self.durations)
            waves = (pending + running) / min(self.concurrent, pending + running)
            text += f", ~{_clock(mean * waves)} left"
        return text


def tune_callback(
    progress: Progress,
    name_of: Callable[[Any], str],
    on_finished: Callable[[Any], None],
    error_of: Callable[[Any], str],
    heartbeat_s: float = 300.0,
):
    """A Ray Tune callback printing `progress`'s lines for each trial event, and the progress
    line every `heartbeat_s` seconds while trials run. `name_of(trial)` names a trial;
    `on_finished(trial)` and `error_of(trial)` reach MLflow (the sweep's safety net that
    closes a trial's run, and the reason a failed trial recorded)."""
    from ray import tune

    last = [progress.clock()]

    def say(*lines: str) -> None:
        last[0] = progress.clock()
        print(*lines, sep="\n", flush=True)

    class SweepProgress(tune.Callback):
        def on_step(self, iteration, trials, **info) -> None:
            if progress.started and progress.clock() - last[0] >= heartbeat_s:
                say(progress.line())

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            say(progress.on_start(trial.trial_id, name_of(trial)))

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            result = trial.last_result or {}
            say(progress.on_complete(trial.trial_id, name_of(trial), result), progress.line())
            on_finished(trial)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            reason = error_of(trial)
            say(progress.on_error(trial.trial_id, name_of(trial), reason), progress.line())

    return SweepProgress()
