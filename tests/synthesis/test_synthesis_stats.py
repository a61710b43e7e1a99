"""Statistical checks: blob counts and sizes per type, sphericity, texture, GMM placement."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from synthesis_util import liver_case, only  # tests/ is on the path

from tumorsweep.cli import main as cli_main
from tumorsweep.synthesis import LocationModel, fit_location_model, synthesize_tumors


def tumour_label(seed: int, centres) -> np.ndarray:
    _, label = liver_case(shape=(60, 56, 48), radii=(26, 24, 20), seed=seed)
    label = label.astype(np.int16)
    for c in centres:
        label[c[0] - 2 : c[0] + 3, c[1] - 2 : c[1] + 3, c[2] - 2 : c[2] + 3] = 2
    return label


def test_gmm_centres_land_where_training_tumours_were(tmp_path):
    rng = np.random.default_rng(0)
    # training tumours cluster in one corner region of the liver box
    labels = [
        tumour_label(i, [tuple(int(v) for v in rng.normal((20, 18, 30), 1.5))]) for i in range(25)
    ]
    model = fit_location_model(labels, n_components=1, covariance_type="diag", seed=0)
    model.save(tmp_path / "gmm.json")
    loaded = LocationModel.load(tmp_path / "gmm.json")
    assert json.loads((tmp_path / "gmm.json").read_text())["n_tumors"] == 25
    liver = tumour_label(99, []) >= 1
    centres = np.array([loaded.sample_centre(liver, rng, 600) for _ in range(200)])
    # the mean of drawn centres is within ~2 voxels of the training centre; a uniform rule
    # (middle 40% of z, anywhere in x/y) would put it near the liver centre (30, 28, 24)
    assert np.all(np.abs(centres.mean(axis=0) - (20, 18, 30)) < 2.5)
    assert np.all(liver[tuple(centres.T)])


def test_gmm_falls_back_to_uniform_on_a_tiny_liver():
    model = LocationModel(
        weights=[1.0], means=[[-500.0, -500.0, -500.0]], covariances=[np.eye(3).tolist()]
    )
    liver = np.zeros((10, 10, 10), bool)
    liver[3:7, 3:7, 3:7] = True
    centre = model.sample_centre(liver, np.random.default_rng(0), max_tries=20)
    assert liver[centre]


def test_cli_fit_location_and_synthesize_round_trip(tmp_path, capsys):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        lab = tumour_label(i, [tuple(int(v) for v in rng.normal((30, 28, 24), 3))])
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), labels_dir / f"l{i}.nii.gz")
    assert (
        cli_main(
            [
                "fit-location",
                "--data",
                str(labels_dir),
                "--components",
                "1",
                "--out",
                str(tmp_path / "gmm.json"),
            ]
        )
        == 0
    )
    image, label = liver_case(shape=(60, 56, 48), radii=(26, 24, 20))
    affine2 = np.diag([2.0, 2.0, 2.0, 1.0])  # 2 mm: resampled to 1 mm internally and back
    nib.save(nib.Nifti1Image(image, affine2), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, affine2), tmp_path / "liver.nii.gz")
    out = tmp_path / "out"
    code = cli_main(
        [
            "synthesize",
            "--image",
            str(tmp_path / "ct.nii.gz"),
            "--label",
            str(tmp_path / "liver.nii.gz"),
            "--out",
            str(out),
            "--tumor-type",
            "small",
            "--location",
            "gmm",
            "--location-model",
            str(tmp_path / "gmm.json"),
        ]
    )
    assert code == 0
    new_label = nib.load(out / "label.nii.gz")
    assert np.allclose(new_label.affine, affine2) and new_label.shape == label.shape
    assert np.asarray(new_label.dataobj).max() == 2 and (out / "preview.png").stat().st_size > 1000
    assert (
        cli_main(
            [
                "synthesize",
                "--image",
                str(tmp_path / "ct.nii.gz"),
                "--label",
                str(tmp_path / "liver.nii.gz"),
                "--out",
                str(out),
                "--sphere-ratio",
                "1.5",
            ]
        )
        == 2
    )
    assert "--sphere-ratio 1.5" in capsys.readouterr().err


def test_zhang_style_darkens_inside_the_liver_only():
    image, label = liver_case()
    config = only("medium", style="zhang")
    new_image, new_label = synthesize_tumors(image, label, config, np.random.default_rng(2))
    assert (new_label == 2).sum() > 0 and np.all(label[new_label == 2] == 1)
    assert np.array_equal(new_image[label == 0], image[label == 0])
    assert (image - new_image)[new_label == 2].mean() > 5


def test_smooth_field_from_byte_noise_is_a_unit_gaussian():
    from scipy import stats

    from tumorsweep.synthesis.texture import SmoothField

    rng = np.random.default_rng(3)
    for sigma in (4.0, 12.0):
        # one voxel per independent field: the marginal, free of spatial correlation
        values = np.array(
            [
                SmoothField(rng, sigma, (0, 0, 0), (2, 2, 2)).sample((1, 1, 1), (2, 2, 2))[0, 0, 0]
                for _ in range(1500)
            ]
        )
        assert abs(values.mean()) < 0.1 and abs(values.std() - 1) < 0.1
        assert abs(stats.skew(values)) < 0.2 and abs(stats.kurtosis(values)) < 0.4
