"""Outputs are checked before the work: `synthesize`, `evaluate`, `fit-location`,
`train-generator` and `report` refuse an `--out` they could not write (a folder that takes no
files, a device such as /dev/full) in one line before scoring or training; a write that fails
anyway is one line naming the path with no half-written file; two runs writing the same output
at once are refused (the second, before its work). Inputs byte-identical, nothing written
outside the output folder. No Ray here."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from refusals_util import one_line, tree
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep import tracking
from tumorsweep.cli import main
from tumorsweep.outputs import exclusive


@pytest.fixture()
def read_only(tmp_path: Path):
    """A folder that takes no new file: mode 0555, or (as root, who ignores modes) /sys,
    which refuses new files to root too."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder if not os.access(folder, os.W_OK) else Path("/sys")
    folder.chmod(0o755)


@pytest.fixture()
def case(tmp_path: Path) -> tuple[Path, Path]:
    """A CT and liver label with a tumour, and a copy of the label as a 'prediction'."""
    image, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    label[18:22, 16:20, 14:18] = 2
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "liver.nii.gz")
    for role in ("pred", "truth"):
        (tmp_path / role).mkdir()
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / role / "liver_1.nii.gz")
    return folder / "ct.nii.gz", folder / "liver.nii.gz"


def no_work(monkeypatch: pytest.MonkeyPatch, module, name: str) -> None:
    """Make the command's work fail loudly: a refusal must come before it."""

    def work(*_args, **_kwargs):
        raise AssertionError(f"{name} ran before the output was checked")

    monkeypatch.setattr(module, name, work)


# --- evaluate --------------------------------------------------------------------------------


def evaluate(tmp_path: Path, out: Path | str) -> list[str]:
    return ["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
            "--out", str(out)]  # fmt: skip


def test_evaluate_into_a_folder_that_takes_no_files_is_refused_before_scoring(
    tmp_path, case, read_only, capsys, monkeypatch
) -> None:
    import tumorsweep.cli.evaluate as cli_evaluate

    no_work(monkeypatch, cli_evaluate, "case_metrics_and_lesions")
    before = tree(tmp_path)
    assert main(evaluate(tmp_path, read_only / "rows.csv")) == 2
    one_line(capsys, f"--out {read_only / 'rows.csv'}: cannot write into {read_only}")
    assert tree(tmp_path) == before


def test_evaluate_to_a_full_device_is_refused_before_scoring(
    tmp_path, case, capsys, monkeypatch
) -> None:
    import tumorsweep.cli.evaluate as cli_evaluate

    no_work(monkeypatch, cli_evaluate, "case_metrics_and_lesions")
    before = tree(tmp_path)
    assert main(evaluate(tmp_path, "/dev/full")) == 2
    one_line(capsys, "--out /dev/full: is not a regular file")
    assert tree(tmp_path) == before


def test_evaluate_write_that_fails_anyway_is_one_line_and_leaves_no_file(
    tmp_path, case, capsys, monkeypatch
) -> None:
    def disk_full(self, path, *args, **kwargs):
        Path(path).write_text("case,liver_di")  # half a row, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    out = tmp_path / "results" / "rows.csv"
    before = tree(tmp_path)
    assert main(evaluate(tmp_path, out)) == 2
    one_line(capsys, "cannot write", "No space left on device")
    assert not out.exists() and tree(tmp_path) == before


# --- synthesize ------------------------------------------------------------------------------


def synthesize(case: tuple[Path, Path], out: Path | str) -> list[str]:
    return ["synthesize", "--image", str(case[0]), "--label", str(case[1]), "--out", str(out)]


def test_synthesize_into_a_folder_that_takes_no_files_is_refused_before_synthesis(
    tmp_path, case, read_only, capsys, monkeypatch
) -> None:
    import tumorsweep.cli.synthesis as cli_synthesis

    no_work(monkeypatch, cli_synthesis, "synthesize_tumors")
    before = tree(tmp_path)
    assert main(synthesize(case, read_only)) == 2
    one_line(capsys, f"--out {read_only}: cannot write into {read_only}")
    assert main(synthesize(case, read_only / "new")) == 2
    one_line(capsys, f"--out {read_only / 'new'}: cannot write into {read_only}")
    assert tree(tmp_path) == before


def test_synthesize_to_a_device_is_refused(tmp_path, case, capsys) -> None:
    before = tree(tmp_path)
    assert main(synthesize(case, "/dev/full")) == 2
    one_line(capsys, "--out /dev/full: exists and is not a folder")
    assert tree(tmp_path) == before


def test_synthesize_write_that_fails_anyway_is_one_line(
    tmp_path, case, capsys, monkeypatch
) -> None:
    import tumorsweep.cli.synthesis as cli_synthesis

    def disk_full(image, filename):
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(cli_synthesis.nib, "save", disk_full)
    out = tmp_path / "out"
    assert main(synthesize(case, out)) == 2
    one_line(capsys, "cannot write", "No space left on device")
    assert list(out.iterdir()) == []  # no temporary or half file left


# --- fit-location ----------------------------------------------------------------------------


def fit(data: Path, out: Path | str, *extra: str) -> list[str]:
    return ["fit-location", "--data", str(data), "--components", "1", "--out", str(out), *extra]


