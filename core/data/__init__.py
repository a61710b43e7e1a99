"""Data layer: dataset layouts and named splits, case lists, NIfTI reading, MONAI transform
chains, the phantom CT generator and check-data.

Everything loads on first use (PEP 562), so importing one piece (say `tumorsweep.data.config` in a
Ray worker) does not import MONAI, torch or nibabel for the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CaseEntry": "tumorsweep.data.cases",
    "CaseLists": "tumorsweep.data.cases",
    "resolve_cases": "tumorsweep.data.cases",
    "DataConfig": "tumorsweep.data.config",
    "DatasetSplit": "tumorsweep.data.layouts",
    "load_split": "tumorsweep.data.layouts",
    "load_pair": "tumorsweep.data.io",
    "load_volume": "tumorsweep.data.io",
    "make_phantom_case": "tumorsweep.data.phantom",
    "write_phantom_dataset": "tumorsweep.data.phantom",
    "NAMED_SPLITS": "tumorsweep.data.splits",
    "train_transforms": "tumorsweep.data.transforms",
    "eval_transforms": "tumorsweep.data.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tumorsweep.data' has no attribute {name!r}")
