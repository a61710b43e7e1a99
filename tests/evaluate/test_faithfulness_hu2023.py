"""`eval.protocol=hu2023` equals Hu et al.'s `validation.py` run with the MONAI it pins (0.9.0).

The oracle (`tests/oracles/hu2023_validation.py`) runs their evaluation chain with MONAI 0.9.0
and numpy 1.23 in the `monai090` side environment: their transforms, their sliding window, their
`Invertd`, argmax and post-processing. Its per-channel masks are scored here with DeepMind's
`surface-distance` (what `validation.py` imports) and their `cal_dice` formula. Our side is the
function a trial scores its cases with (`tumorsweep.train.evaluate`), given a config.

The cases are made to exercise everything that differs between MONAI 0.9 and the installed one:
CTs at 1.6 x 1.6 x 2.5 mm stored in LPS order (reoriented and resampled to 1 mm as MONAI 0.9
resamples: float64 interpolation, float32 affine algebra),
shorter than the window along z (padded with numpy's minimum mode before the window), wider than
it along x and y (overlapping windows blended with MONAI 0.9's Gaussian weights), and a UNet with
instance norm, whose every logit depends on the whole window (so padding and blending matter).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.networks.nets import UNet
from monai.transforms import SpatialPadd

from tumorsweep.config import make_config
from tumorsweep.data.transforms import eval_transforms
from tumorsweep.evaluate import PROTOCOLS
from tumorsweep.evaluate.inference import monai09_gaussian_weights
from tumorsweep.train import evaluate

NATIVE_SPACING = (1.6, 1.6, 2.5)
SPACING = (1.0, 1.0, 1.0)
ROI = (32, 32, 32)
OVERLAP = 0.5
SHAPES = ((40, 36, 12), (36, 44, 11), (44, 34, 13))  # z: 30, 27.5, 32.5 mm -> padded to 32
UNET = dict(
    spatial_dims=3,
    in_channels=1,
    out_channels=3,
    channels=(8, 16, 32),
    strides=(2, 2),
    num_res_units=1,
    norm="instance",
)
TOLERANCE = 1e-6


def write_case(folder: Path, index: int, shape: tuple[int, int, int]) -> dict:
    """A liver ellipsoid (~120 HU) with two hypodense tumours (~50 HU) in soft tissue, noise
    10 HU, stored with an LPS affine at NATIVE_SPACING; returns the case's paths."""
    rng = np.random.default_rng(100 + index)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    mm = grid * np.asarray(NATIVE_SPACING)
    centre = np.asarray(shape) * np.asarray(NATIVE_SPACING) / 2
    liver = (((mm - centre) / np.asarray([22.0, 20.0, 11.0])) ** 2).sum(-1) <= 1
    label = liver.astype(np.uint8)
    for offset, radius in (((-8.0, 4.0, 0.0), 6.0), ((7.0, -6.0, 2.0), 4.5)):
        tumour = ((mm - centre - np.asarray(offset)) ** 2).sum(-1) <= radius**2
        label[tumour & liver] = 2
    hu = np.choose(label, [40.0, 120.0, 50.0]) + rng.normal(0.0, 10.0, shape)
    # all inside the body: the minimum of each z line is above the window's floor, so padding
    # with it differs from padding with zeros
    affine = np.diag([-NATIVE_SPACING[0], -NATIVE_SPACING[1], NATIVE_SPACING[2], 1.0])
    affine[:3, 3] = (30.0, -12.0, 5.0)
    paths = {}
    for key, array, dtype in (("image", hu, np.int16), ("label", label, np.uint8)):
        path = folder / f"{key}_{index}.nii.gz"
        nib.save(nib.Nifti1Image(np.round(array).astype(dtype), affine), str(path))
        paths[key] = str(path)
    return {**paths, "case": f"case_{index}"}


def their_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """`validation.py`'s `cal_dice`: 2 sum(pred[truth == 1]) / (sum(pred) + sum(truth))."""
    return float(np.sum(pred[truth == 1]) * 2.0 / (np.sum(pred) + np.sum(truth)))


