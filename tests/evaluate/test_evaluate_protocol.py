"""Evaluation protocols: where the two differ, and what hu2023 refuses.

That hu2023 equals Hu et al.'s `validation.py` run with MONAI 0.9.0 is checked against MONAI
0.9 itself in tests/evaluate/test_faithfulness_hu2023.py.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

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


def test_hu2023_refuses_a_chain_that_resamples_otherwise(case):
    """hu2023 numbers need MONAI 0.9's resampling (tests/evaluate/test_faithfulness_hu2023.py):
    a chain built for the other protocol is refused with the fix, before any window runs."""
    with pytest.raises(TumorsweepError, match=r"transforms\(spacing, window\)") as caught:
        evaluate_cases(NearestIntensity(), [case], eval_transforms(), roi=ROI, protocol="hu2023")
    assert "case_3.nii.gz" in str(caught.value) and "'monai09'" in str(caught.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_two_protocols_differ_where_they_must(case):
    chains = {name: protocol.transforms((1.0, 1.0, 1.0)) for name, protocol in PROTOCOLS.items()}
    raw = {
        name: predict_case(
            NearestIntensity(),
            case,
            chains[name],
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
            NearestIntensity(), [case], chains[name], roi=ROI, overlap=OVERLAP, protocol=name
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
