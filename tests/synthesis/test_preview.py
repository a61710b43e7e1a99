"""Previews in one orientation everywhere: the radiological convention (patient's right on
the image's left, anterior and superior at the top), whatever the orientation on disk."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from tumorsweep.preview import LIVER_WINDOW, radiological_views, ras_spacing, to_ras
from tumorsweep.synthesis.preview import save_preview


def _marked(shape=(12, 10, 8)) -> tuple[np.ndarray, np.ndarray]:
    """An RAS volume whose voxel at the patient's right, anterior, superior corner is 1."""
    image = np.zeros(shape, np.float32)
    image[-1, -1, -1] = 1.0  # RAS: the last index of each axis is right / anterior / superior
    return image, (image > 0).astype(np.uint8)


def test_views_put_right_left_and_anterior_superior_on_top() -> None:
    image, label = _marked()
    axial, coronal, sagittal = radiological_views(image, label, (1.0, 2.0, 3.0), (11, 9, 7))
    assert axial.image[0, 0] == 1 and axial.image.shape == (10, 12)  # rows A->P, cols R->L
    assert coronal.image[0, 0] == 1 and coronal.image.shape == (8, 12)  # rows S->I
    assert sagittal.image[0, 0] == 1 and sagittal.image.shape == (8, 10)  # cols A->P
    assert axial.extent == (0, 12.0, 20.0, 0) and coronal.extent == (0, 12.0, 24.0, 0)
    assert axial.title == "axial, slice 7 (z 21 mm)"


def test_any_orientation_on_disk_is_shown_as_ras() -> None:
    image, _ = _marked()
    ras_affine = np.diag([1.0, 2.0, 3.0, 1.0])
    # the same volume stored LPS with its axes permuted (S, P, L), as some scanners write it
    stored = np.transpose(image[::-1, ::-1, :], (2, 1, 0))
    flip = np.eye(4)
    flip[:3, :3] = np.diag([-1.0, -1.0, 1.0])
    flip[:3, 3] = [11.0, 18.0, 0.0]  # keeps the corner voxels where they were
    lps = ras_affine @ flip
    perm = np.eye(4)[[2, 1, 0, 3]].T
    stored_affine = lps @ perm
    assert nib.aff2axcodes(stored_affine) == ("S", "P", "L")
    np.testing.assert_array_equal(to_ras(stored, stored_affine), image)
    assert ras_spacing(stored_affine) == (1.0, 2.0, 3.0)


def test_synthesize_preview_is_the_same_picture_from_either_orientation(tmp_path: Path) -> None:
    image, label = _marked((24, 20, 16))
    label[4:20, 4:16, 4:12] = 1
    label[10:14, 8:12, 6:10] = 2
    before = image * 100 + 60
    after = np.where(label == 2, before - 40, before)
    save_preview(after, label, tmp_path / "ras.png", before=before, spacing=(1, 1, 1))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS on disk
    lps = [a[::-1, ::-1, :] for a in (after, label, before)]
    save_preview(lps[0], lps[1], tmp_path / "lps.png", before=lps[2], affine=affine)
    assert (tmp_path / "ras.png").read_bytes() == (tmp_path / "lps.png").read_bytes()
    assert LIVER_WINDOW == (-15.0, 135.0)  # W150 L60
