"""What a sweep's driver is told (`SweepOptions`) and what every trial shares
(`TrialContext`, sent once through Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tumorsweep.data.cases import CaseLists


@dataclass
class SweepOptions:
    """Where and how a study runs (the shared flags of every `sweeps/*.py`)."""

    preset: str = "demo"
    overrides: dict[str, Any] = field(default_factory=dict)
    address: str | None = None
    tracking_uri: str = ""
    experiment: str = ""
    storage: str = ""
    workers_per_trial: int = 1
    gpus_per_trial: int = 0
    cpus_per_worker: int = 1
    max_concurrent: int = 0
    seeds: int = 0
    resume: bool = False
    max_failures: int = 1
    verbose: bool = False


@dataclass
class TrialContext:
    """Everything a trial needs that is the same for the whole sweep (sent once via Ray)."""

    base: dict[str, Any]
    cases_by_fold: dict[int | None, CaseLists]  # key None without cross-validation
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    swept: list[str]
    storage: str
    workers: int
    use_gpu: bool
    resources_per_worker: dict[str, float]
    max_failures: int
    first_seed: int = 0

    def folds(self) -> int | None:
        """The number of cross-validation folds the trials sweep (None without, or when the
        base config fixes one fold with data.fold)."""
        return None if len(self.cases_by_fold) < 2 else len(self.cases_by_fold)
