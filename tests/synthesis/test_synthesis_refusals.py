"""`synthesize` and `fit-location` inputs that used to end in a numpy, scikit-learn or EOF
traceback or a misleading message: a location model of the wrong dimension or with
non-finite values, `--location gmm` without a model, NaN/inf knobs, a truncated label,
`--components 0`; and checkpoints holding code refused without torch's advice to load them
with `weights_only=False`. One line each, exit 2, inputs byte-identical, nothing written."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from refusals_util import one_line, tree
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep.cli import main
from tumorsweep.cli.study import main as sweep_main
from tumorsweep.errors import TumorsweepError
from tumorsweep.synthesis import LocationModel


@pytest.fixture()
def case(tmp_path: Path) -> list[str]:
    image, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "in" / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "in" / "liver.nii.gz")
    return ["synthesize", "--image", str(tmp_path / "in" / "ct.nii.gz"), "--label",
            str(tmp_path / "in" / "liver.nii.gz"), "--out", str(tmp_path / "out")]  # fmt: skip


def model_file(tmp_path: Path, change) -> Path:
    model = LocationModel(weights=[1.0], means=[[140.0, 120.0, 70.0]],
                          covariances=[np.eye(3).tolist()])  # fmt: skip
    path = tmp_path / "gmm.json"
    model.save(path)
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))
    return path


def refused(args: list[str], tmp_path: Path, capsys, *needles: str) -> None:
    before = tree(tmp_path)
    assert main(args) == 2
    one_line(capsys, *needles)
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p.update(means=[[1.0, 2.0]], covariances=[[[1.0, 0.0], [0.0, 1.0]]]),
            "means and covariances must be 3-D (3 and 3x3 per component), found dimension(s) [2]",
        ),
        (lambda p: p.update(means=[[1.0, 2.0, 3.0, 4.0]]), "found dimension(s) [3, 4]"),
        (lambda p: p.update(weights=[float("nan")]), "every value finite"),
        (lambda p: p.update(weights=[-1.0]), "weights must be >= 0 with a positive sum"),
    ],
    ids=["2-D", "4-D-mean", "nan-weight", "negative-weight"],
)
def test_a_location_model_that_cannot_be_sampled_is_refused(
    tmp_path, case, capsys, change, message
) -> None:
    path = model_file(tmp_path, change)
    args = [*case, "--location", "gmm", "--location-model", str(path)]
    refused(args, tmp_path, capsys, f"location model {path}", message)


def test_gmm_without_a_model_is_refused(tmp_path, case, capsys) -> None:
    refused([*case, "--location", "gmm"], tmp_path, capsys, "--location gmm needs --location-model")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sphere-ratio", "nan"], "--sphere-ratio nan: Input should be a finite number"),
        (["--sphere-ratio", "inf"], "--sphere-ratio inf: Input should be a finite number"),
        (["--sphere-ratio", "1.5"], "--sphere-ratio 1.5: Input should be less than or equal to 1"),
        (["--hu-drop", "nan", "60"], "--hu-drop low nan: Input should be a finite number"),
    ],
    ids=["nan", "inf", "above-1", "hu-drop-nan"],
)
def test_non_finite_or_out_of_range_knobs_are_named(tmp_path, case, capsys, extra, message) -> None:
    refused([*case, *extra], tmp_path, capsys, message)


def test_a_sweep_refuses_a_nan_field(phantom_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path / "cache"))
    args = ["--data", str(phantom_dir), "--dry-run", "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--set", "schedule.lr=nan"]  # fmt: skip
    assert sweep_main("sphere_ratio", args) == 2
    one_line(capsys, "schedule.lr", "finite number")
    assert not (tmp_path / "mlflow.db").exists()


# --- fit-location ----------------------------------------------------------------------------


@pytest.fixture()
def labels(tmp_path: Path) -> Path:
    folder = tmp_path / "labels"
    folder.mkdir()
    for i in range(3):
        _, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12), seed=i)
        label[16 + i : 19 + i, 15:18, 14:17] = 2
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / f"case_{i}.nii.gz")
    return folder


def fit(labels: Path, tmp_path: Path, components: str = "1") -> list[str]:
    return ["fit-location", "--data", str(labels), "--components", components,
            "--out", str(tmp_path / "out")]  # fmt: skip


def test_fit_location_on_a_truncated_label_is_refused(tmp_path, labels, capsys) -> None:
    path = labels / "case_1.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    refused(fit(labels, tmp_path), tmp_path, capsys, f"{path}: cannot read voxel data")


def test_fit_location_on_a_label_with_value_3_is_refused(tmp_path, labels, capsys) -> None:
    path = labels / "case_2.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, image.affine), path)
    refused(fit(labels, tmp_path), tmp_path, capsys, f"{path}: label values 3 outside")


@pytest.mark.parametrize("components", ["0", "-2"])
def test_fit_location_needs_a_component(tmp_path, labels, capsys, components) -> None:
    refused(fit(labels, tmp_path, components), tmp_path, capsys,
            f"--components {components}: must be >= 1")  # fmt: skip


def test_fit_location_with_more_components_than_tumours_is_refused(
    tmp_path, labels, capsys
) -> None:
    refused(fit(labels, tmp_path, "5"), tmp_path, capsys, "3 tumours found", "need at least 5")


# --- checkpoints holding code ----------------------------------------------------------------


class _Code:
    """Not a tensor: a file holding it cannot load weights-only."""


def test_a_pretrained_file_holding_code_is_refused_before_the_sweep(
    phantom_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Code()}, weights)
    args = ["--data", str(phantom_dir), "--preset", "demo", "--dry-run", "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--set", "model.name=swin_unetr_base",
            "--set", f"model.pretrained={weights}"]  # fmt: skip
    assert sweep_main("sphere_ratio", args) == 2
    err = one_line(capsys, f"model.pretrained: {weights}: holds pickled code")
    assert "weights_only=False" not in err and not (tmp_path / "mlflow.db").exists()


def test_a_trainer_checkpoint_holding_code_is_refused_without_torchs_hint(tmp_path) -> None:
    from tumorsweep.session import CHECKPOINT_FILE, load_state

    torch.save({"epoch": 1, "extra": _Code()}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(TumorsweepError) as refusal:
        load_state(tmp_path)
    assert "holds pickled code" in str(refusal.value)
    assert "weights_only=False" not in str(refusal.value)
    shutil.rmtree(tmp_path)
