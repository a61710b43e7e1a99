"""Shared checks of the refusal tests: one line on stderr naming what was refused, and the
content hashes of a folder (inputs must be byte-identical after a refusal)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with its content hash (symbolic links not followed)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def one_line(capsys: pytest.CaptureFixture, *needles: str) -> str:
    """The captured stderr: one line, no traceback, holding every one of `needles`."""
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err
