"""predict_case on a tiny LPS, anisotropic NIfTI with a fixed intensity-threshold "model"."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)

from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import evaluate_cases, predict_case, sliding_window_logits

# Windowed intensity of each class: background -100 HU -> 0, liver 120 HU, tumour 50 HU.
CLASS_CENTRES = torch.tensor([0.0, 141 / 210, 71 / 210])


class NearestIntensity(torch.nn.Module):
    """Logits = minus squared distance of the windowed intensity to each class's value."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(100.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres = CLASS_CENTRES.view(1, 3, 1, 1, 1).to(x)
        return -self.scale * (x - centres) ** 2


def _preprocess(pixdim: tuple[float, float, float]) -> Compose:
    return Compose(
        [
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),
            Orientationd(keys=["image", "label"], axcodes="RAS"),
            Spacingd(keys=["image", "label"], pixdim=pixdim, mode=("bilinear", "nearest")),
            ScaleIntensityRanged(keys="image", a_min=-21, a_max=189, b_min=0, b_max=1, clip=True),
        ]
    )


@pytest.fixture()
def lps_case(tmp_path):
    """An LPS-oriented (negative x, y axes), anisotropic CT and label, asymmetric content."""
    labels = np.zeros((14, 12, 9), np.uint8)
    labels[2:11, 3:10, 1:7] = 1
    labels[3:6, 4:6, 2:4] = 2
    labels[9, 8, 5] = 2
    image = np.choose(labels, [-100.0, 120.0, 50.0]).astype(np.float32)
    affine = np.diag([-2.0, -1.0, 3.0, 1.0])
    affine[:3, 3] = [40.0, 30.0, -20.0]
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "case_7.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "case_7_label.nii.gz")
    return {"image": tmp_path / "case_7.nii.gz", "label": tmp_path / "case_7_label.nii.gz"}, labels


def test_inverted_prediction_lines_up_with_the_label(lps_case):
    case, labels = lps_case
    # 1 mm resampling = integer up-sampling here, so native voxel centres are grid points.
    pred, truth, spacing = predict_case(
        NearestIntensity(),
        case,
        _preprocess((1.0, 1.0, 1.0)),
        roi=(8, 8, 8),
        overlap=0.5,
        postprocess=False,
    )
    assert spacing == (2.0, 1.0, 3.0)
    assert pred.dtype == np.uint8 and pred.shape == labels.shape
    np.testing.assert_array_equal(truth, labels)
    np.testing.assert_array_equal(pred, labels)


def test_evaluate_cases_rows_and_postprocess(lps_case):
    case, labels = lps_case
    rows = evaluate_cases(
        NearestIntensity(), [case], _preprocess((1.5, 1.5, 1.5)), roi=(8, 8, 8), overlap=0.5
    )
    assert len(rows) == 1 and rows[0]["case"] == "case_7_label"
    assert rows[0]["liver_true_voxels"] == np.count_nonzero(labels)
    assert rows[0]["liver_dice"] > 0.9  # non-integer resampling: only edges may move
    assert rows[0]["liver_hd95"] <= 3.0  # at most one native voxel off (x is 2 mm, z 3 mm)


class Recording(NearestIntensity):
    """NearestIntensity that records each call's window batch size and autocast state."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], torch.is_autocast_enabled("cpu")))
        return super().forward(x)


def test_sw_batch_size_and_amp_reach_the_windows(lps_case):
    case, _ = lps_case
    for batch, amp in ((1, False), (3, True)):
        model = Recording()
        evaluate_cases(
            model,
            [case],
            _preprocess((1.0, 1.0, 1.0)),
            roi=(8, 8, 8),
            overlap=0.5,
            sw_batch_size=batch,
            amp=amp,
        )
        assert max(size for size, _ in model.calls) == batch
        assert {autocast for _, autocast in model.calls} == {amp}


def test_sliding_window_logits_blend_dtypes_and_errors():
    model = NearestIntensity()
    image = torch.rand(1, 1, 10, 9, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = model(image)
    logits = sliding_window_logits(model, image, roi=(6, 6, 6), overlap=0.5)
    assert logits.shape == (1, 3, 10, 9, 7) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, direct, atol=1e-5, rtol=1e-5)  # blend of equal windows
    half = sliding_window_logits(model, image, roi=(6, 6, 6), overlap=0.5, stitch_dtype="float16")
    assert half.dtype == torch.float16
    relative = (half.float() - direct).abs().max() / direct.abs().max()
    assert 1e-5 < relative < 1e-2  # float16 rounding of input and blend shows
    assert not model.training
    with pytest.raises(TumorsweepError, match="B, 1, X, Y, Z"):
        sliding_window_logits(model, torch.rand(1, 10, 9, 7))
    with pytest.raises(TumorsweepError, match="stitch_dtype"):
        sliding_window_logits(model, image, stitch_dtype="bfloat16")
    with pytest.raises(TumorsweepError, match="sw_batch_size"):
        sliding_window_logits(model, image, sw_batch_size=0)


def test_missing_file_and_bad_truth_are_named(tmp_path, lps_case):
    case = {"image": tmp_path / "nope.nii.gz", "label": tmp_path / "nope.nii.gz"}
    with pytest.raises(TumorsweepError, match="nope.nii.gz: image file not found"):
        predict_case(NearestIntensity(), case, _preprocess((1.0, 1.0, 1.0)))
    good, labels = lps_case
    bad_label = tmp_path / "bad_label.nii.gz"
    nib.save(nib.Nifti1Image(labels.astype(np.float32) * 0.5, np.eye(4)), bad_label)
    with pytest.raises(TumorsweepError, match=r"bad_label.nii.gz: label holds non-integer values"):
        predict_case(NearestIntensity(), {**good, "label": bad_label}, _preprocess((1, 1, 1)))
