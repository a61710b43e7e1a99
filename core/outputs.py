"""Outputs checked before the work: a command that will write a file or folder probes that it
can, so a read-only folder, a full device or a path that is a device is refused in one line
before minutes of training or scoring, not as a traceback after them.

The probe is one small temporary file created, written, flushed and removed in the folder the
output goes to (never outside it). A write that still fails later (the disk filled meanwhile)
is turned into one line naming the path by `write_error` (and by the CLI's catch-all).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tumorsweep.errors import TumorsweepError

PROBE_BYTES = 4096  # enough to hit ENOSPC on a full device, small enough to be free


def _nearest_existing(path: Path) -> Path:
    return next((p for p in [path, *path.parents] if p.exists()), Path("."))


def probe_folder(folder: Path, flag: str) -> None:
    """Raise unless a file can be created, written and flushed in the existing `folder`."""
    try:
        handle, tmp = tempfile.mkstemp(prefix=".tumorsweep-probe-", dir=folder)
    except OSError as exc:
        raise TumorsweepError(
            f"{flag}: cannot write into {folder} ({exc.strerror or exc})"
        ) from None
    try:
        os.write(handle, b"\0" * PROBE_BYTES)
        os.fsync(handle)
    except OSError as exc:
        raise TumorsweepError(
            f"{flag}: cannot write into {folder} ({exc.strerror or exc})"
        ) from None
    finally:
        os.close(handle)
        os.unlink(tmp)


def check_output_folder(folder: str | Path, flag: str, new: bool = False) -> Path:
    """A folder the command writes into: an existing writable folder, or (missing) one whose
    nearest existing parent is a writable folder (created by the command later). `new`: the
    folder must not exist yet."""
    out = Path(folder)
    if out.exists() or out.is_symlink():
        if new:
            raise TumorsweepError(f"{flag} {out}: already exists; choose a new folder")
        if not out.is_dir():
            raise TumorsweepError(f"{flag} {out}: exists and is not a folder")
        probe_folder(out, f"{flag} {out}")
        return out
    parent = _nearest_existing(out.parent)
    if not parent.is_dir():
        raise TumorsweepError(f"{flag} {out}: {parent} is a file, not a folder")
    if parent == out.parent:
        probe_folder(parent, f"{flag} {out}")
    else:
        _access(parent, out, flag)
    return out


def _access(parent: Path, out: Path, flag: str) -> None:
    # a folder further up: creating a probe there would write outside the output folder
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TumorsweepError(f"{flag} {out}: cannot create it, {parent} is not writable")


def check_output_file(path: str | Path, flag: str) -> Path:
    """A file the command writes: absent or a regular file (never a folder or a device such
    as /dev/full), in a folder that exists and takes a probe file, or that can be created."""
    out = Path(path)
    if out.exists():
        if out.is_dir():
            raise TumorsweepError(f"{flag} {out}: is a folder; give the file to write")
        if not out.is_file():
            raise TumorsweepError(f"{flag} {out}: is not a regular file (a device or pipe?)")
    if out.is_symlink() and not out.exists():
        raise TumorsweepError(f"{flag} {out}: is a dangling or looping symbolic link")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists():
        if not parent.is_dir():
            raise TumorsweepError(f"{flag} {out}: {parent} is a file, not a folder")
        probe_folder(parent, f"{flag} {out}")
    else:
        above = _nearest_existing(parent)
        if not above.is_dir():
            raise TumorsweepError(f"{flag} {out}: {above} is a file, not a folder")
        _access(above, out, flag)
    return out


def write_error(path: str | Path, exc: OSError) -> TumorsweepError:
    """One line for a write that failed anyway (device full meanwhile, permissions changed)."""
    return TumorsweepError(f"cannot write {exc.filename or path}: {exc.strerror or exc}")


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created, removed at the end) or refuse at once:
    two commands writing the same output must not mix their files or train twice for one."""
    while True:
        handle = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            raise TumorsweepError(
                f"{what}: another tumorsweep command is writing it now (lock {lock_file})"
            ) from None
        # the holder before us may have removed the file after we opened it: lock the new one
        try:
            same = os.stat(lock_file).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(handle)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_file)
        os.close(handle)
