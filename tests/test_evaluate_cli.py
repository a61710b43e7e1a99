"""`tumorsweep evaluate` on real NIfTI files in a temp dir."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from core.cli import main

AFFINE = np.diag([0.8, 0.8, 1.5, 1.0])


def _write(path, labels, affine=AFFINE):
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), path)


@pytest.fixture()
def folders(tmp_path):
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    pred_dir.mkdir()
    truth_dir.mkdir()
    truth = np.zeros((12, 12, 8), np.uint8)
    truth[2:10, 2:10, 1:7] = 1
    truth[4:6, 4:6, 3:5] = 2
    pred = truth.copy()
    pred[2:10, 2:10, 6] = 0  # liver misses one slice
    pred[4:6, 4:6, 3:5] = 1  # tumour missed
    pred[11, 11, 0] = 1  # spurious liver voxel, removed by post-processing
    _write(truth_dir / "liver_1.nii.gz", truth)
    _write(pred_dir / "liver_1.nii.gz", pred)
    _write(truth_dir / "liver_2.nii", truth)
    _write(pred_dir / "liver_2.nii.gz", truth)
    return pred_dir, truth_dir, tmp_path


def test_good_run_writes_rows_and_prints_means(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    out = tmp_path / "results" / "rows.csv"
    code = main(["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out)])
    assert code == 0
    rows = pd.read_csv(out).set_index("case")
    assert list(rows.index) == ["liver_1", "liver_2"]
    assert rows.loc["liver_1", "liver_dice"] == pytest.approx(2 * 320 / (320 + 384))
    assert rows.loc["liver_1", "liver_pred_voxels"] == 320  # spurious voxel removed
    assert rows.loc["liver_1", "tumor_empty"] == "pred"
    assert rows.loc["liver_2", "tumor_dice"] == 1.0
    printed = capsys.readouterr().out
    assert "2 cases" in printed and "tumor empty masks" in printed and "pred 1" in printed
    main(
        [
            "evaluate",
            "--pred",
            str(pred_dir),
            "--truth",
            str(truth_dir),
            "--out",
            str(out),
            "--no-postprocess",
        ]
    )
    assert pd.read_csv(out).set_index("case").loc["liver_1", "liver_pred_voxels"] == 321


def test_shape_mismatch_names_the_case(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    _write(pred_dir / "liver_2.nii.gz", np.zeros((12, 12, 9), np.uint8))
    code = main(
        [
            "evaluate",
            "--pred",
            str(pred_dir),
            "--truth",
            str(truth_dir),
            "--out",
            str(tmp_path / "r.csv"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "case liver_2" in err and "(12, 12, 9)" in err and len(err.strip().splitlines()) == 1


def test_affine_mismatch_and_unpaired_cases(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    _write(pred_dir / "liver_2.nii.gz", np.zeros((12, 12, 8)), np.diag([1.0, 0.8, 1.5, 1.0]))
    args = [
        "evaluate",
        "--pred",
        str(pred_dir),
        "--truth",
        str(truth_dir),
        "--out",
        str(tmp_path / "r.csv"),
    ]
    assert main(args) == 2
    assert "case liver_2: prediction affine" in capsys.readouterr().err
    (pred_dir / "liver_2.nii.gz").unlink()
    _write(pred_dir / "liver_9.nii.gz", np.zeros((12, 12, 8)))
    assert main(args) == 2
    assert "no prediction for liver_2; no truth for liver_9" in capsys.readouterr().err
