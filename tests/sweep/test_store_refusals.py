"""MLflow stores are checked before anything opens them: a file that is not an MLflow store (an
empty file, another application's SQLite database, a text file) or a plain folder is refused
in one line by every command (report, predict, a sweep, train-generator), the file
byte-identical afterwards (MLflow would create its tables inside it); `--resume` checks that
the storage's sweep and the tracking store belong together before Ray starts or anything is
written. No Ray here."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from refusals_util import one_line, tree

from tumorsweep import preflight, tracking
from tumorsweep.cli import main
from tumorsweep.cli.study import main as sweep_main
from tumorsweep.errors import TumorsweepError
from tumorsweep.sweep.state import write_sweep_state


def other_app_db(path: Path) -> Path:
    """A SQLite database some other application owns."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        db.execute("INSERT INTO notes (text) VALUES ('keep me')")
    return path


def foreign_store(tmp_path: Path, kind: str) -> tuple[str, str]:
    """(tracking URI, the message expected) of a store that is not an MLflow store."""
    if kind == "empty-file":
        (tmp_path / "x.db").touch()
        return f"sqlite:///{tmp_path / 'x.db'}", "is an empty file, not an MLflow store"
    if kind == "other-app-db":
        other_app_db(tmp_path / "x.db")
        return f"sqlite:///{tmp_path / 'x.db'}", "SQLite database without MLflow's tables"
    if kind == "text-file":
        (tmp_path / "x.db").write_text("not a database\n")
        return f"sqlite:///{tmp_path / 'x.db'}", "is not an SQLite database"
    if kind == "plain-folder":
        (tmp_path / "runs").mkdir()
        (tmp_path / "runs" / "notes.txt").write_text("mine")
        return str(tmp_path / "runs"), "is a folder (MLflow's file store"
    assert kind == "plain-file"
    (tmp_path / "x.db").write_text("mine")
    return str(tmp_path / "x.db"), "is a file; an SQLite store is sqlite:///"


KINDS = ["empty-file", "other-app-db", "text-file", "plain-folder", "plain-file"]


@pytest.mark.parametrize("kind", KINDS)
def test_report_never_touches_a_store_that_is_not_mlflows(tmp_path, capsys, kind) -> None:
    uri, message = foreign_store(tmp_path, kind)
    before = tree(tmp_path)
    out = tmp_path / "report"
    args = ["report", "--tracking-uri", uri, "--experiment", "sphere_ratio", "--out", str(out)]
    assert main(args) == 2
    one_line(capsys, message)
    assert tree(tmp_path) == before and not out.exists()
    if kind == "empty-file":
        assert (tmp_path / "x.db").stat().st_size == 0  # MLflow would have made it ~1 MB


@pytest.mark.parametrize("kind", ["empty-file", "other-app-db", "plain-folder"])
def test_predict_never_touches_a_store_that_is_not_mlflows(
    tmp_path, phantom_dir, capsys, kind
) -> None:
    uri, message = foreign_store(tmp_path, kind)
    cts = tmp_path / "cts"
    cts.mkdir()
    shutil.copy(phantom_dir / "imagesTr" / "liver_2.nii.gz", cts / "liver_2.nii.gz")
    before = tree(tmp_path)
    out = tmp_path / "pred"
    args = ["predict", "--run", "abc", "--tracking-uri", uri, "--images", str(cts)]
    assert main([*args, "--out", str(out)]) == 2
    one_line(capsys, message)
    assert tree(tmp_path) == before and not out.exists()


