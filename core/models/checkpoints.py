"""Read network weights from a file without running code in it: ours and the publishers'.

Every file is opened with `torch.load(weights_only=True)`. The released checkpoints of Hu et
al. (SyntheticTumors `monai_trainer.py`, `save_checkpoint`) and DiffTumor (STEP3
`monai_trainer.py`, the same function) are `{'epoch', 'best_acc', 'state_dict', 'optimizer',
'scheduler'}` with `best_acc` a numpy scalar (the mean validation Dice, a float32 or float64),
pickled with numpy 1.x. Unpickling that scalar needs exactly `PUBLISHER_NUMPY_GLOBALS`:
numpy's `scalar` reconstructor (named `numpy.core.multiarray.scalar` by numpy 1.x files and
`numpy._core.multiarray.scalar` by numpy 2), `numpy.dtype` and the float32/float64 dtype
classes numpy 2 rebuilds a dtype as. Nothing else is allowed: a file holding any other
pickled object is refused. Optimizer and scheduler states are read (they are plain values)
but ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core.multiarray import scalar as _numpy_scalar

from tumorsweep.errors import TumorsweepError
from tumorsweep.weights import load_weights_only

PUBLISHER_NUMPY_GLOBALS: list[Any] = [
    (_numpy_scalar, "numpy.core.multiarray.scalar"),  # as numpy 1.x pickles it
    _numpy_scalar,  # as numpy 2 pickles it
    np.dtype,
    np.dtypes.Float32DType,
    np.dtypes.Float64DType,
]
# Where the weights sit in a checkpoint dict, in order of preference: our trainer's selected
# and latest weights (`state.pt`), then the publishers' `state_dict`.
WEIGHT_ENTRIES = ("best_weights", "model", "state_dict")


def load_file(path: str | Path) -> Any:
    """The unpickled content of a torch file, weights-only with the numpy scalars of the
    publishers' checkpoints allowed; anything else is a one-line error naming the file."""
    return load_weights_only(path, allowed=PUBLISHER_NUMPY_GLOBALS)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights in a file: a plain state dict, our trainer's checkpoint (its
    selected weights, else its latest) or a publisher's checkpoint (`state_dict`; a
    `module.` prefix of DataParallel is removed). Keys are as saved: `match_keys` maps
    published Swin names onto a model's."""
    file = Path(path)
    saved = load_file(file)
    if isinstance(saved, dict):
        for entry in WEIGHT_ENTRIES:
            if isinstance(saved.get(entry), dict) and saved[entry]:
                saved = saved[entry]
                break
    if (
        not isinstance(saved, dict)
        or not saved
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in saved.items())
    ):
        raise TumorsweepError(f"{file}: expected a state dict (parameter name -> tensor)")
    if all(key.startswith("module.") for key in saved):
        saved = {key.removeprefix("module."): value for key, value in saved.items()}
    return saved


def match_keys(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`state` with the published Swin-UNETR names (`mlp.fc1/fc2`, the unused final
    `swinViT.norm`) mapped onto a MONAI Swin-UNETR's when `model` has no such keys; any
    other state dict is returned unchanged."""
    own = model.state_dict()
    if all(key in own for key in state):
        return state
    from tumorsweep.models.swin import from_published_keys

    mapped = from_published_keys(state)
    return mapped if all(key in own for key in mapped) else state