@pytest.fixture()
def labels(tmp_path: Path) -> Path:
    folder = tmp_path / "labels"
    folder.mkdir()
    for i in range(3):
        _, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12), seed=i)
        label[16 + i : 19 + i, 15:18, 14:17] = 2
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / f"case_{i}.nii.gz")
    return folder


def test_fit_location_into_a_folder_that_takes_no_files_is_refused_before_fitting(
    tmp_path, labels, read_only, capsys, monkeypatch
) -> None:
    import tumorsweep.cli.synthesis as cli_synthesis

    no_work(monkeypatch, cli_synthesis, "fit_location_model")
    before = tree(tmp_path)
    assert main(fit(labels, read_only / "gmm.json")) == 2
    one_line(capsys, f"--out {read_only / 'gmm.json'}: cannot write into {read_only}")
    assert tree(tmp_path) == before


def test_fit_location_to_a_full_device_is_refused_before_fitting(
    tmp_path, labels, capsys, monkeypatch
) -> None:
    import tumorsweep.cli.synthesis as cli_synthesis

    no_work(monkeypatch, cli_synthesis, "fit_location_model")
    assert main(fit(labels, "/dev/full")) == 2
    one_line(capsys, "--out /dev/full: is not a regular file")


def test_fit_location_into_a_missing_folder_creates_it(tmp_path, labels, capsys) -> None:
    before = tree(tmp_path)
    out = tmp_path / "models" / "liver" / "gmm.json"
    assert main(fit(labels, out)) == 0
    written = set(tree(tmp_path)) - set(before)
    assert written == {"models/liver/gmm.json"}  # no temporary file left beside it
    assert '"format": "tumorsweep-location-gmm/2"' in out.read_text()


def test_fit_location_out_that_is_a_folder_or_an_input_is_refused(tmp_path, labels, capsys) -> None:
    before = tree(tmp_path)
    assert main(fit(labels, tmp_path)) == 2
    one_line(capsys, f"--out {tmp_path}: is a folder")
    assert main(fit(labels, labels / "case_0.nii.gz")) == 2
    one_line(capsys, "is one of the input label files")
    assert tree(tmp_path) == before


# --- train-generator -------------------------------------------------------------------------


@pytest.fixture()
def generator_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Cache and working folder in tmp; training made to fail loudly if it is reached."""
    import tumorsweep.difftumor.job as job

    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    no_work(monkeypatch, job, "run_job")
    (tmp_path / "store").mkdir()
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def test_train_generator_into_a_folder_that_takes_no_files_is_refused_before_training(
    tmp_path, read_only, generator_env, capsys
) -> None:
    out = read_only / "gen"
    assert main(["train-generator", "--out", str(out), "--tracking-uri", generator_env]) == 2
    one_line(capsys, f"--out {out}: cannot write into {read_only}")
    assert not (tmp_path / "store" / "mlflow.db").exists()


def test_a_second_train_generator_into_one_folder_is_refused_before_training(
    tmp_path, generator_env, capsys
) -> None:
    out = tmp_path / "gen"
    out.mkdir()  # the first run's generator
    (out / "generator.json").write_text("{}")
    before = tree(tmp_path)
    assert main(["train-generator", "--out", str(out), "--tracking-uri", generator_env]) == 2
    one_line(capsys, f"--out {out}: already exists; choose a new folder")
    assert tree(tmp_path) == before


def test_train_generator_while_another_writes_the_same_folder_is_refused_before_training(
    tmp_path, generator_env, capsys
) -> None:
    out = tmp_path / "gen"
    lock = tmp_path / ".gen.lock"
    with exclusive(lock, "the first run"):  # the first run is training into gen/
        assert main(["train-generator", "--out", str(out), "--tracking-uri", generator_env]) == 2
        one_line(capsys, f"--out {out}: another tumorsweep command is writing it now")
    assert not out.exists() and not lock.exists()


# --- report ----------------------------------------------------------------------------------


@pytest.fixture()
def store(tmp_path: Path) -> str:
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    tracking.ensure_experiment(uri, "sphere_ratio")
    return uri


def report(uri: str, out: Path | str) -> list[str]:
    return ["report", "--tracking-uri", uri, "--experiment", "sphere_ratio", "--out", str(out)]


def test_report_into_a_folder_that_takes_no_files_is_refused(
    tmp_path, store, read_only, capsys
) -> None:
    capsys.readouterr()
    before = tree(tmp_path)
    assert main(report(store, read_only)) == 2
    one_line(capsys, f"--out {read_only}: cannot write into {read_only}")
    assert tree(tmp_path) == before


def test_two_reports_into_one_folder_at_once_are_refused(
    tmp_path, store, capsys, monkeypatch
) -> None:
    import tumorsweep.cli.report as cli_report

    no_work(monkeypatch, cli_report, "build_report")
    out = tmp_path / "report"
    out.mkdir()
    capsys.readouterr()
    with exclusive(out / ".tumorsweep-report.lock", "the first report"):
        assert main(report(store, out)) == 2
        one_line(capsys, f"--out {out}: another tumorsweep command is writing it now")
    assert list(out.iterdir()) == []


def test_a_refused_report_leaves_no_new_folder(tmp_path, store, capsys) -> None:
    out = tmp_path / "new" / "report"
    capsys.readouterr()
    assert main(report(store, out)) == 2  # the experiment has no sweep
    one_line(capsys)
    assert not (tmp_path / "new" / "report").exists()