@pytest.fixture()
def dataset(phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return phantom_dir


@pytest.mark.parametrize("kind", KINDS)
def test_a_sweep_never_writes_into_a_store_that_is_not_mlflows(
    dataset, tmp_path, capsys, kind
) -> None:
    uri, message = foreign_store(tmp_path, kind)
    before = tree(tmp_path)
    args = ["--data", str(dataset), "--preset", "demo", "--dry-run", "--tracking-uri", uri,
            "--storage", str(tmp_path / "ray")]  # fmt: skip
    assert sweep_main("sphere_ratio", args) == 2
    one_line(capsys, message)
    assert tree(tmp_path) == before and not (tmp_path / "ray").exists()


@pytest.mark.parametrize("kind", ["empty-file", "other-app-db"])
def test_train_generator_never_writes_into_a_store_that_is_not_mlflows(
    dataset, tmp_path, capsys, kind
) -> None:
    uri, message = foreign_store(tmp_path, kind)
    before = tree(tmp_path)
    out = tmp_path / "gen"
    assert main(["train-generator", "--tracking-uri", uri, "--out", str(out)]) == 2
    one_line(capsys, message)
    assert tree(tmp_path) == before and not out.exists()


def test_a_sweep_store_in_a_folder_that_takes_no_files_is_refused(
    dataset, tmp_path, capsys
) -> None:
    """/sys refuses new files even to root (a chmod'ed folder would not stop root)."""
    args = ["--data", str(dataset), "--preset", "demo", "--dry-run", "--tracking-uri",
            "sqlite:////sys/mlflow.db", "--storage", str(tmp_path / "ray")]  # fmt: skip
    assert sweep_main("sphere_ratio", args) == 2
    one_line(capsys, "--tracking-uri sqlite:////sys/mlflow.db: cannot write into /sys")
    assert not (tmp_path / "ray").exists()


# --- --resume: the storage's sweep and the tracking store must belong together ---------------


def interrupted_sweep(tmp_path: Path, experiment: str = "sphere_ratio") -> tuple[str, Path, str]:
    """A store holding a sweep's parent run, and a storage folder pointing at it."""
    (tmp_path / "a").mkdir()
    uri = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    parent = tracking.start_parent_run(
        uri, tracking.ensure_experiment(uri, experiment), "sweep", tags={}
    )
    storage = tmp_path / "ray"
    write_sweep_state(str(storage), "sphere_ratio", "sphere_ratio-20260101-000000", parent)
    return uri, storage, parent


def resume_args(data: Path, uri: str, storage: Path) -> list[str]:
    return ["--data", str(data), "--preset", "demo", "--resume", "--tracking-uri", uri,
            "--storage", str(storage)]  # fmt: skip


def test_resume_with_another_store_is_refused_before_ray(dataset, tmp_path, capsys) -> None:
    _, storage, parent = interrupted_sweep(tmp_path)
    (tmp_path / "b").mkdir()
    other = f"sqlite:///{tmp_path / 'b' / 'other.db'}"
    tracking.ensure_experiment(other, "sphere_ratio")  # a real MLflow store, another sweep's
    before = tree(tmp_path)
    capsys.readouterr()  # MLflow's own log lines while the stores were made
    assert sweep_main("sphere_ratio", resume_args(dataset, other, storage)) == 2
    one_line(capsys, f"--tracking-uri {other} is not the store of sweep", parent, "is not in it")
    assert tree(tmp_path) == before  # no experiment tag, no reopened run, no new state
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_resume_with_a_new_store_creates_nothing(dataset, tmp_path, capsys) -> None:
    _, storage, _ = interrupted_sweep(tmp_path)
    (tmp_path / "b").mkdir()
    fresh = f"sqlite:///{tmp_path / 'b' / 'new.db'}"
    capsys.readouterr()
    assert sweep_main("sphere_ratio", resume_args(dataset, fresh, storage)) == 2
    one_line(capsys, "is not the store of sweep")
    assert not (tmp_path / "b" / "new.db").exists()


def test_resume_whose_run_is_in_another_experiment_is_refused(dataset, tmp_path, capsys) -> None:
    uri, storage, _ = interrupted_sweep(tmp_path, experiment="elsewhere")
    before = tree(tmp_path)
    capsys.readouterr()
    assert sweep_main("sphere_ratio", resume_args(dataset, uri, storage)) == 2
    one_line(capsys, "belongs to experiment 'elsewhere'")
    assert tree(tmp_path) == before


def test_resume_without_an_earlier_sweep_is_refused_before_ray(dataset, tmp_path, capsys) -> None:
    (tmp_path / "a").mkdir()
    uri = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    assert sweep_main("sphere_ratio", resume_args(dataset, uri, tmp_path / "ray")) == 2
    one_line(capsys, "--resume: no earlier sweep of 'sphere_ratio' under")
    assert not (tmp_path / "a" / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_resume_with_a_damaged_state_file_is_refused(dataset, tmp_path, capsys) -> None:
    uri, storage, _ = interrupted_sweep(tmp_path)
    state = storage / "sphere_ratio-20260101-000000" / "tumorsweep_sweep.json"
    state.write_text("{not json")
    capsys.readouterr()
    assert sweep_main("sphere_ratio", resume_args(dataset, uri, storage)) == 2
    one_line(capsys, f"--resume: {state}: not a readable sweep state")


def test_the_right_store_passes_the_resume_check(tmp_path) -> None:
    uri, storage, _ = interrupted_sweep(tmp_path)
    before = tree(tmp_path)
    preflight.check_resume(str(storage), uri, "sphere_ratio")  # no refusal
    assert tree(tmp_path) == before
    with pytest.raises(TumorsweepError, match="no earlier sweep of 'texture'"):
        preflight.check_resume(str(storage), uri, "texture")
