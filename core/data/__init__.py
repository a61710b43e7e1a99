"""Data layer: phantom CT generator, dataset layouts and named splits, MONAI transform chains.

The transform chains import MONAI and torch, so they load on first use only: importing
`core.data` for the phantom or a study stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.data.folds import Study, load_study
from core.data.io import load_pair, load_volume
from core.data.phantom import make_phantom_case, write_phantom_dataset
from core.data.splits import NAMED_SPLITS

if TYPE_CHECKING:
    from core.data.transforms import eval_transforms, train_transforms

_LAZY = {"train_transforms", "eval_transforms"}

__all__ = [
    "NAMED_SPLITS",
    "Study",
    "eval_transforms",
    "load_pair",
    "load_study",
    "load_volume",
    "make_phantom_case",
    "train_transforms",
    "write_phantom_dataset",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from core.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'core.data' has no attribute {name!r}")
