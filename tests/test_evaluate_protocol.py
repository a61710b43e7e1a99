"""Evaluation protocols: hu2023 reproduces Hu et al.'s validation steps; the two protocols differ.

The reference below is an independent re-implementation of `validation.py` from
MrGiovanni/SyntheticTumors as published: their transform chain (image only reoriented,
resampled, windowed and padded), MONAI sliding window on the logits, `Invertd` of the logits
with linear interpolation, argmax + one-hot, `denoise_pred` (largest component of the liver
channel with scipy's default structure, tumour channel gated by 30 binary dilations), Dice as
their `cal_dice` and NSD from DeepMind's package. None of our evaluation functions is called.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from scipy import ndimage

from tumorsweep.data.transforms import eval_transforms
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import PROTOCOLS, EvalProtocol, evaluate_cases, predict_case

ROI = (16, 16, 16)
OVERLAP = 0.5
CLASS_CENTRES = torch.tensor([0.0, 141 / 210, 71 / 210])  # windowed -100, 120, 50 HU


class NearestIntensity(torch.nn.Module):
    """A fixed segmenter: logits = minus scaled squared distance to each class's intensity."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.scale * (x - CLASS_CENTRES.view(1, 3, 1, 1, 1).to(x)) ** 2


@pytest.fixture(scope="module")
def surface_distance():
    """DeepMind's package with the numpy-2 aliases it still uses (np.Inf, np.NaN)."""
    from surface_distance import metrics as oracle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "Inf", np.inf, raising=False)
        patch.setattr(np, "NaN", np.nan, raising=False)
        yield oracle


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """An LPS, anisotropic CT (non-integer resampling to 1 mm) built so the protocols differ.

    A liver piece hangs on the main liver only through tumour (one component for liver +
    tumour, two for label 1 alone); a tumour sits inside the liver, one lies far beyond the
    30-voxel gate. (Connectivity 6 vs 26 is checked on label maps in the post-processing tests:
    interpolated boundaries make diagonal contacts too fragile to build into a CT.)
    """
    labels = np.zeros((64, 26, 16), np.uint8)
    labels[3:20, 4:20, 2:13] = 1  # main liver
    labels[8:12, 8:12, 5:8] = 2  # tumour inside
    labels[20:22, 8:12, 5:8] = 2  # tumour bridge
    labels[22:27, 6:14, 4:10] = 1  # piece attached through the bridge only
    labels[58:62, 10:13, 6:9] = 2  # tumour far from any liver
    rng = np.random.default_rng(5)
    image = np.choose(labels, [-100.0, 120.0, 50.0]) + rng.normal(0, 4, labels.shape)
    affine = np.diag([-1.6, -1.3, 2.5, 1.0])
    affine[:3, 3] = [60.0, 25.0, -30.0]
    root = tmp_path_factory.mktemp("protocol_case")
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "case_3.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "case_3_label.nii.gz")
    return {"image": str(root / "case_3.nii.gz"), "label": str(root / "case_3_label.nii.gz")}


