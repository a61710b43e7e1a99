"""Fault injection for the fault-tolerance tests, kept out of the production code.

A test puts this folder on PYTHONPATH and sets TUMORSWEEP_FAULT_AT_EPOCH=k for a sweep it
starts as a subprocess; every Python process of that sweep (the driver, Ray's Tune and Train
workers, which inherit the environment) runs this file at start-up. When `tumorsweep.train` is
imported, its Ray sessions are replaced by subclasses whose chief exits hard right after
reporting epoch k, once per Ray node (a marker file named by the raylet, the parent of every
worker), as a lost node would.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

EPOCH = os.environ.get("TUMORSWEEP_FAULT_AT_EPOCH")


def _faulty(session_class: type) -> type:
    class Faulty(session_class):
        def report(self, metrics, checkpoint=None):  # noqa: ANN001, ANN202
            super().report(metrics, checkpoint)
            marker = Path(tempfile.gettempdir()) / f"tumorsweep-fault-{os.getppid()}-{EPOCH}"
            due = metrics.get("epoch") == int(EPOCH) and "train_loss" in metrics
            if due and self.world_rank == 0 and not marker.exists():
                marker.touch()
                time.sleep(0.5)  # let the report reach the controller
                os._exit(17)

    return Faulty


class _PatchTrainOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name != "tumorsweep.train":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            execute(module)
            module.RaySession = _faulty(module.RaySession)
            module.TuneSession = _faulty(module.TuneSession)

        spec.loader.exec_module = exec_module
        return spec


if EPOCH:
    sys.meta_path.insert(0, _PatchTrainOnImport())
