"""Shared fixtures: a tiny phantom dataset written once per session (real NIfTI files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine small phantom CTs at 2 mm: healthy and tumour cases, MSD layout."""
    from core.data import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(
        root, cases=9, seed=3, shape=(64, 64, 48), spacing=(2.0, 2.0, 2.0), tumor_cases=5
    )
    return root
