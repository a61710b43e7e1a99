"""`tumorsweep evaluate` on real NIfTI files in a temp dir: results, protocols and bad input.

Every bad input must give one line naming the file and the problem, exit code 2, no traceback,
nothing written (no CSV, no folder) and inputs byte-identical afterwards.
"""

from __future__ import annotations

import gzip
import hashlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tumorsweep.cli import main

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


def test_protocol_hu2023_scores_label_one_and_keeps_6_connected_liver(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    out = tmp_path / "hu.csv"
    args = ["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out)]
    assert main([*args, "--protocol", "hu2023"]) == 0
    rows = pd.read_csv(out).set_index("case")
    # Liver = label 1 only: 384 - 8 tumour voxels in truth; the prediction's tumour is liver.
    assert rows.loc["liver_1", "liver_true_voxels"] == 384 - 8
    assert rows.loc["liver_1", "liver_pred_voxels"] == 320
    assert rows.loc["liver_2", "liver_dice"] == 1.0 and rows.loc["liver_2", "tumor_dice"] == 1.0
    assert "protocol hu2023" in capsys.readouterr().out


def _snapshot(root) -> dict[str, str]:
    """Every file and folder under root with a hash of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        if path.is_file()
        else "folder"
        for path in sorted(root.rglob("*"))
    }


def _fails_cleanly(root, capsys, argv: list[str], *needles: str) -> None:
    """Run the CLI expecting one clean error line holding `needles`, and no trace on disk."""
    before = _snapshot(root)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert captured.out == ""
    assert _snapshot(root) == before


def _args(pred_dir, truth_dir, out) -> list[str]:
    return ["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out)]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3, "label values 3 outside"), (255, "label values 255 outside"), (-1, "values -1 outside")],
)
def test_prediction_with_other_label_values(folders, capsys, value, shown):
    pred_dir, truth_dir, tmp_path = folders
    labels = np.asarray(nib.load(pred_dir / "liver_2.nii.gz").dataobj).astype(np.int16)
    labels[0, 0, 0] = value
    nib.save(nib.Nifti1Image(labels, AFFINE), pred_dir / "liver_2.nii.gz")
    out = tmp_path / "new" / "rows.csv"
    _fails_cleanly(tmp_path, capsys, _args(pred_dir, truth_dir, out), "liver_2.nii.gz", shown)


def test_prediction_with_nan(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    labels = np.asarray(nib.load(pred_dir / "liver_2.nii.gz").dataobj).astype(np.float32)
    labels[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(labels, AFFINE), pred_dir / "liver_2.nii.gz")
    out = tmp_path / "new" / "rows.csv"
    _fails_cleanly(tmp_path, capsys, _args(pred_dir, truth_dir, out), "liver_2.nii.gz", "NaN")


def test_prediction_holding_probabilities(folders, capsys):
    """Probabilities would pass as labels after post-processing (>= 1 is liver): refused."""
    pred_dir, truth_dir, tmp_path = folders
    labels = np.asarray(nib.load(pred_dir / "liver_1.nii.gz").dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(labels * 0.45, AFFINE), pred_dir / "liver_1.nii.gz")
    out = tmp_path / "new" / "rows.csv"
    argv = _args(pred_dir, truth_dir, out)
    _fails_cleanly(tmp_path, capsys, argv, "pred/liver_1.nii.gz", "non-integer values")


def test_truth_with_other_label_values(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    labels = np.asarray(nib.load(truth_dir / "liver_2.nii").dataobj).copy()
    labels[5, 5, 5] = 4
    _write(truth_dir / "liver_2.nii", labels)
    out = tmp_path / "new" / "rows.csv"
    argv = _args(pred_dir, truth_dir, out)
    _fails_cleanly(tmp_path, capsys, argv, "truth/liver_2.nii", "label values 4 outside")


def test_shape_mismatch_names_the_case_and_files(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    _write(pred_dir / "liver_2.nii.gz", np.zeros((12, 12, 9), np.uint8))
    out = tmp_path / "new" / "rows.csv"
    argv = _args(pred_dir, truth_dir, out)
    _fails_cleanly(tmp_path, capsys, argv, "case liver_2", "(12, 12, 9)", "liver_2.nii.gz")


def test_affine_mismatch_names_the_case(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    _write(pred_dir / "liver_2.nii.gz", np.zeros((12, 12, 8)), np.diag([1.0, 0.8, 1.5, 1.0]))
    out = tmp_path / "new" / "rows.csv"
    argv = _args(pred_dir, truth_dir, out)
    _fails_cleanly(tmp_path, capsys, argv, "case liver_2:", "affine differs", "by up to 0.2")


def test_empty_prediction_folder(folders, capsys):
    _, truth_dir, tmp_path = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no predictions here")
    out = tmp_path / "new" / "rows.csv"
    _fails_cleanly(tmp_path, capsys, _args(empty, truth_dir, out), "--pred", "no .nii")


def test_names_that_do_not_pair(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    (pred_dir / "liver_2.nii.gz").rename(pred_dir / "liver_9.nii.gz")
    out = tmp_path / "new" / "rows.csv"
    needle = "no prediction for liver_2; no truth for liver_9"
    _fails_cleanly(tmp_path, capsys, _args(pred_dir, truth_dir, out), needle)


def test_truncated_file(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    whole = (pred_dir / "liver_2.nii.gz").read_bytes()
    assert gzip.decompress(whole)  # a valid file before
    (pred_dir / "liver_2.nii.gz").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "new" / "rows.csv"
    _fails_cleanly(tmp_path, capsys, _args(pred_dir, truth_dir, out), "liver_2.nii.gz")


def test_out_is_an_existing_folder(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    (tmp_path / "results").mkdir()
    argv = _args(pred_dir, truth_dir, tmp_path / "results")
    _fails_cleanly(tmp_path, capsys, argv, "--out", "is a folder")


def test_out_is_one_of_the_inputs(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    argv = _args(pred_dir, truth_dir, truth_dir / "liver_2.nii")
    _fails_cleanly(tmp_path, capsys, argv, "--out", "is one of the input label files")


def test_out_below_a_file(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    (tmp_path / "taken").write_text("a file, not a folder")
    argv = _args(pred_dir, truth_dir, tmp_path / "taken" / "rows.csv")
    _fails_cleanly(tmp_path, capsys, argv, "--out", "is a file, not a folder")


def test_protocol_chen2024_gates_by_the_organ_mask_folder(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    organs = tmp_path / "organs"
    organs.mkdir()
    organ = np.zeros((12, 12, 8), np.uint8)
    organ[2:10, 2:10, 1:6] = 1  # misses the liver's last slice
    _write(organs / "liver_1.nii.gz", organ)
    truth = np.asarray(nib.load(truth_dir / "liver_2.nii").dataobj)
    _write(organs / "liver_2.nii", truth >= 1)
    pred = truth.copy()
    pred[11, 11, 0] = 2  # a tumour outside the organ mask: dropped by the gate
    _write(pred_dir / "liver_2.nii.gz", pred)
    out = tmp_path / "chen.csv"
    args = [*_args(pred_dir, truth_dir, out), "--protocol", "chen2024"]
    assert main([*args, "--organ-masks", str(organs)]) == 0
    rows = pd.read_csv(out).set_index("case")
    # the predicted liver is the organ mask (label 1 where no tumour): 8 x 8 x 5 voxels
    assert rows.loc["liver_1", "liver_pred_voxels"] == 320
    assert rows.loc["liver_1", "liver_true_voxels"] == 384 - 8  # liver scored as label == 1
    assert rows.loc["liver_2", "tumor_dice"] == 1.0
    assert rows.loc["liver_2", "tumor_pred_voxels"] == 8
    assert "protocol chen2024" in capsys.readouterr().out
    # 'truth': each case's own label is its organ mask
    assert main([*args, "--organ-masks", "truth"]) == 0
    rows = pd.read_csv(out).set_index("case")
    assert rows.loc["liver_1", "liver_pred_voxels"] == 384  # the whole truth, no tumour predicted
    assert rows.loc["liver_2", "tumor_dice"] == 1.0


def test_organ_mask_flag_refusals(folders, capsys):
    pred_dir, truth_dir, tmp_path = folders
    out = tmp_path / "chen.csv"
    args = [*_args(pred_dir, truth_dir, out), "--protocol", "chen2024"]
    _fails_cleanly(tmp_path, capsys, args, "--protocol chen2024: needs --organ-masks")
    organs = tmp_path / "organs"
    organs.mkdir()
    _write(organs / "liver_1.nii.gz", np.ones((12, 12, 8)))
    _fails_cleanly(
        tmp_path,
        capsys,
        [*args, "--organ-masks", str(organs)],
        str(organs / "liver_2.nii"),
        "file not found",
        "case liver_2",
    )
    _fails_cleanly(
        tmp_path,
        capsys,
        [*args, "--organ-masks", str(tmp_path / "nowhere")],
        "--organ-masks",
        "is not a folder",
    )
    _fails_cleanly(
        tmp_path,
        capsys,
        [*_args(pred_dir, truth_dir, out), "--organ-masks", str(organs)],
        "protocol tumorsweep does not use organ masks",
    )
    # the right shape on another grid (origin 4 mm away) would gate the wrong voxels
    shifted = AFFINE.copy()
    shifted[0, 3] = 4.0
    _write(organs / "liver_2.nii", np.ones((12, 12, 8)), shifted)
    _fails_cleanly(
        tmp_path,
        capsys,
        [*args, "--organ-masks", str(organs)],
        str(organs / "liver_2.nii"),
        "affine differs from the case's label",
        "by up to 4",
    )
