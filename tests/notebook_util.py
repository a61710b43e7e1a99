"""Running notebooks/aggregate.ipynb headless, for the tests that check what it shows."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


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
