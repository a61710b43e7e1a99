"""`tumorsweep synthesize` on bad input: one line naming the file and the problem, exit 2, no
traceback, inputs byte-identical, nothing written; atomic outputs; `fit-location` records the
cases it was fitted on; importing the synthesis leaves matplotlib's backend alone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep.cli import main as cli_main
from tumorsweep.cli import synthesis as synthesis_cli
from tumorsweep.synthesis import LocationModel, fit_location_model


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_case(folder: Path, image=None, label=None, affine=None, names=("ct", "liver")):
    folder.mkdir(parents=True, exist_ok=True)
    good_image, good_label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    image = good_image if image is None else image
    label = good_label if label is None else label
    affine = np.eye(4) if affine is None else affine
    paths = [folder / f"{names[0]}.nii.gz", folder / f"{names[1]}.nii.gz"]
    nib.save(nib.Nifti1Image(image, affine), paths[0])
    nib.save(nib.Nifti1Image(label, np.eye(4) if affine is None else affine), paths[1])
    return paths


def run(image: Path, label: Path, out: Path, capsys) -> tuple[int, str]:
    code = cli_main(["synthesize", "--image", str(image), "--label", str(label), "--out", str(out)])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_out_folder_holding_the_inputs_is_refused(tmp_path, capsys):
    image, label = write_case(tmp_path, names=("image", "label"))
    before = [digest(image), digest(label)]
    code, err = run(image, label, tmp_path, capsys)
    assert_refused(code, err, "would overwrite the input", str(image.resolve()))
    assert [digest(image), digest(label)] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz", "label.nii.gz"]


def test_out_that_is_an_existing_file_is_refused(tmp_path, capsys):
    image, label = write_case(tmp_path / "in")
    target = tmp_path / "result"
    target.write_text("keep me")
    code, err = run(image, label, target, capsys)
    assert_refused(code, err, str(target), "not a folder")
    assert target.read_text() == "keep me"


def bad_case_ids():
    return ["nan image", "nan label", "fractional", "value 3", "negative", "shape", "affine", "4-D"]


@pytest.mark.parametrize("case", bad_case_ids())
def test_bad_input_is_refused_before_any_work(tmp_path, capsys, case):
    image, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    affine = None
    expected_file, needle = "liver", None
    if case == "nan image":
        image[20, 18, 16] = np.nan
        expected_file, needle = "ct", "NaN"
    elif case == "nan label":
        label = label.astype(np.float32)
        label[20, 18, 16] = np.nan
        needle = "NaN"
    elif case == "fractional":
        label = label.astype(np.float32)
        label[20, 18, 16] = 0.5
        needle = "non-integer values"
    elif case == "value 3":
        label[20, 18, 16] = 3
        needle = "label values 3 outside"
    elif case == "negative":
        label = label.astype(np.int16)
        label[20, 18, 16] = -1
        needle = "label values -1 outside"
    elif case == "shape":
        label = label[:, :, :30]
        expected_file, needle = "liver", "shape"
    elif case == "4-D":
        label = label[..., None]
        needle = "3-D"
    paths = write_case(tmp_path / "in", image, label)
    if case == "affine":
        nib.save(nib.Nifti1Image(label, np.diag([2.0, 1.0, 1.0, 1.0])), paths[1])
        needle = "affines differ"
    before = [digest(p) for p in paths]
    out = tmp_path / "out"
    code, err = run(*paths, out, capsys)
    assert_refused(code, err, str(tmp_path / "in" / f"{expected_file}.nii.gz"), needle)
    assert [digest(p) for p in paths] == before
    assert not out.exists()
    del affine


def test_outputs_are_written_atomically(tmp_path, capsys, monkeypatch):
    image, label = write_case(tmp_path / "in")
    out = tmp_path / "out"

    def broken_save(img, filename):  # writes half a file, then the run is interrupted
        Path(filename).write_bytes(b"\x1f\x8b half")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthesis_cli.nib, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        run(image, label, out, capsys)
    assert list(out.iterdir()) == []  # no half-written output, no temporary file left
    monkeypatch.undo()
    assert run(image, label, out, capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["image.nii.gz", "label.nii.gz", "preview.png"]
    assert nib.load(out / "label.nii.gz").get_fdata().max() == 2


def test_fit_location_records_the_cases_it_was_fitted_on(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        _, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12), seed=i)
        c = [int(v) for v in rng.integers(14, 20, size=3)]
        label[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] - 1 : c[2] + 2] = 2
        nib.save(nib.Nifti1Image(label, np.eye(4)), labels / f"case_{i}.nii.gz")
    out = tmp_path / "gmm.json"
    args = ["fit-location", "--data", str(labels), "--components", "1", "--out", str(out)]
    assert cli_main(args) == 0
    payload = json.loads(out.read_text())
    assert payload["format"] == "tumorsweep-location-gmm/2"
    assert [e["case"] for e in payload["fitted_on"]] == [f"case_{i}" for i in range(4)]
    assert payload["fitted_on"][0]["label"] == str((labels / "case_0.nii.gz").resolve())
    model = LocationModel.load(out)
    assert model.fitted_on == tuple(f"case_{i}" for i in range(4))
    assert model.fitted_on_labels[3] == str((labels / "case_3.nii.gz").resolve())
    # the old format still loads, with the fitted-on cases unknown
    del payload["fitted_on"]
    payload["format"] = "tumorsweep-location-gmm/1"
    out.write_text(json.dumps(payload))
    old = LocationModel.load(out)
    assert old.fitted_on is None and old.fitted_on_labels is None
    assert old.means == model.means


def test_fit_location_model_takes_case_names_for_arrays():
    rng = np.random.default_rng(1)
    arrays = []
    for i in range(3):
        _, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12), seed=i)
        c = [int(v) for v in rng.integers(14, 20, size=3)]
        label[c[0], c[1], c[2]] = 2
        arrays.append(label)
    named = fit_location_model(arrays, 1, "diag", cases=["a", "b", "c"])
    assert named.fitted_on == ("a", "b", "c") and named.fitted_on_labels == ("", "", "")
    assert fit_location_model(arrays, 1, "diag").fitted_on is None
    with pytest.raises(Exception, match="2 case names for 3 labels"):
        fit_location_model(arrays, 1, "diag", cases=["a", "b"])


def test_importing_the_synthesis_leaves_matplotlib_alone(tmp_path):
    code = (
        "import sys, matplotlib, tumorsweep.synthesis, numpy as np\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "label = np.zeros((8, 8, 8), np.uint8); label[2:6, 2:6, 2:6] = 1; label[4, 4, 4] = 2\n"
        "tumorsweep.synthesis.save_preview(\n"
        f"    np.zeros((8, 8, 8)), label, {str(tmp_path / 'p.png')!r})\n"
        "assert matplotlib.get_backend() == 'svg' and 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
