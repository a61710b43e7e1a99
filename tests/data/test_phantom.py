"""Phantom CT generator: anatomy statistics, labels, determinism, geometry, files on disk."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tumorsweep.data.phantom import make_phantom_case, tumor_partition, write_phantom_dataset
from tumorsweep.errors import TumorsweepError

SMALL = ((64, 64, 48), (2.0, 2.0, 2.0))  # 128 x 128 x 96 mm, like the default case


@pytest.fixture(scope="module")
def tumor_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        make_phantom_case(np.random.default_rng(seed), *SMALL, with_tumors=True)
        for seed in range(4)
    ]


def test_healthy_case_has_liver_only_labels() -> None:
    image, label = make_phantom_case(np.random.default_rng(7), *SMALL)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape == label.shape == SMALL[0]
    assert set(np.unique(label)) == {0, 1}
    assert 0.04 < (label == 1).mean() < 0.2  # the liver is a decent share of the volume


def test_organ_intensities_are_abdominal_ct(tumor_cases) -> None:
    for image, label in tumor_cases:
        liver = image[ndimage.binary_erosion(label == 1, iterations=2)]
        tumor = image[label == 2]
        assert 100 <= np.median(liver) <= 130
        spread = 1.4826 * np.median(np.abs(liver - np.median(liver)))
        assert 8 <= spread <= 25  # correlated noise of 10-20 HU plus mild texture
        assert 30 <= np.median(tumor) <= 85  # hypodense
        assert np.median(liver) - np.median(tumor) >= 30
        assert np.median(image[0, 0, :]) == pytest.approx(-1000, abs=30)  # air outside the body
        assert ((image > -150) & (image < -50)).mean() > 0.1  # fat
        assert ((image > 30) & (image < 80) & (label == 0)).mean() > 0.02  # muscle, bowel
        assert (image > 300).mean() > 0.002  # bone
        assert image.min() >= -1024 and image.max() < 3072


def test_real_tumours_are_inside_the_liver_with_their_own_counts(tumor_cases) -> None:
    for _, label in tumor_cases:
        tumor = label == 2
        count = ndimage.label(tumor, structure=np.ones((3, 3, 3)))[1]
        assert 1 <= count <= 4
        # Every tumour voxel touches liver or tumour only: the tumour lies within the liver.
        grown = ndimage.binary_dilation(tumor)
        assert not (grown & (label == 0)).sum() > 0.2 * grown.sum()
    volumes = [(label == 2).sum() * 8.0 for _, label in tumor_cases]  # mm^3 at 2 mm
    assert max(volumes) > 4 / 3 * np.pi * 6**3  # at least one tumour beyond 6 mm radius


def test_same_seed_same_bytes_other_seed_other_patient() -> None:
    a = make_phantom_case(np.random.default_rng(3), *SMALL, with_tumors=True)
    b = make_phantom_case(np.random.default_rng(3), *SMALL, with_tumors=True)
    c = make_phantom_case(np.random.default_rng(4), *SMALL, with_tumors=True)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert (a[1] != c[1]).mean() > 0.01


def test_anisotropic_spacing_keeps_the_anatomy_in_mm() -> None:
    fine_img, fine = make_phantom_case(np.random.default_rng(5), (64, 64, 48), (2.0, 2.0, 2.0))
    _, coarse = make_phantom_case(np.random.default_rng(5), (64, 64, 32), (2.0, 2.0, 3.0))
    liver_ml = [(fine == 1).sum() * 8e-3, (coarse == 1).sum() * 12e-3]
    assert liver_ml[1] == pytest.approx(liver_ml[0], rel=0.05)
    assert fine_img.shape == (64, 64, 48)


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(TumorsweepError, match="shape"):
        make_phantom_case(np.random.default_rng(0), (8, 64, 64))
    with pytest.raises(TumorsweepError, match="spacing"):
        make_phantom_case(np.random.default_rng(0), (32, 32, 32), (0.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("tumors", "expected"), [(0, (0, 0, 0)), (1, (0, 0, 1)), (2, (0, 1, 1)), (6, (2, 1, 3))]
)
def test_tumour_case_partition(tumors, expected) -> None:
    assert tumor_partition(tumors) == expected
    assert sum(tumor_partition(tumors)) == tumors


def test_dataset_on_disk_lps_loads_with_nibabel_and_monai(tmp_path) -> None:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    path = write_phantom_dataset(
        tmp_path / "ph", cases=4, seed=2, shape=(40, 40, 24), spacing=(3.0, 3.0, 4.0),
        tumor_cases=3, orientation="LPS", preview=True,
    )  # fmt: skip
    meta = json.loads(path.read_text())
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "cancer"}
    assert meta["numTraining"] == len(meta["training"]) == 2
    assert [e["tumor"] for e in meta["training"]] == [False, True]
    assert len(meta["validation"]) == 1 and len(meta["test"]) == 1
    assert (tmp_path / "ph" / "preview.png").stat().st_size > 10_000
    case = meta["test"][0]
    image = nib.load(tmp_path / "ph" / case["image"])
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert image.header.get_zooms() == (3.0, 3.0, 4.0)
    keys = ["image", "label"]
    loaded = Compose(
        [
            LoadImaged(keys),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        ]
    )({k: str(tmp_path / "ph" / case[k]) for k in keys})
    expected_image, expected_label = make_phantom_case(
        np.random.default_rng([2, 3]), (40, 40, 24), (3.0, 3.0, 4.0), with_tumors=True
    )
    np.testing.assert_array_equal(loaded["label"][0].numpy(), expected_label)
    np.testing.assert_allclose(loaded["image"][0].numpy(), np.round(expected_image), atol=0)


def test_dataset_files_are_byte_identical_per_seed(tmp_path) -> None:
    kwargs = dict(cases=2, seed=9, shape=(32, 32, 32), spacing=(4.0, 4.0, 3.0), tumor_cases=1)
    write_phantom_dataset(tmp_path / "a", **kwargs)
    write_phantom_dataset(tmp_path / "b", **kwargs)
    for name in ("imagesTr/liver_1.nii.gz", "labelsTr/liver_1.nii.gz", "dataset.json"):
        a = nib.load(tmp_path / "a" / name) if name.endswith("gz") else None
        if a is None:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        else:
            b = nib.load(tmp_path / "b" / name)
            assert np.asarray(a.dataobj).tobytes() == np.asarray(b.dataobj).tobytes()


def test_bad_dataset_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(TumorsweepError, match="tumor-cases"):
        write_phantom_dataset(tmp_path, cases=2, tumor_cases=3)
    with pytest.raises(TumorsweepError, match="orientation"):
        write_phantom_dataset(tmp_path, cases=1, tumor_cases=0, orientation="XYZ")
