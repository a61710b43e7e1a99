"""case_metrics against hand-computed Dice and DeepMind's surface-distance (the NSD oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from core.errors import TumorsweepError
from core.evaluate import case_metrics
from core.evaluate import metrics as metrics_module


@pytest.fixture(scope="module")
def surface_distance():
    """DeepMind's package with the numpy-2 aliases it still uses (np.Inf, np.NaN)."""
    from surface_distance import metrics as oracle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "Inf", np.inf, raising=False)
        patch.setattr(np, "NaN", np.nan, raising=False)
        yield oracle


def _random_labels(rng: np.random.Generator, shape: tuple[int, ...], noise: float) -> tuple:
    """Smooth random blobs as truth, a noisy copy as prediction; liver >= median, tumour top 15%."""
    field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    noisy = field + rng.normal(0.0, noise, shape)

    def labels(values: np.ndarray) -> np.ndarray:
        liver = values > np.quantile(values, 0.5)
        tumour = values > np.quantile(values, 0.85)
        return liver.astype(np.uint8) + tumour.astype(np.uint8)

    return labels(noisy), labels(field)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("seed", range(6))
def test_nsd_equals_surface_distance_on_random_anisotropic_cases(surface_distance, seed):
    rng = np.random.default_rng(seed)
    for tolerance in (0.0, 0.7, 1.0, 2.0, 3.3, 9.0, 25.0):  # 9 and 25 take the EDT path
        shape = tuple(int(n) for n in rng.integers(5, 22, 3))
        spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, 3))
        pred, truth = _random_labels(rng, shape, noise=float(rng.uniform(0.005, 0.05)))
        mode = str(rng.choice(["ge1", "eq1"]))
        row = case_metrics(pred, truth, spacing, tolerance, liver_mode=mode)
        liver = (lambda a: a >= 1) if mode == "ge1" else (lambda a: a == 1)
        for name, select in (("liver", liver), ("tumor", lambda a: a == 2)):
            distances = surface_distance.compute_surface_distances(
                select(truth), select(pred), spacing
            )
            expected = surface_distance.compute_surface_dice_at_tolerance(distances, tolerance)
            assert row[f"{name}_nsd"] == pytest.approx(expected, abs=1e-9), (name, tolerance)
            assert row[f"{name}_surface_true_mm2"] == pytest.approx(
                distances["surfel_areas_gt"].sum(), rel=1e-12
            )
            assert row[f"{name}_dice"] == pytest.approx(
                surface_distance.compute_dice_coefficient(select(truth), select(pred))
            )


