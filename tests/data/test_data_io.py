"""Bad input to the NIfTI readers: one clear error naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorsweep.data.io import check_pair_header, load_pair, load_volume
from tumorsweep.errors import TumorsweepError


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(b"not a nifti")
    return path


def liver(shape=(6, 6, 6)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[1:4, 1:4, 1:4] = 1
    return label


def test_good_pair_reads_with_spacing(tmp_path) -> None:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    image = save(tmp_path / "i.nii.gz", np.full((6, 6, 6), 100, np.int16), affine)
    label = save(tmp_path / "l.nii.gz", liver(), affine)
    data, seg, got_affine, spacing = load_pair(image, label)
    assert spacing == pytest.approx((0.8, 0.8, 2.5))
    assert seg.dtype == np.uint8 and int(seg.sum()) == 27 and data.shape == (6, 6, 6)
    np.testing.assert_allclose(got_affine, affine, atol=1e-6)
    check_pair_header(image, label)


def test_trailing_singleton_axis_is_accepted(tmp_path) -> None:
    data, _, _ = load_volume(save(tmp_path / "i.nii", np.zeros((5, 5, 5, 1), np.float32)))
    assert data.shape == (5, 5, 5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent.nii.gz", "absent.nii.gz: file not found"),
        (lambda p: garbage(p / "x.nii.gz"), "x.nii.gz: not a readable NIfTI"),
        (
            lambda p: save(p / "flat.nii", np.zeros((5, 5), np.float32)),
            "flat.nii: expected a 3-D volume, got 2-D",
        ),
        (
            lambda p: save(p / "t.nii", np.zeros((5, 5, 5, 2), np.float32)),
            "t.nii: expected a 3-D volume, got 4-D",
        ),
        (
            lambda p: save(p / "nan.nii", np.where(liver() > 0, np.nan, 0).astype(np.float32)),
            "nan.nii: 27 NaN or infinite voxels",
        ),
    ],
)
def test_bad_volume(tmp_path, make, message) -> None:
    with pytest.raises(TumorsweepError, match=message):
        load_volume(make(tmp_path))


def test_truncated_gzip_is_reported(tmp_path) -> None:
    path = save(tmp_path / "cut.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(TumorsweepError, match="cut.nii.gz: cannot read voxel data"):
        load_volume(path)


@pytest.mark.parametrize(
    ("label", "affine", "message"),
    [
        (
            liver((6, 6, 5)),
            None,
            r"l.nii.gz: shape \(6, 6, 5\) differs from shape \(6, 6, 6\) of .*i.nii.gz",
        ),
        (liver(), np.diag([1.0, 1.0, 1.1, 1.0]), "l.nii.gz: affine differs .* by up to 0.1"),
        (liver() * 3, None, r"l.nii.gz: label values 3 outside \{0, 1, 2\}"),
        (np.zeros((6, 6, 6), np.uint8), None, "l.nii.gz: empty liver"),
        (liver().astype(np.float32) * 0.5, None, "l.nii.gz: label holds non-integer values"),
    ],
)
def test_bad_pair(tmp_path, label, affine, message) -> None:
    image = save(tmp_path / "i.nii.gz", np.zeros((6, 6, 6), np.float32))
    with pytest.raises(TumorsweepError, match=message):
        load_pair(image, save(tmp_path / "l.nii.gz", label, affine))


def test_header_check_catches_mismatch_without_reading_voxels(tmp_path) -> None:
    image = save(tmp_path / "i.nii.gz", np.zeros((6, 6, 6), np.float32))
    shifted = np.eye(4)
    shifted[:3, 3] = 0.01  # the origin moved by 0.01 mm (axes still orthogonal)
    label = save(tmp_path / "l.nii.gz", liver(), shifted)
    with pytest.raises(TumorsweepError, match="l.nii.gz: affine differs"):
        check_pair_header(image, label)
