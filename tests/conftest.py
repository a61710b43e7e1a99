"""Shared fixtures: a tiny phantom dataset written once per session (real NIfTI files), a
local Ray (`ray_local`), a fresh MLflow store (`mlflow_uri`), a tiny trial config
(`tiny_config`, its overrides `TINY`), the MONAI 0.9 side environment (`monai09`).
Helpers a test imports live in modules of their own (notebook_util, refusals_util,
sources_util), never here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine small phantom CTs at 2 mm: healthy and tumour cases, MSD layout."""
    from tumorsweep.data import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(
        root, cases=9, seed=3, shape=(64, 64, 48), spacing=(2.0, 2.0, 2.0), tumor_cases=5
    )
    return root


# A demo trial small enough to build, train a step and evaluate in seconds on the 2 mm phantom
TINY = {
    "data.spacing": (2.0, 2.0, 2.0),
    "model.options": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
    "eval.roi": (32, 32, 32),
    "eval.overlap": 0.25,
}


@pytest.fixture(scope="session")
def tiny_config():
    """The demo preset with `TINY`: a small UNet at 2 mm, 32^3 evaluation windows."""
    from tumorsweep.config import make_config

    return make_config("demo", TINY)


@pytest.fixture()
def mlflow_uri(tmp_path: Path) -> str:
    """A fresh local SQLite MLflow store in this test's folder (created on first use)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs (plus the driver reserve) for the tests of one module, started
    the way a sweep starts it (`tumorsweep.ray_cluster`, watchdog included); yields its GCS
    address for commands that join it with `--address`."""
    import ray

    from tumorsweep.ray_cluster import start_local_ray

    start_local_ray(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def monai09():
    """The side environment with MONAI 0.9.0 + numpy 1.23 (what SyntheticTumors pins), built
    once per machine; `monai09.run("script.py", *args)` runs an oracle script there."""
    from oracles.env import SideEnv

    return SideEnv("monai090").ensure()
