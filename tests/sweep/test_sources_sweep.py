"""End to end on a real local Ray and MLflow: a study whose training pool comes from two
sources, a healthy-only one (SyntheticTumors' healthy.json layout, labels 0/1, relative paths
under --source base_dir) and the MSD phantom (data.root); one tiny trial."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from sources_util import write_healthy_source

from tumorsweep.cli.study import main
from tumorsweep.report import build_report
from tumorsweep.report.tables import table_notes

pytestmark = pytest.mark.ray

SPACE = """
study: sphere_ratio
fixed: {model.name: unet}
configs:
  - {synthesis.sphere_ratio: 0.5, synthesis.sphere_mode: add}
searcher: {type: grid}
"""


def test_a_two_source_study_logs_and_reports_its_pool_per_source(
    ray_local, tmp_path: Path, mlflow_uri: str, phantom_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    from mlflow import MlflowClient

    healthy_json, base = write_healthy_source(tmp_path)
    uri = mlflow_uri
    (tmp_path / "space.yaml").write_text(SPACE)
    source = f"{{path: {healthy_json}, base_dir: {base}, role: healthy, name: healthy}}"
    code = main(
        "sphere_ratio",
        [
            "--data", str(phantom_dir), "--source", source, "--preset", "demo",
            "--search-space", str(tmp_path / "space.yaml"), "--tracking-uri", uri,
            "--storage", str(tmp_path / "ray"), "--experiment", "pooled",
            "--set", "schedule.epochs=1", "--set", "schedule.warmup_epochs=0",
            "--set", "schedule.val_every=1", "--set", "schedule.patch_size=[32, 32, 32]",
            "--set", "eval.overlap=0.0",
        ],
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "source healthy: 3 healthy + 0 real-tumour training cases" in out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("pooled")
    runs = client.search_runs([experiment.experiment_id])
    (trial,) = [r for r in runs if r.data.tags.get("tumorsweep.role") == "trial"]
    (parent,) = [r for r in runs if r.data.tags.get("tumorsweep.role") == "sweep"]
    assert trial.info.status == "FINISHED"
    params = trial.data.params
    # the phantom's 4 healthy training cases and the source's 3
    assert params["train_pool.tumorsweep-phantom.healthy"] == "4"
    assert params["train_pool.healthy.healthy"] == "3"
    assert params["train_pool.total"] == "7"
    assert params["synthesis.sphere_mode"] == "add"
    assert ast.literal_eval(params["data.sources"])[0]["base_dir"] == str(base.resolve())
    sources = json.loads(parent.data.tags["tumorsweep.data_sources"])
    assert [(s["name"], s["role"]) for s in sources] == [
        ("tumorsweep-phantom", "evaluation"),
        ("healthy", "healthy"),
    ]
    report = build_report(uri, "pooled", n_resamples=50)
    notes = table_notes(report.summary, "pooled")
    assert (
        "training pool of UNET(+50% Sphere,add spheres): 7 cases (tumorsweep-phantom: 4 healthy; "
        "healthy: 3 healthy)" in notes
    )
