"""The same study against a two-node Ray cluster (`ray start --head` + `ray start --address`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def two_node_cluster():
    port = _free_port()
    head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={_free_port()}", "--disable-usage-stats"]  # fmt: skip
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
              "--node-ip-address=127.0.0.1", "--disable-usage-stats"]  # fmt: skip
    # Loopback-only test cluster: token auth off on every node and the driver alike (a real
    # cluster propagates ~/.ray/auth_token instead).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    try:
        subprocess.run(head, check=True, capture_output=True, timeout=120, env=env)
        subprocess.run(worker, check=True, capture_output=True, timeout=120, env=env)
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_sweep_runs_on_a_two_node_cluster(
    two_node_cluster: tuple[str, dict], tmp_path: Path, mlflow_uri: str, phantom_dir: Path
) -> None:
    address, env = two_node_cluster
    space = tmp_path / "space.yaml"
    space.write_text(
        "study: c\nsweep:\n  synthesis.sphere_ratio: {grid: [0.0, 1.0]}\nsearcher: {type: grid}\n"
    )
    uri = mlflow_uri
    command = [
        sys.executable, str(ROOT / "sweeps" / "sphere_ratio.py"), "--address", address,
        "--data", str(phantom_dir), "--preset", "demo", "--search-space", str(space),
        "--tracking-uri", uri, "--storage", str(tmp_path / "ray"), "--experiment", "cluster",
        "--set", "schedule.epochs=1", "--set", "schedule.warmup_epochs=0",
        "--set", "schedule.patch_size=[32, 32, 32]", "--set", "eval.overlap=0.0",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Ray cluster: 2 node(s), 3 CPU" in result.stdout
    # one-worker trials hold 1 CPU each and no driver reserve: 3 fit on 3 CPUs
    assert "up to 3 trial(s) at once" in result.stdout
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cluster")
    trials = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("tumorsweep.role") == "trial"
    ]
    assert len(trials) == 2
    assert all(t.info.status == "FINISHED" for t in trials)
    assert all(0.0 <= t.data.metrics["liver_dice"] <= 1.0 for t in trials)
