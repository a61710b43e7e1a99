"""What a sweep refuses before Ray starts, dry runs included: one line naming the file, flag
or field, exit 2, no traceback, the dataset byte-identical and nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorsweep.cli.study import main
from tumorsweep.sweep.state import safe_name, write_sweep_state
from tumorsweep.synthesis import LocationModel


@pytest.fixture()
def dataset(phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the session phantom (cases are edited), the check cache in tmp."""
    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copytree(phantom_dir, tmp_path / "data"))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _dry_run(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--preset", "demo", "--dry-run",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--storage", str(tmp_path / "ray"), *extra,
    ]  # fmt: skip


def _edit_label(data: Path, case: int, change) -> None:
    path = data / f"labelsTr/liver_{case}.nii.gz"
    image = nib.load(path)
    edited = change(np.asarray(image.dataobj).astype(np.float32))
    nib.save(nib.Nifti1Image(edited, image.affine), path)


def _refused(args: list[str], data: Path, tmp_path: Path, capsys, message: str) -> None:
    before = _hashes(data)
    assert main("sphere_ratio", args) == 2
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1
    assert _hashes(data) == before
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_a_clean_dry_run_lists_the_trials_and_writes_nothing(dataset, tmp_path, capsys) -> None:
    assert main("sphere_ratio", _dry_run(dataset, tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.count("  trial:") == 7 and "nothing ran" in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()
    # the second run reads the per-case check results from the cache (keyed by content)
    cached = list((tmp_path / "cache" / "checks").glob("*.json"))
    assert len(cached) == 9
    started = time.perf_counter()
    assert main("sphere_ratio", _dry_run(dataset, tmp_path)) == 0
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: _edit_label(d, 0, lambda a: np.where(a == 1, 3, a)), "label values 3 outside"),
        (lambda d: _edit_label(d, 1, lambda a: np.where(a == 1, np.nan, a)), "NaN or infinite"),
        (lambda d: _edit_label(d, 2, np.zeros_like), "empty liver"),
        (lambda d: _edit_label(d, 3, lambda a: a * 0.5), "non-integer values"),
        (
            lambda d: (d / "imagesTr/liver_4.nii.gz").write_bytes(
                (d / "imagesTr/liver_4.nii.gz").read_bytes()[:3000]
            ),
            "liver_4.nii.gz: cannot read voxel data",
        ),
    ],
    ids=["label-3", "nan", "empty-liver", "fractional", "truncated"],
)
def test_broken_case_contents_are_refused_in_a_dry_run(
    dataset, tmp_path, capsys, edit, message
) -> None:
    edit(dataset)
    _refused(_dry_run(dataset, tmp_path), dataset, tmp_path, capsys, message)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers-per-trial", "0"], "--workers-per-trial 0: must be >= 1"),
        (["--workers-per-trial", "64"], "64 CPUs per trial, but this machine has"),
        (["--cpus-per-worker", "0"], "--cpus-per-worker 0: must be >= 1"),
        (["--seeds", "-1"], "--seeds -1: must be >= 0"),
        (["--gpus-per-trial", "-1"], "--gpus-per-worker -1: must be >= 0"),
        (
            ["--set", "model.name=swin_unetr_base", "--set", "model.pretrained=/no/such.pt"],
            "model.pretrained: file not found: /no/such.pt",
        ),
        (["--set", "eval.select_metric=val_tumour_dice"], "unknown selection metric"),
        (["--set", "data.real_fraction=1", "--set", "eval.select_on=test"], "test list"),
        (
            [
                "--folds",
                "3",
                "--set",
                "synthesis.style=difftumor",
                "--set",
                "synthesis.generator=auto",
            ],
            "synthesis.generator=auto with --folds",
        ),  # fmt: skip
    ],
)
def test_bad_flags_and_fields_are_refused(dataset, tmp_path, capsys, extra, message) -> None:
    _refused(_dry_run(dataset, tmp_path, *extra), dataset, tmp_path, capsys, message)