def _hu_validation(model: torch.nn.Module, case: dict, oracle) -> dict[str, float]:
    """Hu et al.'s validation steps for one case, written out from their published script."""
    chain = Compose(
        [
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),  # AddChanneld in their MONAI
            Orientationd(keys=["image"], axcodes="RAS"),
            Spacingd(keys=["image"], pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
            ScaleIntensityRanged(
                keys=["image"], a_min=-21, a_max=189, b_min=0.0, b_max=1.0, clip=True
            ),
            SpatialPadd(keys=["image"], mode="minimum", spatial_size=list(ROI)),
            # Their ToTensord is left out: LoadImaged gives tensors already in MONAI >= 1.0,
            # and its inverse (to numpy) would stop Invertd before the padding.
        ]
    )
    post = Compose(
        [
            Invertd(keys="pred", transform=chain, orig_keys="image", nearest_interp=False),
            AsDiscreted(keys="pred", argmax=True, to_onehot=3),
            AsDiscreted(keys="label", to_onehot=3),
        ]
    )
    data = chain(dict(case))
    model.eval()
    with torch.no_grad():
        logits = sliding_window_inference(
            data["image"][None], ROI, 1, model, overlap=OVERLAP, mode="gaussian"
        )
    data["pred"] = logits[0]
    data = post(data)
    pred, truth = data["pred"].numpy(), data["label"].numpy()
    # denoise_pred: largest component of the liver channel (default structure), dilated gate.
    components, count = ndimage.label(pred[1])
    sizes = [np.sum(components == index) for index in range(1, count + 1)]
    liver = components == (int(np.argmax(sizes)) + 1)
    gate = ndimage.binary_dilation(liver, iterations=30)
    denoised = {1: liver, 2: pred[2].astype(bool) & gate}
    spacing = tuple(float(s) for s in nib.load(case["label"]).header.get_zooms()[:3])
    values = {}
    for channel, name in ((1, "liver"), (2, "tumor")):
        p, t = denoised[channel].astype(np.float64), truth[channel]
        values[f"{name}_dice"] = 2.0 * np.sum(p[t == 1]) / (np.sum(p) + np.sum(t))
        distances = oracle.compute_surface_distances(t.astype(bool), p.astype(bool), spacing)
        values[f"{name}_nsd"] = oracle.compute_surface_dice_at_tolerance(distances, 2)
    return values


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_hu2023_reproduces_their_validation_steps(case, surface_distance):
    expected = _hu_validation(NearestIntensity(), case, surface_distance)
    rows = evaluate_cases(
        NearestIntensity(),
        [case],
        eval_transforms((1.0, 1.0, 1.0)),
        roi=ROI,
        overlap=OVERLAP,
        protocol="hu2023",
    )
    assert 0.5 < expected["liver_dice"] < 0.999 and 0.3 < expected["tumor_dice"] < 0.999
    for key, value in expected.items():
        assert rows[0][key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_two_protocols_differ_where_they_must(case):
    preprocess = eval_transforms((1.0, 1.0, 1.0))
    raw = {
        name: predict_case(
            NearestIntensity(),
            case,
            preprocess,
            roi=ROI,
            overlap=OVERLAP,
            protocol=name,
            postprocess=False,
        )[0]
        for name in ("tumorsweep", "hu2023")  # chen2024: test_difftumor_protocol
    }
    # Logits inverted linearly vs labels inverted nearest: boundary voxels move.
    moved = np.count_nonzero(raw["tumorsweep"] != raw["hu2023"])
    assert 0 < moved < 0.1 * raw["hu2023"].size
    ours, hu = (PROTOCOLS[name].postprocess(raw[name]) for name in ("tumorsweep", "hu2023"))
    # The piece hanging on tumour: kept with liver + tumour, dropped with label 1 alone.
    piece = np.s_[23:26, 7:13, 5:9]
    assert (raw["hu2023"][piece] == 1).all()
    assert (ours[piece] == 1).all() and (hu[piece] == 0).all()
    # Both keep the tumours near the liver and drop the far one.
    assert (ours[9:11, 9:11, 6] == 2).all() and (hu[9:11, 9:11, 6] == 2).all()
    assert (raw["hu2023"][58:62, 10:13, 6:9] == 2).any()
    assert not (ours[56:64] == 2).any() and not (hu[56:64] == 2).any()
    rows = {
        name: evaluate_cases(
            NearestIntensity(), [case], preprocess, roi=ROI, overlap=OVERLAP, protocol=name
        )[0]
        for name in ("tumorsweep", "hu2023")  # chen2024: test_difftumor_protocol
    }
    truth = np.asarray(nib.load(case["label"]).dataobj)
    assert rows["tumorsweep"]["liver_true_voxels"] == np.count_nonzero(truth >= 1)
    assert rows["hu2023"]["liver_true_voxels"] == np.count_nonzero(truth == 1)
    assert rows["hu2023"]["liver_pred_voxels"] == np.count_nonzero(hu == 1)
    assert rows["tumorsweep"]["liver_pred_voxels"] == np.count_nonzero(ours >= 1)
    assert rows["tumorsweep"]["liver_dice"] != pytest.approx(rows["hu2023"]["liver_dice"], abs=0.01)


def test_protocol_objects_and_bad_names(case):
    assert PROTOCOLS["hu2023"].connectivity == 6 and PROTOCOLS["tumorsweep"].connectivity == 26
    custom = EvalProtocol(
        name="mixed",
        description="our post-processing, Hu et al.'s liver for scoring",
        inversion="labels_nearest",
        liver_mode="eq1",
        component_liver="ge1",
        connectivity=26,
        stitch_dtype="float32",
    )
    rows = evaluate_cases(
        NearestIntensity(), [case], eval_transforms(), roi=ROI, overlap=OVERLAP, protocol=custom
    )
    assert rows[0]["liver_true_voxels"] == int(
        np.count_nonzero(np.asarray(nib.load(case["label"]).dataobj) == 1)
    )
    with pytest.raises(TumorsweepError, match="protocol: expected one of"):
        evaluate_cases(NearestIntensity(), [case], eval_transforms(), protocol="lits")
