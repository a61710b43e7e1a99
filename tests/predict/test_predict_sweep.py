"""From a finished tiny sweep (real local Ray, real MLflow SQLite store) to labels on new CTs:
`tumorsweep predict --run` on two of the trial's test CTs scores, against the phantom truth, the
trial's own per-case test Dice to 1e-9, and the model registered with --register-best predicts
the same labels."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tumorsweep.cli import main
from tumorsweep.cli.study import main as sweep_main

pytestmark = pytest.mark.ray

SPACE = "study: s\nconfigs:\n  - {synthesis.sphere_ratio: 0.1}\nsearcher: {type: grid}\n"


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice with both-empty = 1, computed here from the voxels."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def test_predict_from_a_sweep_reproduces_the_trials_test_scores(
    ray_local, tmp_path: Path, mlflow_uri: str, phantom_dir: Path
) -> None:
    from monai.transforms import LoadImage

    uri = mlflow_uri
    (tmp_path / "space.yaml").write_text(SPACE)
    code = sweep_main(
        "s",
        [
            "--data", str(phantom_dir), "--preset", "demo", "--experiment", "predict",
            "--search-space", str(tmp_path / "space.yaml"), "--tracking-uri", uri,
            "--storage", str(tmp_path / "ray"), "--register-best", "phantom_unet",
            "--set", "schedule.epochs=4", "--set", "schedule.warmup_epochs=1",
            "--set", "schedule.val_every=1", "--set", "eval.overlap=0.25",
        ],
    )  # fmt: skip
    assert code == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("predict")
    (trial,) = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("tumorsweep.role") == "trial"
    ]
    scored = pd.read_csv(
        client.download_artifacts(trial.info.run_id, "per_case_test.csv", str(tmp_path))
    )
    cases = sorted(scored["case"])[:2]
    images = [str(phantom_dir / "imagesTr" / f"{case}.nii.gz") for case in cases]
    out = tmp_path / "labels"
    args = ["--tracking-uri", uri, "--images", *images, "--device", "cpu"]
    assert main(["predict", "--run", trial.info.run_id, *args, "--out", str(out)]) == 0
    load = LoadImage(image_only=True)
    for case, image in zip(cases, images, strict=True):
        pred = np.asarray(nib.load(out / f"{case}.nii.gz").dataobj)
        ct = nib.load(image)
        truth = np.asarray(nib.load(phantom_dir / "labelsTr" / f"{case}.nii.gz").dataobj)
        assert pred.shape == ct.shape
        np.testing.assert_array_equal(nib.load(out / f"{case}.nii.gz").affine, ct.affine)
        np.testing.assert_allclose(load(str(out / f"{case}.nii.gz")).affine, load(image).affine)
        row = scored.set_index("case").loc[case]
        assert _dice(pred >= 1, truth >= 1) == pytest.approx(row["liver_dice"], abs=1e-9)
        assert _dice(pred == 2, truth == 2) == pytest.approx(row["tumor_dice"], abs=1e-9)
        assert 0.3 < row["liver_dice"] < 1.0  # a model that learnt something, not an empty map
    version = client.get_model_version("phantom_unet", "1")
    assert version.run_id == trial.info.run_id
    registered = tmp_path / "registered"
    assert (
        main(["predict", "--model", "models:/phantom_unet/1", *args, "--out", str(registered)]) == 0
    )
    for case in cases:
        np.testing.assert_array_equal(
            np.asarray(nib.load(registered / f"{case}.nii.gz").dataobj),
            np.asarray(nib.load(out / f"{case}.nii.gz").dataobj),
        )