def test_one_fixed_fold_is_one_sweep_whose_auto_generator_sees_only_that_fold(
    dataset, tmp_path, capsys
) -> None:
    extra = ["--folds", "3", "--set", "data.fold=1", "--set", "synthesis.style=difftumor",
             "--set", "synthesis.generator=auto"]  # fmt: skip
    assert main("sphere_ratio", _dry_run(dataset, tmp_path, *extra)) == 0
    out = capsys.readouterr().out
    assert "Data: fold 1:" in out and "fold 0" not in out and "fold 2" not in out
    assert "x 3 folds" not in out and "DiffTumor generator: would train" in out


def test_a_tracking_store_in_a_missing_folder_is_not_created(dataset, tmp_path, capsys) -> None:
    args = _dry_run(dataset, tmp_path)
    args[args.index("--tracking-uri") + 1] = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    _refused(args, dataset, tmp_path, capsys, "folder")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--address", "127.0.0.1:1"), ("--tracking-uri", "http://127.0.0.1:1")],
)
def test_unreachable_cluster_or_server_fails_within_seconds(
    dataset, tmp_path, capsys, flag, value
) -> None:
    args = _dry_run(dataset, tmp_path)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    started = time.perf_counter()
    _refused(args, dataset, tmp_path, capsys, f"{flag} {value}: nothing answers at 127.0.0.1:1")
    assert time.perf_counter() - started < 30


def test_experiment_names_never_escape_the_storage_folder(tmp_path) -> None:
    assert safe_name("../../x") == "x" and safe_name("/abs/name") == "abs_name"
    assert safe_name("..") == "experiment" and safe_name("sphere_ratio") == "sphere_ratio"
    storage = tmp_path / "storage"
    write_sweep_state(str(storage), "../../evil", "evil-20260101-000000", "run123")
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        Path("storage/evil-20260101-000000/tumorsweep_sweep.json"),
        Path("storage/evil.latest"),
    ]
    state = json.loads((storage / "evil-20260101-000000" / "tumorsweep_sweep.json").read_text())
    assert state == {"parent_run_id": "run123", "experiment": "../../evil"}


def test_a_location_model_fitted_on_held_out_cases_is_refused(dataset, tmp_path, capsys) -> None:
    from tumorsweep.cli import main as tool

    description = json.loads((dataset / "dataset.json").read_text())
    held_out = [e["label"] for e in description["validation"] + description["test"]]
    study_fit = tmp_path / "train_only.json"
    assert tool(["fit-location", "--data", str(dataset), "--components", "1",
                 "--out", str(study_fit)]) == 0  # fmt: skip
    fitted_on = LocationModel.load(study_fit).fitted_on
    training_tumours = [e for e in description["training"] if e["tumor"]]
    assert sorted(fitted_on) == sorted(Path(e["label"]).name[:-7] for e in training_tumours)
    labels = tmp_path / "every_label"  # a folder of all labels: test cases included
    labels.mkdir()
    for path in (dataset / "labelsTr").glob("*.nii.gz"):
        shutil.copy(path, labels / path.name)
    leaky = tmp_path / "leaky.json"
    assert tool(["fit-location", "--data", str(labels), "--components", "1",
                 "--out", str(leaky)]) == 0  # fmt: skip
    capsys.readouterr()
    gmm = ["--set", "synthesis.location=gmm"]
    ok = _dry_run(dataset, tmp_path, *gmm, "--set", f"synthesis.location_model={study_fit}")
    assert main("sphere_ratio", ok) == 0
    refused = _dry_run(dataset, tmp_path, *gmm, "--set", f"synthesis.location_model={leaky}")
    held = Path(held_out[0]).name[:-7]
    _refused(refused, dataset, tmp_path, capsys, "fitted on validation/test cases")
    assert main("sphere_ratio", [*refused, "--set", "data.allow_overlap=true"]) == 0
    assert held in LocationModel.load(leaky).fitted_on
