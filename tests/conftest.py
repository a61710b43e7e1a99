"""Shared fixtures and oracles: a tiny phantom dataset written once per session (real NIfTI
files), the notebook runner, the report's bootstrap written from its documented draws."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
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


def execute_aggregate_notebook(
    tracking_uri: str, experiment: str, workdir: Path, **parameters: object
) -> list[dict]:
    """Run notebooks/aggregate.ipynb headless (papermill) with a kernel on this interpreter
    (more notebook `parameters` by keyword); returns every cell output."""
    import nbformat
    import papermill

    kernel = "tumorsweep-test"  # this interpreter, whatever kernels the machine has
    spec = workdir / "jupyter" / "kernels" / kernel
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": kernel}))
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(workdir / "jupyter")
    try:
        source = Path(__file__).parents[1] / "notebooks" / "aggregate.ipynb"
        assert "parameters" in nbformat.read(source, as_version=4).cells[0].metadata["tags"]
        executed = workdir / "aggregate.ipynb"
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters={"tracking_uri": tracking_uri, "experiment": experiment, **parameters},
            kernel_name=kernel,
            cwd=str(workdir),
            progress_bar=False,
        )
    finally:
        if previous is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = previous
    cells = nbformat.read(executed, as_version=4).cells
    return [o for c in cells for o in c.get("outputs", [])]


def two_level_bootstrap(values, n_resamples: int = 2000) -> tuple[float, float]:
    """Oracle of the report's 95% interval, from its documented draws (tumorsweep.report.stats):
    per resample, cases drawn with replacement, then (with >= 2 trials) trials drawn with
    replacement; the mean over drawn trials of each trial's mean over the drawn cases (NaN
    cells, cases a trial did not score, left out), one resample at a time."""
    values = np.asarray(values, dtype=float)
    n_trials, n_cases = values.shape
    rng = np.random.default_rng(0)
    case_picks = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    trial_picks = (
        rng.integers(0, n_trials, size=(n_resamples, n_trials))
        if n_trials > 1
        else np.zeros((n_resamples, 1), dtype=int)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of all-NaN cells
        means = [
            np.nanmean([np.nanmean(values[j, cases]) for j in trials])
            for cases, trials in zip(case_picks, trial_picks, strict=True)
        ]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


@pytest.fixture(scope="session")
def monai09():
    """The side environment with MONAI 0.9.0 + numpy 1.23 (what SyntheticTumors pins), built
    once per machine; `monai09.run("script.py", *args)` runs an oracle script there."""
    from oracles.env import SideEnv

    return SideEnv("monai090").ensure()
