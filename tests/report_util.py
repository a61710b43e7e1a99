"""Shared helpers of the report tests: an MLflow store written the way the sweep writes it
(sweep parent runs, trial runs with per-case tables) and the usual trial parameters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

CASES = [f"liver_{n}" for n in (2, 13, 15, 17, 19, 21, 33, 42)]
METRICS = ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd")
ROW_NAMES = dict(zip(METRICS, ("Liver Dice", "Liver NSD", "Tumor Dice", "Tumor NSD"), strict=True))
SPHERE_SWEPT = ["synthesis.sphere_ratio"]


def per_case_table(ratio: float, seed: int) -> pd.DataFrame:
    """Deterministic per-case values: 0.25 is ~0.1 tumour Dice worse on every case."""
    rng = np.random.default_rng(int(ratio * 100) * 10 + seed)
    base = np.linspace(0.45, 0.75, len(CASES))
    tumor_dice = base + rng.normal(0, 0.02, len(CASES)) - (0.1 if ratio == 0.25 else 0.0)
    tumor_dice[3] = np.nan  # a case whose tumour Dice is undefined
    return pd.DataFrame(
        {
            "case": CASES,
            "liver_dice": 0.95 + rng.normal(0, 0.005, len(CASES)),
            "liver_nsd": 0.88 + rng.normal(0, 0.01, len(CASES)),
            "tumor_dice": tumor_dice,
            "tumor_nsd": tumor_dice + 0.03,
            "liver_voxels": rng.integers(10_000, 20_000, len(CASES)),
        }
    )


class RunStore:
    """Writes runs the way the sweep does; remembers what it wrote."""

    def __init__(self, root: Path) -> None:
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.root = root
        self.client = MlflowClient(self.uri)
        self.per_case: dict[tuple[str, float, int], pd.DataFrame] = {}
        self.metrics: dict[tuple[str, float, int], dict[str, float]] = {}
        self.swept: dict[str, list[str]] = {}

    def experiment(self, name: str) -> str:
        # artifacts in a folder of our own naming: experiment names here may be hostile paths
        location = self.root / "artifacts" / str(len(self.client.search_experiments()))
        return self.client.create_experiment(name, artifact_location=str(location))

    def sweep(
        self, exp: str, swept: list[str], baseline: dict, start: int, tags: dict | None = None
    ) -> str:
        tags = {
            "tumorsweep.role": "sweep",
            "tumorsweep.study": exp,
            "tumorsweep.swept": json.dumps(swept),
            "tumorsweep.baseline": json.dumps(baseline),
            "tumorsweep.preset": "demo",
            **(tags or {}),
        }
        run_id = self.client.create_run(exp, start_time=start, tags=tags).info.run_id
        self.swept[run_id] = swept
        return run_id

    def trial(
        self,
        exp: str,
        parent: str,
        params: dict,
        seed: int,
        status: str = "FINISHED",
        drop: tuple[str, ...] = (),
        eval_set: str = "hu-val",
        table: pd.DataFrame | None = None,
    ) -> str:
        swept = {k: params[k] for k in self.swept[parent]}
        tags = {
            "mlflow.parentRunId": parent,
            "tumorsweep.role": "trial",
            "backbone": params["model.name"],
            "eval_set": eval_set,
            "tumorsweep.config_key": json.dumps(swept, sort_keys=True),
        }
        if status == "FAILED":
            tags["tumorsweep.error"] = "RuntimeError: CUDA out of memory"
        run_id = self.client.create_run(exp, tags=tags).info.run_id
        all_params = {**params, "seed": seed}
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in all_params.items()])
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric("train_loss", 1.0 / (e + 1), now, e) for e in range(3)]
        )
        if status == "FINISHED":
            key = (exp, json.dumps(swept, sort_keys=True), seed)
            if table is None:
                table = per_case_table(params.get("synthesis.sphere_ratio", 0.0), seed)
            artifact = self.root / run_id / "per_case_test.csv"
            artifact.parent.mkdir()
            table.to_csv(artifact, index=False)
            self.client.log_artifact(run_id, str(artifact))
            values = {m: float(np.nanmean(table[m])) for m in METRICS if m not in drop}
            self.client.log_batch(run_id, metrics=[Metric(m, v, now, 0) for m, v in values.items()])
            self.per_case[key] = table
            self.metrics[key] = values
        if status != "RUNNING":
            self.client.set_terminated(run_id, status=status)
        return run_id


def unet_params(ratio: float, **more: object) -> dict:
    return {
        "model.name": "unet",
        "model.pretrained": None,
        "data.real_fraction": 0.0,
        "synthesis.style": "hu",
        "synthesis.location": "uniform",
        "synthesis.sphere_ratio": ratio,
        **more,
    }