def test_probing_and_distance_transform_agree():
    rng = np.random.default_rng(7)
    pred, truth = _random_labels(rng, (18, 16, 12), noise=0.05)
    spacing = (0.8, 0.9, 2.5)
    codes_pred = metrics_module._corner_codes(pred >= 1, np.array([3, 3, 1]))
    codes_truth = metrics_module._corner_codes(truth >= 1, np.array([3, 3, 1]))
    corners_pred = metrics_module._surface_corners(codes_pred)
    corners_truth = metrics_module._surface_corners(codes_truth)
    offsets = metrics_module._tolerance_offsets(spacing, 2.6)
    flat = offsets @ (np.array(codes_pred.strides) // codes_pred.itemsize)
    probed = metrics_module._within_by_probing(corners_pred, corners_truth, codes_pred.shape, flat)
    nearest = metrics_module._nearest_mm(corners_pred, corners_truth, codes_pred.shape, spacing)
    assert 0 < probed.sum() < probed.size
    np.testing.assert_array_equal(probed, nearest <= 2.6)


def test_dice_and_counts_by_hand():
    truth = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[0:2, 0:2, 0:2] = 1  # 8 liver voxels
    truth[0, 0, 0] = 2  # 1 tumour voxel (liver under ge1)
    pred[0:2, 0:2, 0:1] = 1  # 4 liver voxels, all inside the truth liver
    pred[0, 0, 0] = 2
    pred[3, 3, 3] = 2  # a false-positive tumour voxel
    ge1 = case_metrics(pred, truth, (1.0, 1.0, 1.0))
    assert (ge1["liver_pred_voxels"], ge1["liver_true_voxels"], ge1["liver_intersection"]) == (
        5,
        8,
        4,
    )
    assert ge1["liver_dice"] == pytest.approx(2 * 4 / 13)
    assert ge1["tumor_dice"] == pytest.approx(2 * 1 / 3)
    assert ge1["tumor_empty"] == "" and ge1["liver_empty"] == ""
    eq1 = case_metrics(pred, truth, (1.0, 1.0, 1.0), liver_mode="eq1")
    assert (eq1["liver_pred_voxels"], eq1["liver_true_voxels"], eq1["liver_intersection"]) == (
        3,
        7,
        3,
    )
    assert eq1["liver_dice"] == pytest.approx(2 * 3 / 10)


def test_identical_masks_score_one_and_single_voxel_surface_area():
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[2, 2, 2] = 1
    row = case_metrics(labels, labels.copy(), (1.0, 2.0, 3.0))
    assert row["liver_dice"] == 1.0 and row["liver_nsd"] == 1.0
    # Eight one-corner surfels, each a triangle of area vector (1/8)(sy sz, sx sz, sx sy).
    expected = 8 * np.linalg.norm(np.array([6.0, 3.0, 2.0]) / 8)
    assert row["liver_surface_true_mm2"] == pytest.approx(expected)
    assert row["liver_surface_true_within_mm2"] == pytest.approx(expected)


def test_empty_mask_conventions():
    empty = np.zeros((6, 6, 6), np.uint8)
    liver = empty.copy()
    liver[1:4, 1:4, 1:4] = 1
    both = case_metrics(liver, liver, (1, 1, 1))
    assert (both["tumor_empty"], both["tumor_dice"], both["tumor_nsd"]) == ("both", 1.0, 1.0)
    assert both["tumor_surface_pred_mm2"] == 0.0
    tumour = liver.copy()
    tumour[2, 2, 2] = 2
    false_positive = case_metrics(tumour, liver, (1, 1, 1))
    assert (false_positive["tumor_empty"], false_positive["tumor_dice"]) == ("truth", 0.0)
    assert false_positive["tumor_nsd"] == 0.0
    assert false_positive["tumor_surface_pred_mm2"] > 0  # still counted for pooled NSD
    missed = case_metrics(liver, tumour, (1, 1, 1))
    assert (missed["tumor_empty"], missed["tumor_dice"], missed["tumor_nsd"]) == ("pred", 0.0, 0.0)
    nothing = case_metrics(empty, empty, (1, 1, 1))
    assert nothing["liver_empty"] == "both" and nothing["liver_nsd"] == 1.0


def test_other_dtypes_give_the_same_numbers():
    rng = np.random.default_rng(3)
    pred, truth = _random_labels(rng, (10, 12, 9), noise=0.03)
    reference = case_metrics(pred, truth, (0.7, 0.7, 2.0))
    for dtype in (np.int16, np.int64, np.float32, np.uint16):
        row = case_metrics(pred.astype(dtype), truth.astype(dtype), (0.7, 0.7, 2.0))
        assert row == reference


@pytest.mark.parametrize(
    ("pred", "spacing", "tolerance", "mode", "message"),
    [
        (np.full((3, 3, 3), 3, np.uint8), (1, 1, 1), 2.0, "ge1", "found [3]"),
        (np.full((3, 3, 3), -1, np.int16), (1, 1, 1), 2.0, "ge1", "found [-1]"),
        (np.full((3, 3, 3), 0.5, np.float32), (1, 1, 1), 2.0, "ge1", "found [0.5]"),
        (np.zeros((3, 3, 4), np.uint8), (1, 1, 1), 2.0, "ge1", "shape"),
        (np.zeros((3, 3, 3), np.uint8), (1, 0, 1), 2.0, "ge1", "spacing_mm"),
        (np.zeros((3, 3, 3), np.uint8), (1, 1, 1), -1.0, "ge1", "tolerance_mm"),
        (np.zeros((3, 3, 3), np.uint8), (1, 1, 1), 2.0, "gt0", "liver_mode"),
    ],
)
def test_bad_input_raises_a_named_error(pred, spacing, tolerance, mode, message):
    truth = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(TumorsweepError, match=message.replace("[", r"\[").replace("]", r"\]")):
        case_metrics(pred, truth, spacing, tolerance, liver_mode=mode)
