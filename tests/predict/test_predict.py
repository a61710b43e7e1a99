"""tumorsweep predict on real NIfTI files: image-only prediction on each CT's own grid, ensembles
that average probabilities, label files that nibabel and MONAI load over the CT, volumes, and
refusals that write nothing (weights and configs saved here as a trial saves them)."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from tumorsweep.cli import main
from tumorsweep.cli.predict import progress
from tumorsweep.config import make_config, to_yaml
from tumorsweep.data.transforms import eval_transforms
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import predict_image
from tumorsweep.models import build
from tumorsweep.predict import label_volumes, load_trained, predict_ct

SMALL = {
    "data.spacing": (2.0, 2.0, 2.0),
    "model.options": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
    "eval.roi": (32, 32, 32),
    "eval.overlap": 0.25,
}


def _save_model(folder: Path, seed: int = 0, **overrides: object) -> Path:
    """A model folder as a trial logs it: model/best_weights.pt (state dict) + config.yaml."""
    cfg = make_config("demo", {**SMALL, **overrides})
    torch.manual_seed(seed)
    network = build(cfg.model.name, None, **cfg.model.options)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), folder / "best_weights.pt")
    (folder / "config.yaml").write_text(to_yaml(cfg))
    return folder / "best_weights.pt"


def _digest(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture()
def cts(tmp_path: Path, phantom_dir: Path) -> dict[str, Path]:
    """Two phantom CTs (int16 HU, RAS) in a folder and an oblique LPS int16 CT stored with a
    -1024 intercept, each a different grid."""
    folder = tmp_path / "cts"
    folder.mkdir()
    for name in ("liver_0", "liver_7"):
        shutil.copy(phantom_dir / "imagesTr" / f"{name}.nii.gz", folder / f"{name}.nii.gz")
    angle = np.deg2rad(12.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag([2.5, 1.8, 3.0])
    affine[:3, 3] = [60.0, 40.0, -30.0]
    stored = np.full((30, 36, 16), 24, np.int16)  # -1000 HU
    stored[6:24, 8:28, 3:13] = 1024 + 120  # liver-like block
    image = nib.Nifti1Image(stored, affine)
    image.header.set_slope_inter(1.0, -1024.0)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    oblique = tmp_path / "oblique_ct.nii"
    nib.save(image, oblique)
    return {"folder": folder, "oblique": oblique}


def _inputs(cts: dict[str, Path]) -> list[Path]:
    return sorted(cts["folder"].iterdir()) + [cts["oblique"]]


class NearestIntensity(torch.nn.Module):
    """Logits = minus squared distance of the windowed intensity to each class's value
    (background -100 HU -> 0, liver 120 HU, tumour 50 HU under the (-21, 189) window)."""

    centres = torch.tensor([0.0, 141 / 210, 71 / 210])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -100.0 * (x - self.centres.view(1, 3, 1, 1, 1).to(x)) ** 2


def test_predict_image_needs_no_label_and_lands_on_the_ct_grid(tmp_path: Path) -> None:
    """An LPS, anisotropic CT through the production evaluation chain with no label file:
    resampled to 1 mm (integer up-sampling) and inverted, the labels are exactly the truth."""
    labels = np.zeros((14, 12, 9), np.uint8)
    labels[2:11, 3:10, 1:7] = 1
    labels[3:6, 4:6, 2:4] = 2
    labels[9, 8, 5] = 2
    affine = np.diag([-2.0, -1.0, 3.0, 1.0])
    affine[:3, 3] = [40.0, 30.0, -20.0]
    path = tmp_path / "case_7.nii.gz"
    nib.save(nib.Nifti1Image(np.choose(labels, [-100.0, 120.0, 50.0]), affine), path)
    pred = predict_image(
        NearestIntensity(), path, eval_transforms((1.0, 1.0, 1.0)), roi=(8, 8, 8), overlap=0.5,
        postprocess=False,
    )  # fmt: skip
    assert pred.dtype == np.uint8
    np.testing.assert_array_equal(pred, labels)


class ConstantLogits(torch.nn.Module):
    """Logits `low` where the windowed CT is 0 and `high` where it is 1, per class."""

    def __init__(self, low: list[float], high: list[float]) -> None:
        super().__init__()
        self.low = torch.tensor(low).view(1, 3, 1, 1, 1)
        self.high = torch.tensor(high).view(1, 3, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.low * (1 - x) + self.high * x


def test_an_ensemble_averages_probabilities_not_logits_or_labels(tmp_path: Path) -> None:
    """Region 0: one member is sure of tumour (logit 100), two mildly favour liver: mean
    logits say tumour, mean probabilities liver. Region 1: two members mildly favour tumour,
    one is sure of liver: a vote of labels says tumour, mean probabilities liver."""
    a_low, b_low = [0.0, 0.0, 100.0], [0.0, 3.0, 0.0]
    a_high, b_high = [0.0, 10.0, 0.0], [0.0, 0.0, 0.5]
    members = [ConstantLogits(a_low, a_high), ConstantLogits(b_low, b_high)]
    members.append(ConstantLogits(b_low, b_high))
    ct = np.full((8, 8, 8), -500.0, np.float32)  # windowed to 0
    ct[4:] = 500.0  # windowed to 1
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ct, np.diag([2.0, 2.0, 2.0, 1.0])), path)

    def softmax(logits: list[float]) -> np.ndarray:
        e = np.exp(np.array(logits) - max(logits))
        return e / e.sum()

    expected = {}
    for region, lists in ((0, (a_low, b_low, b_low)), (1, (a_high, b_high, b_high))):
        probabilities = np.mean([softmax(v) for v in lists], axis=0)
        logits, votes = np.mean(lists, axis=0), [int(np.argmax(v)) for v in lists]
        expected[region] = int(np.argmax(probabilities))
        assert expected[region] == 1
        assert int(np.argmax(logits)) == 2 if region == 0 else max(votes, key=votes.count) == 2
    chain = eval_transforms((2.0, 2.0, 2.0))
    pred = predict_image(members, path, chain, roi=(8, 8, 8), overlap=0.0, postprocess=False)
    assert (pred[:4] == expected[0]).all() and (pred[4:] == expected[1]).all()
    alone = predict_image(members[0], path, chain, roi=(8, 8, 8), overlap=0.0, postprocess=False)
    assert (alone[:4] == 2).all() and (alone[4:] == 1).all()  # a member alone: its own argmax


def test_label_volumes_count_millilitres_and_tumours() -> None:
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[2:18, 2:18, 1:9] = 1  # 16 * 16 * 8 = 2048 voxels of liver
    labels[4:6, 4:6, 2:4] = 2  # tumour A: 8 voxels
    labels[6, 6, 4] = 2  # touches A at a corner only: same tumour (26-connected)
    labels[12:15, 12:15, 5:7] = 2  # tumour B: 18 voxels
    affine = np.eye(4)
    angle = np.deg2rad(30.0)
    rotation = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    affine[:3, :3] = np.array(rotation) @ np.diag([0.8, 0.8, 2.5])  # 1.6 mm^3 per voxel
    volumes = label_volumes(labels, affine)
    assert volumes["liver_ml"] == pytest.approx(2048 * 1.6 / 1000, rel=1e-12)
    assert volumes["tumor_ml"] == pytest.approx(27 * 1.6 / 1000, rel=1e-12)
    assert volumes["tumor_count"] == 2


def test_cli_writes_labels_on_each_ct_grid_and_volumes(
    tmp_path: Path, cts: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    from monai.transforms import LoadImage

    weights = _save_model(tmp_path / "model")
    inputs = _inputs(cts)
    before = _digest(inputs)
    out = tmp_path / "labels"
    args = ["predict", "--checkpoint", str(weights), "--images", str(cts["folder"])]
    assert main([*args, str(cts["oblique"]), "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "predict: 100%" in captured.err and "3/3" in captured.err  # tqdm's bar
    assert "s per case" in captured.out
    assert _digest(inputs) == before
    assert sorted(p.name for p in out.iterdir()) == [
        "liver_0.nii.gz", "liver_7.nii.gz", "oblique_ct.nii.gz", "volumes.csv",
    ]  # fmt: skip
    volumes = pd.read_csv(out / "volumes.csv").set_index("case")
    model = load_trained(weights, weights.parent / "config.yaml", "test")
    load = LoadImage(image_only=True)
    for image in inputs:
        written = nib.load(out / volumes.loc[image.name.split(".")[0], "labels"])
        ct = nib.load(image)
        assert written.shape == ct.shape and written.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(written.affine, ct.affine)
        for form in ("get_qform", "get_sform"):
            assert int(getattr(written, form)(coded=True)[1]) == int(
                getattr(ct, form)(coded=True)[1]
            )
            np.testing.assert_allclose(getattr(written, form)(), getattr(ct, form)(), atol=1e-6)
        labels = np.asarray(written.dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2}
        np.testing.assert_array_equal(labels, predict_ct([model], image))
        monai_labels, monai_ct = load(str(out / f"{image.name.split('.')[0]}.nii.gz")), load(image)
        assert monai_labels.shape == monai_ct.shape
        np.testing.assert_allclose(monai_labels.affine, monai_ct.affine, atol=1e-6)
        voxel_ml = abs(np.linalg.det(ct.affine[:3, :3])) / 1000
        row = volumes.loc[image.name.split(".")[0]]
        assert row["liver_ml"] == pytest.approx(np.count_nonzero(labels >= 1) * voxel_ml)
        assert row["tumor_ml"] == pytest.approx(np.count_nonzero(labels == 2) * voxel_ml)
        assert row["image"] == str(image)


def test_progress_without_tqdm_prints_a_line_per_case(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    assert list(progress([Path("a.nii.gz"), Path("b.nii")])) == [Path("a.nii.gz"), Path("b.nii")]
    assert capsys.readouterr().out == "[1/2] a.nii.gz\n[2/2] b.nii\n"


class Code:
    """Not a tensor: a checkpoint holding it cannot load with weights_only=True."""


def _bad_inputs(case: str, tmp: Path, cts: dict[str, Path]) -> tuple[list[str], Path, str]:
    """(arguments, --out, expected message) of one refusal."""
    weights = _save_model(tmp / "model")
    out = tmp / "out"
    images = [str(cts["folder"])]
    extra: list[str] = []
    if case == "4-D":
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), np.eye(4)), tmp / "cine.nii")
        images, message = [str(tmp / "cine.nii")], "expected a 3-D volume, got 4-D"
    elif case == "label map":
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.eye(4)), tmp / "seg.nii.gz")
        images, message = [*images, str(tmp / "seg.nii.gz")], "a label map, not a CT"
    elif case == "not NIfTI":
        (tmp / "notes.txt").write_text("CT")
        images, message = [str(tmp / "notes.txt")], "not a NIfTI file"
    elif case == "one case twice":
        (tmp / "b").mkdir()
        shutil.copy(cts["folder"] / "liver_0.nii.gz", tmp / "b" / "liver_0.nii")
        images, message = [*images, str(tmp / "b")], "case liver_0 twice"
    elif case == "out is the images folder":
        out, message = cts["folder"], "is an --images folder"
    elif case == "out overwrites an input":
        shutil.copy(cts["folder"] / "liver_0.nii.gz", tmp / "liver_0.nii.gz")
        images, out = [str(tmp / "liver_0.nii.gz")], tmp
        message = "would overwrite the input"
    elif case == "mismatched checkpoint":
        options = {**SMALL["model.options"], "channels": [8, 16, 64]}
        other = _save_model(tmp / "other", **{"model.options": options})
        shutil.copy(other, weights)
        message = "does not match model.name=unet"
    elif case == "pickled code":
        torch.save({"model": Code()}, weights)
        message = "holds pickled code or Python objects other than tensors"
    elif case == "no config":
        (weights.parent / "config.yaml").unlink()
        message = "no config.yaml beside it; give its --config"
    elif case == "bad config":
        (weights.parent / "config.yaml").write_text("eval:\n  overlap: 1.5\n")
        message = "eval.overlap = 1.5"
    elif case == "ensemble disagrees":
        second = _save_model(tmp / "second", **{"eval.overlap": 0.5})
        extra, message = [str(second)], "overlap 0.5 differs from 0.25"
    else:
        extra, message = ["--device", "cuda"], "--device cuda: no CUDA device"
    args = ["predict", "--checkpoint", str(weights), *extra, "--images", *images]
    return [*args, "--out", str(out)], out, message


REFUSALS = [
    "4-D", "label map", "not NIfTI", "one case twice", "out is the images folder",
    "out overwrites an input", "mismatched checkpoint", "pickled code", "no config", "bad config",
    "ensemble disagrees", "no cuda",
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, tmp_path: Path, cts: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    tmp = tmp_path / "work"
    tmp.mkdir()
    args, out, message = _bad_inputs(case, tmp, cts)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    before = _digest(files)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tumorsweep predict: error: ") and "\n" not in err
    assert message in err and "weights_only=False" not in err  # never advise running code
    assert _digest([p for p in tmp_path.rglob("*") if p.is_file()]) == before  # nothing new
    assert out.exists() == (out in (cts["folder"], tmp))


def test_no_weights_is_refused(tmp_path: Path, cts: dict[str, Path], capsys) -> None:
    assert main(["predict", "--images", str(cts["folder"]), "--out", str(tmp_path / "o")]) == 2
    assert "no weights given: pass --run, --model or --checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_trainer_checkpoint_gives_its_selected_weights(tmp_path: Path) -> None:
    """state.pt of a trial (weights, optimiser, ..., best_weights) loads its selected weights."""
    weights = _save_model(tmp_path / "m", seed=1)
    selected = torch.load(weights, weights_only=True)
    latest = {k: torch.zeros_like(v) for k, v in selected.items()}
    torch.save({"model": latest, "best_weights": selected, "epoch": 4}, tmp_path / "state.pt")
    model = load_trained(tmp_path / "state.pt", tmp_path / "m" / "config.yaml", "state.pt")
    for name, value in model.network.state_dict().items():
        assert torch.equal(value, selected[name])
    assert model.config == make_config("demo", SMALL)  # the config round-trips through YAML
    with pytest.raises(TumorsweepError, match="file not found"):
        load_trained(tmp_path / "nope.pt", tmp_path / "m" / "config.yaml", "x")


def test_a_config_logged_before_texture_draws_reads_as_what_it_ran(tmp_path: Path) -> None:
    """Texture-study trials logged before `synthesis.texture.draws` swept u0 with per-event
    draws; their config.yaml (every field but that one) reads as per_event, while a config
    written now with that u0 and public_bank draws is refused naming the field."""
    import yaml

    from tumorsweep.predict import read_config

    cfg = make_config("demo", {"synthesis.texture.draws": "per_event"})
    tree = yaml.safe_load(to_yaml(cfg))
    tree["synthesis"]["texture"]["u0"] = {"low": 0.41, "high": 0.63}
    old = dict(tree, synthesis=dict(tree["synthesis"]))
    old["synthesis"]["texture"] = {
        k: v for k, v in tree["synthesis"]["texture"].items() if k != "draws"
    }
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    read = read_config(tmp_path / "old.yaml")
    assert read.synthesis.texture.draws == "per_event"
    assert (read.synthesis.texture.u0.low, read.synthesis.texture.u0.high) == (0.41, 0.63)
    tree["synthesis"]["texture"]["draws"] = "public_bank"
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(TumorsweepError, match=r"new.yaml: .*u0.*draws=per_event"):
        read_config(tmp_path / "new.yaml")
