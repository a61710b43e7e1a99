"""DiffTumor on a real local Ray: the generator as a two-worker Ray Train (DDP, gloo) run, then
the difftumor study's two columns (Hu, DiffTumor) as a sweep whose trials load it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tumorsweep import tracking
from tumorsweep.config import make_config
from tumorsweep.data.cases import resolve_cases
from tumorsweep.difftumor.job import GeneratorJob, run_job
from tumorsweep.generative import load_generator, read_generator_info
from tumorsweep.generative.config import generator_config

pytestmark = pytest.mark.ray

TINY = {
    "patch_size": 16,
    "training.autoencoder_epochs": 3,
    "training.diffusion_epochs": 3,
    "training.crops_per_epoch": 16,
    "training.autoencoder_batch": 4,
    "training.diffusion_batch": 4,
    "training.checkpoint_every": 2,
}


def test_generator_ddp_run_then_a_sweep_loads_it(
    ray_local: str, phantom_dir: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    from mlflow import MlflowClient

    from tumorsweep.cli.study import main

    uri = mlflow_uri
    cases = resolve_cases(make_config("demo", {"data.root": str(phantom_dir)}).data)
    job = GeneratorJob(
        config=generator_config("demo", (2.0, 2.0, 2.0), TINY),
        cases=cases,
        out=tmp_path / "gen",
        tracking_uri=uri,
        experiment="difftumor",
        address=ray_local,
        workers=2,
        storage=str(tmp_path / "ray"),
    )
    folder = run_job(job)
    info = read_generator_info(folder)
    assert len(info.record["history"]["autoencoder_l1"]) == 3
    load_generator(folder)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("difftumor").experiment_id
    [run] = client.search_runs([experiment])
    assert run.info.status == "FINISHED" and run.data.tags["tumorsweep.role"] == "generator"
    history = client.get_metric_history(run.info.run_id, "diffusion_late_l1")
    assert sorted(m.step for m in history) == [0, 1, 2]  # the chief logs, once per epoch

    code = main(
        "difftumor",
        [
            "--data", str(phantom_dir), "--preset", "demo", "--tracking-uri", uri,
            "--storage", str(tmp_path / "ray"), "--max-concurrent", "2",
            "--set", f"synthesis.generator={folder}",
            "--set", "synthesis.difftumor.ddim_steps=5",
            "--set", "schedule.epochs=2", "--set", "schedule.warmup_epochs=1",
            "--set", "schedule.val_every=1", "--set", "eval.overlap=0.0",
        ],
    )  # fmt: skip
    assert code == 0
    trials = client.search_runs([experiment], "tags.`tumorsweep.role` = 'trial'")
    styles = sorted(t.data.params["synthesis.style"] for t in trials)
    assert styles == ["difftumor", "difftumor", "hu"]  # healthy-only, semi-supervised, Hu
    assert all(t.info.status == "FINISHED" for t in trials)
    semi = [t for t in trials if t.data.params["data.semi_supervised"] == "True"]
    assert len(semi) == 1 and semi[0].data.params["eval.protocol"] == "chen2024"
    for trial in trials:  # every style logs its patch fractions per epoch
        assert (
            len(client.get_metric_history(trial.info.run_id, tracking.PATCH_SYNTHETIC_FRACTION))
            == 2
        )
    assert {t.data.params["synthesis.generator"] for t in trials} == {str(folder)}
    from tumorsweep.report import summary_table

    table = summary_table(uri, "difftumor")
    assert "| UNET(DiffTumor," in table and "semi_supervised=True" in table
