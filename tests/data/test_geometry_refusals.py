"""Geometry the one NIfTI reader (`tumorsweep.data.io`) checks for every command: an affine with
non-orthogonal axes (shear, gantry tilt) beyond a small tolerance, a header that claims more
voxels than the file (or the machine) can hold, and a listed file that is a symbolic-link
loop, each refused in one line naming the file by `check-data`, a sweep's dry run,
`synthesize`, `evaluate` and `fit-location`, inputs byte-identical, nothing written. No Ray."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from refusals_util import one_line, tree
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep.cli import main
from tumorsweep.cli.study import main as sweep_main
from tumorsweep.data import io
from tumorsweep.errors import TumorsweepError

SHEARED = np.array([[2.0, 0.3, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])


def resave(path: Path, affine: np.ndarray) -> None:
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), path)


def huge_header(path: Path) -> None:
    """A NIfTI whose header claims a 30000^3 int16 volume (54 TB) over a few bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 4096
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def loop(path: Path) -> None:
    """Replace `path` by a symbolic link to itself."""
    path.unlink()
    os.symlink(path.name, path)


# --- the reader itself -----------------------------------------------------------------------


def test_the_reader_takes_rounding_but_refuses_shear(tmp_path) -> None:
    data = np.zeros((4, 4, 4), np.float32)
    rounded = np.diag([0.8, 0.8, 1.5, 1.0])
    rounded[0, 1] = 1e-6  # float noise of a stored affine
    nib.save(nib.Nifti1Image(data, rounded), tmp_path / "ok.nii.gz")
    assert io.load_volume(tmp_path / "ok.nii.gz")[0].shape == (4, 4, 4)
    nib.save(nib.Nifti1Image(data, SHEARED), tmp_path / "shear.nii.gz")
    with pytest.raises(TumorsweepError, match="shear.nii.gz: affine has non-orthogonal axes"):
        io.open_nifti(tmp_path / "shear.nii.gz")
    rotated = np.eye(4)  # a rotation is orthogonal: accepted
    c, s = np.cos(0.3), np.sin(0.3)
    rotated[:2, :2] = [[c, -s], [s, c]]
    nib.save(nib.Nifti1Image(data, rotated), tmp_path / "rot.nii.gz")
    io.open_nifti(tmp_path / "rot.nii.gz")


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_the_reader_refuses_a_header_the_file_cannot_hold(tmp_path, name) -> None:
    huge_header(tmp_path / name)
    with pytest.raises(TumorsweepError, match=f"{name}: header claims a 30000x30000x30000"):
        io.load_volume(tmp_path / name)


def test_the_reader_refuses_a_volume_larger_than_the_machine(tmp_path, monkeypatch) -> None:
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.float32), np.eye(4)), tmp_path / "a.nii")
    monkeypatch.setattr(io, "_memory_bytes", lambda: 100_000)  # a machine with 100 kB
    with pytest.raises(TumorsweepError, match="a.nii: header claims a 64x64x64 volume that needs"):
        io.load_volume(tmp_path / "a.nii")


def test_the_reader_names_a_link_loop(tmp_path) -> None:
    os.symlink("a.nii.gz", tmp_path / "b.nii.gz")
    os.symlink("b.nii.gz", tmp_path / "a.nii.gz")
    with pytest.raises(TumorsweepError, match="a.nii.gz: symbolic link loop"):
        io.load_volume(tmp_path / "a.nii.gz")
    with pytest.raises(TumorsweepError, match="b.nii.gz: symbolic link loop"):
        io.resolve_path(tmp_path / "b.nii.gz")


# --- a dataset: check-data and a sweep's dry run ---------------------------------------------


@pytest.fixture()
def dataset(phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copytree(phantom_dir, tmp_path / "data"))


def shear_case(data: Path) -> str:
    for folder in ("imagesTr", "labelsTr"):
        resave(data / folder / "liver_3.nii.gz", SHEARED)
    return "liver_3.nii.gz: affine has non-orthogonal axes"


