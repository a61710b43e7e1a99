"""Data layer: dataset layouts and named splits, case lists, NIfTI reading, MONAI transform
chains, the phantom CT generator and check-data.

Everything loads on first use (PEP 562), so importing one piece (say `core.data.config` in a
Ray worker) does not import MONAI, torch or nibabel for the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CaseEntry": "core.data.cases",
    "CaseLists": "core.data.cases",
    "resolve_cases": "core.data.cases",
    "DataConfig": "core.data.config",
    "DatasetSplit": "core.data.layouts",
    "load_split": "core.data.layouts",
    "load_pair": "core.data.io",
    "load_volume": "core.data.io",
    "make_phantom_case": "core.data.phantom",
    "write_phantom_dataset": "core.data.phantom",
    "NAMED_SPLITS": "core.data.splits",
    "train_transforms": "core.data.transforms",
    "eval_transforms": "core.data.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'core.data' has no attribute {name!r}")
