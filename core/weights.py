"""The one way tumorsweep reads a torch file: `torch.load(weights_only=True)`, with a refusal
that names the file and says why, in one line.

A file that holds pickled code (or any Python object other than tensors and plain values) is
refused and its code never runs. The refusal never repeats torch's advice to retry with
`weights_only=False`: that would run whatever the file holds.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tumorsweep.errors import TumorsweepError

# torch's weights-only refusal starts with this; everything after it is advice we never give.
_WEIGHTS_ONLY_FAILED = "Weights only load failed"


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>")


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a weights file's bytes (what a run records of a checkpoint and a
    generator folder checks its files by), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


class _Inert:
    """Stands in for any Python object a checkpoint pickles besides tensors and plain values
    (a Lightning checkpoint's hyper-parameters, loop states): built without running anything
    of the file, its state kept as data and never used."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")


def load_checkpoint_entry(
    path: str | Path, entries: Sequence[str | None], what: str = "", tries: int = 64
) -> Any:
    """One entry of a checkpoint that also pickles foreign objects (e.g. a Lightning
    checkpoint's `hyper_parameters`): weights-only loading where each object torch refuses is
    read as an inert placeholder, so no code of the file runs, and only the first of
    `entries` present is returned (None in `entries`: the whole file, when it is itself a dict
    of tensors). Failures are one `TumorsweepError` naming the file."""
    import torch

    file = Path(path)
    prefix = f"{what}: " if what else ""
    if not file.is_file():
        raise TumorsweepError(f"{prefix}{file}: file not found")
    stand_ins: list[tuple[Any, str]] = []
    for _ in range(tries):
        try:
            with torch.serialization.safe_globals(stand_ins):
                loaded = torch.load(file, map_location="cpu", weights_only=True)
            break
        except MemoryError:
            raise TumorsweepError(f"{prefix}{file}: not enough memory to load it") from None
        except Exception as exc:  # torch raises many types for foreign or damaged files
            text = " ".join(str(exc).split())
            found = _REFUSED_GLOBAL.search(text) or _UNSUPPORTED.search(text)
            name = found.group(1) if found else None
            if not name or any(name == known for _, known in stand_ins):
                raise TumorsweepError(f"{prefix}{file}: {refusal_reason(exc)}") from None
            stand_ins.append((_Inert, name))
    else:
        raise TumorsweepError(f"{prefix}{file}: pickles more than {tries} kinds of objects")
    if not isinstance(loaded, dict):
        raise TumorsweepError(f"{prefix}{file}: holds a {type(loaded).__name__}, not a dict")
    for entry in entries:
        if entry is None:
            return loaded
        if entry in loaded:
            return loaded[entry]
    names = ", ".join(repr(e) for e in entries if e is not None)
    raise TumorsweepError(
        f"{prefix}{file}: has no {names} entry (keys: {sorted(map(str, loaded))[:8]})"
    )
