"""`tumorsweep check-data` and `tumorsweep phantom`: summaries, exit codes, problem classes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorsweep.cli import main
from tumorsweep.data.check import check_dataset
from tumorsweep.data.phantom import write_phantom_dataset


@pytest.fixture
def phantom(tmp_path) -> Path:
    write_phantom_dataset(
        tmp_path / "ph", cases=4, seed=1, shape=(32, 32, 24), spacing=(4.0, 4.0, 4.0), tumor_cases=2
    )
    return tmp_path / "ph"


def relabel(root: Path, case: int, change) -> None:
    path = root / f"labelsTr/liver_{case}.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj).copy()
    nib.save(nib.Nifti1Image(change(data).astype(np.uint8), image.affine), path)


def test_phantom_command_then_clean_check(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["--cases", "3", "--shape", "32", "32", "24", "--spacing", "4", "4", "4"]
    assert main(["phantom", str(out), *args, "--tumor-cases", "2", "--seed", "3"]) == 0
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
    assert main(["check-data", "--data", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 train, 1 validation, 1 test" in printed and "ok: every case passed" in printed
    assert "liver_2" in printed and "test" in printed


def test_summary_counts_tumours_per_case(phantom) -> None:
    result = check_dataset(phantom)
    assert result.first_problem() is None
    rows = {c.case: c for c in result.cases}
    assert [rows[f"liver_{n}"].role for n in range(4)] == ["train", "train", "validation", "test"]
    assert rows["liver_0"].tumors == 0 and rows["liver_0"].tumor_ml == 0
    assert 1 <= rows["liver_3"].tumors <= 4 and rows["liver_3"].tumor_ml > 0
    assert rows["liver_1"].liver_ml > 50 and rows["liver_1"].spacing == (4.0, 4.0, 4.0)


def test_first_problem_class_lists_every_bad_case(phantom, capsys) -> None:
    relabel(phantom, 0, lambda d: np.where(d == 1, 5, d))
    relabel(phantom, 3, lambda d: np.zeros_like(d))
    relabel(phantom, 2, lambda d: np.where(d == 1, 7, d))
    assert main(["check-data", "--data", str(phantom)]) == 1
    err = capsys.readouterr().err
    assert "2 case(s) with problem 'label values'" in err
    assert "liver_0.nii.gz: label values 5" in err and "liver_2.nii.gz: label values 7" in err
    assert "empty liver" not in err  # a later class waits until the first is fixed
    relabel(phantom, 0, lambda d: np.where(d == 5, 1, d))
    relabel(phantom, 2, lambda d: np.where(d == 7, 1, d))
    assert main(["check-data", "--data", str(phantom)]) == 1
    assert "1 case(s) with problem 'empty liver'" in capsys.readouterr().err


def test_unreadable_case_comes_first(phantom, capsys) -> None:
    relabel(phantom, 1, lambda d: d[:, :, :10])  # shape mismatch
    (phantom / "imagesTr/liver_2.nii.gz").write_bytes(b"broken")
    assert main(["check-data", "--data", str(phantom)]) == 1
    err = capsys.readouterr().err
    assert "problem 'unreadable'" in err and "liver_2.nii.gz: not a readable NIfTI" in err
    (phantom / "imagesTr/liver_2.nii.gz").unlink()
    assert main(["check-data", "--data", str(phantom)]) == 2  # a listed file is missing
    assert "listed files do not exist" in capsys.readouterr().err


def test_mismatch_and_bad_split_exit_codes(phantom, capsys) -> None:
    relabel(phantom, 1, lambda d: d[:, :, :10])
    assert main(["check-data", "--data", str(phantom)]) == 1
    assert "label shape (32, 32, 10) differs" in capsys.readouterr().err
    assert main(["check-data", "--data", str(phantom), "--split", "hu-val"]) == 2
    assert "lacks case numbers 13 15 17" in capsys.readouterr().err


def test_a_dataset_resolving_to_no_case_is_an_error(tmp_path, capsys) -> None:
    """An nnU-Net file_ending that matches nothing: refused naming file_ending, not 'ok'."""
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "labelsTr/a.nii")
    description = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumor": 2},
        "file_ending": ".nii.gz",  # the files end in .nii
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    assert main(["check-data", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "file_ending '.nii.gz' matches no file" in err and "labelsTr holds .nii files" in err
    assert "ok:" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("rescale", "liver_warning"),
    [
        (lambda hu: (hu + 1024.0) / 4096.0, False),  # normalised to [0, 1]: no air
        (lambda hu: hu + 1024.0, True),  # stored without the -1024 offset: liver ~1130
    ],
    ids=["unit-range", "offset"],
)
def test_an_image_not_in_hounsfield_units_is_warned_about(
    phantom, capsys, rescale, liver_warning
) -> None:
    path = phantom / "imagesTr/liver_1.nii.gz"
    image = nib.load(path)
    nib.save(nib.Nifti1Image(rescale(np.asarray(image.dataobj, np.float32)), image.affine), path)
    assert main(["check-data", "--data", str(phantom)]) == 0
    captured = capsys.readouterr()
    assert "ok: every case passed (see the warnings)" in captured.out
    assert "liver_1.nii.gz: no voxel below -500 HU" in captured.err
    assert ("liver_1.nii.gz: liver median" in captured.err) == liver_warning
    others = [line for line in captured.err.splitlines() if "HU" in line and "liver_1" not in line]
    assert others == []  # the phantom's real HU images raise no warning
