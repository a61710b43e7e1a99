"""The one way tumorsweep reads a torch file: `torch.load(weights_only=True)`, with a refusal
that names the file and says why, in one line.

A file that holds pickled code (or any Python object other than tensors and plain values) is
refused and its code never runs. The refusal never repeats torch's advice to retry with
`weights_only=False`: that would run whatever the file holds.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tumorsweep.errors import TumorsweepError

# torch's weights-only refusal starts with this; everything after it is advice we never give.
_WEIGHTS_ONLY_FAILED = "Weights only load failed"


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>")


def refusal_reason(exc: BaseException) -> str:
    """Why torch could not load a file, in one line, without torch's `weights_only=False`
    advice; names the pickled object torch refused where it says."""
    text = " ".join(str(exc).split())
    if _WEIGHTS_ONLY_FAILED in text or "weights_only" in text:
        found = _UNSUPPORTED.search(text)
        what = f" (a {found.group(1) or found.group(2)} object)" if found else ""
        return (
            f"holds pickled code or Python objects other than tensors and plain values{what}; "
            "refused by weights-only loading (its code was not run)"
        )
    if isinstance(exc, (pickle.UnpicklingError, EOFError)) or "zip archive" in text:
        return f"not a PyTorch file, or truncated ({text[:160] or type(exc).__name__})"
    return text[:200] or type(exc).__name__


def load_weights_only(path: str | Path, what: str = "", allowed: Sequence[Any] = ()) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with exactly the extra globals in
    `allowed` (e.g. the numpy scalars of the publishers' checkpoints); any failure is one
    `TumorsweepError` naming the file (prefixed by `what`, e.g. a flag)."""
    import torch

    file = Path(path)
    prefix = f"{what}: " if what else ""
    if not file.is_file():
        raise TumorsweepError(f"{prefix}{file}: file not found")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(file, map_location="cpu", weights_only=True)
    except MemoryError:
        raise TumorsweepError(f"{prefix}{file}: not enough memory to load it") from None
    except Exception as exc:  # torch raises many types for foreign, damaged or unsafe files
        raise TumorsweepError(f"{prefix}{file}: {refusal_reason(exc)}") from None


_CHECKED: set[tuple[str, int, int]] = set()


def check_weights_file(path: str | Path, what: str = "") -> None:
    """Refuse (see `load_weights_only`) a file that would not load weights-only, before a
    sweep starts its workers; each file version is read once per process."""
    file = Path(path)
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED:
        load_weights_only(file, what)
        _CHECKED.add(key)
