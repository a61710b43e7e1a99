"""The report names each column's training pool per source (from the trials' `train_pool.*`
params), says when it differs in size from the published column's pool, and marks published
columns that no public code makes, with the reading ours used. A real MLflow SQLite store
written the way the sweep writes it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from tumorsweep import tracking
from tumorsweep.report import build_report
from tumorsweep.report.reference import published_table
from tumorsweep.report.tables import table_notes
from tumorsweep.synthesis.config import SPHERE_MODES

CASES = ["liver_2", "liver_13", "liver_15", "liver_17"]
METRICS = ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd")
SWEPT = ["synthesis.sphere_ratio"]
HEALTHY_116 = "datafolds/healthy.json: 116 healthy CTs (47 BTCV, 38 TCIA Pancreas-CT, 20 CHAOS"


def _trial(client: MlflowClient, exp: str, parent: str, params: dict, pool: dict, root: Path):
    swept = {k: params[k] for k in SWEPT}
    tags = {
        tracking.PARENT_TAG: parent,
        tracking.ROLE_TAG: "trial",
        tracking.BACKBONE_TAG: "unet",
        tracking.EVAL_SET_TAG: "hu-val",
        tracking.CONFIG_KEY_TAG: json.dumps(swept, sort_keys=True),
    }
    run_id = client.create_run(exp, tags=tags).info.run_id
    logged = {**params, "seed": 0, **tracking.pool_params(pool)}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in logged.items()])
    values = np.linspace(0.5, 0.6, len(CASES))
    table = pd.DataFrame({"case": CASES, **{m: values for m in METRICS}})
    artifact = root / run_id / tracking.PER_CASE_TEST_ARTIFACT
    artifact.parent.mkdir(parents=True)
    table.to_csv(artifact, index=False)
    client.log_artifact(run_id, str(artifact))
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(m, float(values.mean()), now, 0) for m in METRICS])
    client.set_terminated(run_id, "FINISHED")


def _params(ratio: float, **more) -> dict:
    return {
        "model.name": "unet",
        "data.real_fraction": 0.0,
        "synthesis.style": "hu",
        "synthesis.location": "uniform",
        "synthesis.sphere_ratio": ratio,
        "eval.protocol": "hu2023",
        **more,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pool-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("pools", artifact_location=str(root / "artifacts"))
    parent = client.create_run(
        exp,
        tags={
            tracking.ROLE_TAG: "sweep",
            tracking.SWEPT_TAG: json.dumps(SWEPT),
            tracking.BASELINE_TAG: json.dumps({"synthesis.sphere_ratio": 0.0}),
        },
    ).info.run_id
    thirteen = {"Task03_Liver": {"healthy": 13, "real_tumor": 0}}
    published_pool = {"Task03_Liver": {"healthy": 0}, "healthy": {"healthy": 116}}
    _trial(client, exp, parent, _params(0.0), thirteen, root)
    _trial(client, exp, parent, _params(0.05, **{"synthesis.sphere_mode": "add"}), thirteen, root)
    _trial(client, exp, parent, _params(0.15), published_pool, root)  # logs no sphere_mode
    return build_report(uri, "pools", n_resamples=100)


def test_the_pool_per_source_is_in_the_runs_and_the_notes(report) -> None:
    first = report.runs.drop_duplicates("run_id").set_index("synthesis.sphere_ratio")
    assert json.loads(first.loc[0.15, "train_pool"]) == {
        "Task03_Liver": {"healthy": 0},
        "healthy": {"healthy": 116},
    }
    notes = table_notes(report.summary, "pools")
    assert "training pool of UNET, UNET(+5% Sphere): 13 cases (Task03_Liver: 13 healthy)" in notes
    assert (
        "training pool of UNET(+15% Sphere): 116 cases (Task03_Liver: 0; healthy: 116 healthy)"
        in notes
    )


def test_a_pool_of_another_size_than_the_published_one_is_said(report) -> None:
    notes = " ".join(table_notes(report.summary, "pools"))
    assert (
        f"UNET trained on 13 cases, the published UNET on {HEALTHY_116}, 11 tumour-free "
        "LiTS): the training pools differ" in notes
    )
    assert "UNET(+5% Sphere) trained on 13 cases, the published UNET(+5% Sphere) on" in notes
    assert "UNET(+15% Sphere) trained on" not in notes  # 116 = the published pool's size


def test_columns_without_public_code_name_the_reading_ours_used(report) -> None:
    notes = " ".join(table_notes(report.summary, "pools"))
    assert (
        "no public implementation: the published UNET(+5% Sphere) (beside UNET(+5% Sphere)): "
        'the replication\'s "+N% Sphere" values stood in its table' in notes
    )
    assert f"ours reads the column as synthesis.sphere_mode=add: {SPHERE_MODES['add']}" in notes
    # a trial from before the param: the reading it had, replace
    assert "the published UNET(+15% Sphere) (beside UNET(+15% Sphere)): the replication's" in notes
    assert f"synthesis.sphere_mode=replace: {SPHERE_MODES['replace']}" in notes
    # the baseline (Hu et al.'s own code) is not marked
    assert "the published UNET (beside UNET)" not in notes


def test_published_yaml_marks_exactly_the_sphere_and_zhang_columns() -> None:
    table = published_table().drop_duplicates(["table", "label"])
    marked = table[table["no_public_code"].notna()]
    assert sorted(marked["label"]) == sorted(
        [f"UNET(+{n}% Sphere)" for n in (5, 10, 12, 15, 17, 25)] + ["Zhang et al."]
    )
    assert set(marked["reading"]) == {"synthesis.sphere_mode", "synthesis.style"}
    pools = {row["label"]: row["pool"] for _, row in table.iterrows() if row["source"] != "faq"}
    assert pools["UNET(+5% Sphere)"]["cases"] == 116
    faq = table[table["source"] == "faq"]
    assert faq["pool"].isna().all()