@pytest.fixture(scope="module")
def surface_distance():
    """DeepMind's package with the numpy-2 aliases it still uses (np.Inf, np.NaN)."""
    from surface_distance import metrics

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "Inf", np.inf, raising=False)
        patch.setattr(np, "NaN", np.nan, raising=False)
        yield metrics


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Three cases, a random instance-norm UNet (fixed seed) and its saved weights."""
    folder = tmp_path_factory.mktemp("hu2023")
    cases = [write_case(folder, index, shape) for index, shape in enumerate(SHAPES)]
    torch.manual_seed(7)
    model = UNet(**UNET).eval()
    weights = folder / "unet.pt"
    torch.save(model.state_dict(), weights)
    return SimpleNamespace(folder=folder, cases=cases, model=model, weights=weights)


def trainer_for(model: torch.nn.Module, amp_dtype: torch.dtype | None, protocol: str):
    """The parts of a `tumorsweep.train.Trainer` that `evaluate` reads."""
    cfg = make_config(
        "paper",
        {
            "data.spacing": SPACING,
            "eval.roi": ROI,
            "eval.overlap": OVERLAP,
            "eval.protocol": protocol,
            "schedule.patch_size": ROI,
        },
    )
    session = SimpleNamespace(device=torch.device("cpu"))
    return SimpleNamespace(cfg=cfg, model=model, amp_dtype=amp_dtype, session=session)


@pytest.fixture(scope="module")
def theirs(monai09, setting, surface_distance) -> list[dict]:
    """Per-case Dice / NSD of the oracle's masks, scored as `validation.py` scores them."""
    spec = {
        "cases": [{"image": c["image"], "label": c["label"]} for c in setting.cases],
        "weights": str(setting.weights),
        "unet": {**UNET, "channels": list(UNET["channels"]), "strides": list(UNET["strides"])},
        "spacing": list(SPACING),
        "roi": list(ROI),
        "overlap": OVERLAP,
    }
    spec_path, out = setting.folder / "spec.json", setting.folder / "oracle.npz"
    spec_path.write_text(json.dumps(spec))
    monai09.run("hu2023_validation.py", spec_path, out)
    result = np.load(out)
    setting.oracle_images = [result[f"{i}_image"] for i in range(len(setting.cases))]
    rows = []
    for index in range(len(setting.cases)):
        spacing = tuple(float(s) for s in result[f"{index}_spacing"])
        assert spacing == pytest.approx(NATIVE_SPACING)
        assert result[f"{index}_image"].shape[2] == ROI[2]  # z was padded to the window
        row = {}
        for name in ("liver", "tumor"):
            pred, truth = result[f"{index}_pred_{name}"], result[f"{index}_label_{name}"]
            distances = surface_distance.compute_surface_distances(truth, pred, spacing)
            row[f"{name}_dice"] = their_dice(pred, truth)
            row[f"{name}_nsd"] = surface_distance.compute_surface_dice_at_tolerance(distances, 2)
            row[f"{name}_pred_voxels"] = int(pred.sum())
        rows.append(row)
    return rows


def test_hu2023_equals_validation_py_with_monai_0_9(setting, theirs):
    ours = evaluate(trainer_for(setting.model, None, "hu2023"), tuple(setting.cases))
    assert len(ours) == len(theirs) == 3
    for row, expected in zip(ours, theirs, strict=True):
        # the cases are not trivial: both classes predicted, scores away from 0 and 1
        assert expected["liver_pred_voxels"] > 300 and expected["tumor_pred_voxels"] > 300
        for metric in ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd"):
            assert 0.005 < expected[metric] < 0.995, (row["case"], metric, expected[metric])
            assert abs(row[metric] - expected[metric]) <= TOLERANCE, (
                row["case"],
                metric,
                row[metric],
                expected[metric],
            )


def test_the_oracle_sees_each_monai_0_9_difference(setting, theirs):
    """Each of the three MONAI 0.9 behaviours moves these cases' scores by more than the
    tolerance: switched off one at a time, our protocol no longer equals the oracle."""
    hu = PROTOCOLS["hu2023"]
    variants = {
        "window zero padding": dict(pad="window_zeros"),
        "MONAI >= 1 Gaussian": dict(blend_weights="monai"),
    }
    for name, change in variants.items():
        protocol = hu.__class__(**{**hu.__dict__, **change})
        trainer = trainer_for(setting.model, None, "hu2023")
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(PROTOCOLS, "hu2023", protocol)
            ours = evaluate(trainer, tuple(setting.cases))
        worst = max(
            abs(row[metric] - expected[metric])
            for row, expected in zip(ours, theirs, strict=True)
            for metric in ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd")
        )
        assert worst > TOLERANCE, name


def test_the_window_input_equals_monai_0_9_bit_for_bit(setting, theirs):
    """What the sliding window sees (resampled, windowed, padded with the minimum) is MONAI
    0.9's to the bit under hu2023; today's MONAI resampling in float64 is not (it solves the
    voxel transform from float64 affines and centres its grid otherwise), so a sharp edge can
    flip a voxel's argmax on other cases even where these cases' scores agree."""
    pad = SpatialPadd("image", ROI, mode="minimum")
    modern = eval_transforms(SPACING, resample="float64")
    worst_modern = 0.0
    for case, expected in zip(setting.cases, setting.oracle_images, strict=True):
        ours = pad(PROTOCOLS["hu2023"].transforms(SPACING)({"image": case["image"]}))["image"]
        np.testing.assert_array_equal(ours.numpy()[0], expected)
        other = pad(modern({"image": case["image"]}))["image"].numpy()[0]
        assert other.shape == expected.shape
        worst_modern = max(worst_modern, float(np.abs(other - expected).max()))
    assert worst_modern > 1e-7  # in windowed units: ~2e-5 HU and more


def test_monai09_gaussian_weights_equal_monai_0_9(monai09, tmp_path):
    """Our MONAI 0.9 window weights equal MONAI 0.9's own (its importance map, then the clamp
    its sliding window applies), bit for bit, for even and odd window sides."""
    roi = (32, 17, 48)
    out = tmp_path / "weights.npy"
    monai09.run("monai09_gaussian_weights.py", out, *map(str, roi))
    theirs = np.load(out)
    ours = monai09_gaussian_weights(roi).numpy()
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    assert ours.min() == pytest.approx(1e-3)  # the clamp bites at the corners
    peak = np.unravel_index(np.argmax(ours), ours.shape)
    assert tuple(int(p) for p in peak) == tuple(side // 2 for side in roi)
    modern = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125).numpy()
    assert np.abs(modern - ours).max() > 0.01  # today's MONAI blends otherwise