def huge_case(data: Path) -> str:
    huge_header(data / "imagesTr" / "liver_3.nii.gz")
    return "liver_3.nii.gz: header claims a 30000x30000x30000 volume"


def loop_case(data: Path) -> str:
    loop(data / "labelsTr" / "liver_3.nii.gz")
    return "liver_3.nii.gz: symbolic link loop"


EDITS = {"shear": shear_case, "huge-header": huge_case, "link-loop": loop_case}


@pytest.mark.parametrize("kind", EDITS)
def test_a_sweep_dry_run_refuses_bad_geometry(dataset, tmp_path, capsys, kind) -> None:
    message = EDITS[kind](dataset)
    before = tree(dataset)
    args = ["--data", str(dataset), "--preset", "demo", "--dry-run", "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "ray")]  # fmt: skip
    assert sweep_main("sphere_ratio", args) == 2
    one_line(capsys, message)
    assert tree(dataset) == before
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


@pytest.mark.parametrize("kind", EDITS)
def test_check_data_refuses_bad_geometry(dataset, capsys, kind) -> None:
    message = EDITS[kind](dataset)
    before = tree(dataset)
    assert main(["check-data", "--data", str(dataset)]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert tree(dataset) == before


# --- synthesize, evaluate, fit-location ------------------------------------------------------


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    image, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    label[18:22, 16:20, 14:18] = 2
    paths = {}
    for role in ("ct", "label", "pred", "truth"):
        (tmp_path / role).mkdir()
        paths[role] = tmp_path / role / "liver_1.nii.gz"
        nib.save(nib.Nifti1Image(image if role == "ct" else label, np.eye(4)), paths[role])
    return paths


def break_file(path: Path, kind: str) -> str:
    if kind == "shear":
        resave(path, SHEARED)
        return f"{path}: affine has non-orthogonal axes"
    if kind == "huge-header":
        huge_header(path)
        return f"{path}: header claims a 30000x30000x30000 volume"
    loop(path)
    return f"{path}: symbolic link loop"


@pytest.mark.parametrize("kind", EDITS)
@pytest.mark.parametrize("role", ["ct", "label"])
def test_synthesize_refuses_bad_geometry(tmp_path, files, capsys, kind, role) -> None:
    message = break_file(files[role], kind)
    before = tree(tmp_path)
    out = tmp_path / "out"
    args = ["synthesize", "--image", str(files["ct"]), "--label", str(files["label"])]
    assert main([*args, "--out", str(out)]) == 2
    one_line(capsys, message)
    assert tree(tmp_path) == before and not out.exists()


@pytest.mark.parametrize("kind", EDITS)
@pytest.mark.parametrize("role", ["pred", "truth"])
def test_evaluate_refuses_bad_geometry(tmp_path, files, capsys, kind, role) -> None:
    message = break_file(files[role], kind)
    if kind == "shear":  # both sides sheared alike: still refused (distances would be wrong)
        resave(files["pred" if role == "truth" else "truth"], SHEARED)
    before = tree(tmp_path)
    out = tmp_path / "rows.csv"
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]
    assert main([*args, "--out", str(out)]) == 2
    one_line(capsys, "liver_1.nii.gz", message.split(": ", 1)[1])
    assert tree(tmp_path) == before and not out.exists()


@pytest.mark.parametrize("kind", EDITS)
def test_fit_location_refuses_bad_geometry(tmp_path, files, capsys, kind) -> None:
    shutil.copy(files["label"], tmp_path / "label" / "liver_2.nii.gz")
    message = break_file(files["label"], kind)
    before = tree(tmp_path)
    out = tmp_path / "gmm.json"
    args = ["fit-location", "--data", str(tmp_path / "label"), "--components", "1"]
    assert main([*args, "--out", str(out)]) == 2
    one_line(capsys, message)
    assert tree(tmp_path) == before and not out.exists()
