"""case_metrics against DeepMind's surface-distance (the NSD and HD95 oracle) and hand counts.

Small random cases sweep tolerances and liver modes; realistic cases (>= 100 voxels a side,
anisotropic spacings where the 2 mm tolerance spans up to 4 voxels) sweep every memory layout
users produce (C, Fortran as nibabel returns, flipped views, transposed memory, strided views)
and label dtype, through `case_metrics` directly and through `tumorsweep evaluate` on NIfTI
files written by nibabel.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from tumorsweep.cli import main
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import case_metrics, surface

# surface-distance calls scipy.ndimage.filters / .morphology, deprecated aliases.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SELECT = {
    "ge1": (("liver", lambda a: a >= 1), ("tumor", lambda a: a == 2)),
    "eq1": (("liver", lambda a: a == 1), ("tumor", lambda a: a == 2)),
}


@pytest.fixture(scope="module")
def surface_distance():
    """DeepMind's package with the numpy-2 aliases it still uses (np.Inf, np.NaN)."""
    from surface_distance import metrics as oracle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "Inf", np.inf, raising=False)
        patch.setattr(np, "NaN", np.nan, raising=False)
        yield oracle


def _oracle(oracle, pred, truth, spacing, tolerance=2.0, mode="ge1") -> dict[str, float]:
    """Dice, NSD, HD95 and true surface area per class, all from DeepMind's package."""
    values = {}
    for name, select in SELECT[mode]:
        distances = oracle.compute_surface_distances(select(truth), select(pred), spacing)
        values[f"{name}_nsd"] = oracle.compute_surface_dice_at_tolerance(distances, tolerance)
        values[f"{name}_hd95"] = oracle.compute_robust_hausdorff(distances, 95)
        values[f"{name}_dice"] = oracle.compute_dice_coefficient(select(truth), select(pred))
        values[f"{name}_surface_true_mm2"] = distances["surfel_areas_gt"].sum()
    return values


def _assert_matches(row: dict, expected: dict, context: object) -> None:
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-9, rel=1e-12), (key, context)


def _random_labels(rng: np.random.Generator, shape: tuple[int, ...], noise: float) -> tuple:
    """Smooth random blobs as truth, a noisy copy as prediction; liver >= median, tumour top 15%."""
    field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    noisy = field + rng.normal(0.0, noise, shape)

    def labels(values: np.ndarray) -> np.ndarray:
        liver = values > np.quantile(values, 0.5)
        tumour = values > np.quantile(values, 0.85)
        return liver.astype(np.uint8) + tumour.astype(np.uint8)

    return labels(noisy), labels(field)


def _liver_case(seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A realistic case: a wobbly liver filling most of the volume, a prediction shifted and
    reshaped by a smooth field, tumours resized and moved, one missed, one false far away."""
    rng = np.random.default_rng(seed)
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    radii = np.array(shape) * 0.42

    def blob(shift, scale, phase, amplitude):
        parts = zip(axes, centre, shift, radii, strict=True)
        x, y, z = ((g - c - s) / (r * scale) for g, c, s, r in parts)
        wobble = amplitude * np.sin(3 * x + phase) * np.cos(2 * y - phase) * np.sin(2 * z + 1)
        return x**2 + y**2 + z**2 <= 1 + wobble

    truth = blob((0, 0, 0), 1.0, 0.0, 0.15).astype(np.uint8)
    pred = blob(rng.uniform(-2, 2, 3), 1.02, 0.4, 0.17).astype(np.uint8)
    for index in range(4):
        at = centre + rng.uniform(-0.4, 0.4, 3) * radii
        radius = rng.uniform(3, 9)
        distance = sum(((g - c) ** 2 for g, c in zip(axes, at, strict=True)))
        truth[(distance <= radius**2) & (truth == 1)] = 2
        if index:  # the first tumour is missed
            moved = sum(((g - c - 1) ** 2 for g, c in zip(axes, at, strict=True)))
            pred[(moved <= (radius * 1.15) ** 2) & (pred == 1)] = 2
    pred[3:6, 3:7, 2:5] = 2  # a false tumour far from the others
    return pred, truth


LAYOUTS = {
    "C": np.ascontiguousarray,
    "Fortran": np.asfortranarray,
    "flipped": lambda a: np.flip(np.flip(a, (0, 2)).copy(), (0, 2)),
    "transposed": lambda a: np.ascontiguousarray(a.transpose(1, 2, 0)).transpose(2, 0, 1),
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2, :],
}
SPACINGS = [(0.6, 0.6, 2.5), (0.8, 0.8, 1.5), (2.0, 0.7, 0.5)]


@pytest.fixture(scope="module")
def realistic_cases(surface_distance):
    """Per spacing: (pred, truth, oracle values) of a >= 100-voxel-a-side case."""
    shapes = [(128, 120, 104), (112, 126, 100), (100, 116, 132)]
    cases = []
    for seed, (spacing, shape) in enumerate(zip(SPACINGS, shapes, strict=True)):
        pred, truth = _liver_case(seed, shape)
        cases.append((pred, truth, spacing, _oracle(surface_distance, pred, truth, spacing)))
    return cases


@pytest.mark.parametrize("seed", range(6))
def test_small_random_cases_equal_surface_distance_at_any_tolerance(surface_distance, seed):
    rng = np.random.default_rng(seed)
    for tolerance in (0.0, 0.7, 1.0, 2.0, 3.3, 9.0, 25.0):  # large ones settle by k-d tree
        shape = tuple(int(n) for n in rng.integers(5, 22, 3))
        spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, 3))
        pred, truth = _random_labels(rng, shape, noise=float(rng.uniform(0.005, 0.05)))
        mode = str(rng.choice(["ge1", "eq1"]))
        row = case_metrics(pred, truth, spacing, tolerance, liver_mode=mode)
        expected = _oracle(surface_distance, pred, truth, spacing, tolerance, mode)
        _assert_matches(row, expected, (seed, tolerance, mode))


def test_realistic_cases_are_probed_and_hit_every_path(realistic_cases):
    """The realistic cases exercise probing at 3-4 voxels, widened shells and the k-d tree."""
    pred, truth, spacing, _ = realistic_cases[0]
    pair = surface.SurfacePair(pred >= 1, truth >= 1, spacing, 2.0)
    assert surface._reach_in_corners(spacing, 2.0).tolist() == [4, 4, 1]
    pair.within(2.0)
    direction = pair._pred_to_truth
    assert direction.reach == 2.0 and 0 < (direction.rank < 0).sum() < direction.rank.size
    hd95 = pair.robust_hausdorff(95)
    assert hd95 > 2.0
    tumour = surface.SurfacePair(pred == 2, truth == 2, spacing, 2.0)
    tumour.robust_hausdorff(95)
    assert math.isinf(tumour._pred_to_truth.reach)  # the false tumour is far: settled by tree


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_memory_layout_equals_surface_distance(realistic_cases, layout):
    arrange = LAYOUTS[layout]
    for pred, truth, spacing, expected in realistic_cases:
        row = case_metrics(arrange(pred), arrange(truth), spacing)
        _assert_matches(row, expected, (layout, spacing))
        mixed = case_metrics(arrange(pred), truth, spacing)  # one side C, the other not
        _assert_matches(mixed, expected, (layout, "mixed", spacing))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, ">i2", np.uint16, np.float32, np.float64])
def test_every_label_dtype_equals_surface_distance(realistic_cases, dtype):
    for pred, truth, spacing, expected in realistic_cases[:2]:
        for arrange in (np.asfortranarray, LAYOUTS["flipped"]):
            row = case_metrics(arrange(pred.astype(dtype)), arrange(truth.astype(dtype)), spacing)
            _assert_matches(row, expected, (dtype, spacing))


def test_bool_masks_equal_surface_distance(realistic_cases, surface_distance):
    pred, truth, spacing, _ = realistic_cases[2]
    liver_pred, liver_truth = pred >= 1, truth >= 1
    expected = _oracle(surface_distance, liver_pred, liver_truth, spacing)
    for arrange in LAYOUTS.values():
        row = case_metrics(arrange(liver_pred), arrange(liver_truth), spacing)
        _assert_matches(row, {k: v for k, v in expected.items() if "liver" in k}, arrange)
        assert row["tumor_empty"] == "both" and math.isnan(row["tumor_hd95"])


def test_cli_on_nifti_files_equals_surface_distance(
    realistic_cases, surface_distance, tmp_path, capsys
):
    """NIfTI files written by nibabel, read back (Fortran order) by the evaluate CLI.

    The oracle gets the spacing as stored in the header (float32: 0.6 reads 0.6000000238).
    """
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    pred_dir.mkdir()
    truth_dir.mkdir()
    stored = [(np.uint8, np.int16), (np.float32, np.uint8), (np.int16, np.float64)]
    for index, ((pred, truth, spacing, _), (pred_type, truth_type)) in enumerate(
        zip(realistic_cases, stored, strict=True)
    ):
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS
        nib.save(nib.Nifti1Image(pred.astype(pred_type), affine), pred_dir / f"c{index}.nii.gz")
        nib.save(nib.Nifti1Image(truth.astype(truth_type), affine), truth_dir / f"c{index}.nii")
    out = tmp_path / "rows.csv"
    args = ["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out)]
    assert main([*args, "--no-postprocess"]) == 0
    rows = pd.read_csv(out).set_index("case")
    for index, (pred, truth, _, _) in enumerate(realistic_cases):
        spacing = nib.load(truth_dir / f"c{index}.nii").header.get_zooms()
        expected = _oracle(surface_distance, pred, truth, tuple(float(s) for s in spacing))
        _assert_matches(rows.loc[f"c{index}"].to_dict(), expected, spacing)
    printed = capsys.readouterr().out
    assert "3 cases, protocol tumorsweep" in printed and "hd95 (mm)" in printed


def test_probing_and_tree_give_identical_distances(realistic_cases, monkeypatch):
    pred, truth, spacing, _ = realistic_cases[1]
    pair = surface.SurfacePair(pred >= 1, truth >= 1, spacing, 3.0)
    probed_within, probed_hd = pair.within(3.0), pair.robust_hausdorff(95)
    assert pair._pred_to_truth.reach < math.inf  # settled by probing
    monkeypatch.setattr(surface, "_TREE_BUILD", 0)
    monkeypatch.setattr(surface, "_TREE_QUERY", 0)
    by_tree = surface.SurfacePair(pred >= 1, truth >= 1, spacing, 3.0)
    tree_within = by_tree.within(3.0)
    assert math.isinf(by_tree._pred_to_truth.reach)  # settled by the tree at once
    for probed, tree in zip(probed_within, tree_within, strict=True):
        assert 0 < probed.sum() < probed.size
        np.testing.assert_array_equal(probed, tree)
    assert by_tree.robust_hausdorff(95) == probed_hd


def test_dice_and_counts_by_hand():
    truth = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[0:2, 0:2, 0:2] = 1  # 8 liver voxels
    truth[0, 0, 0] = 2  # 1 tumour voxel (liver under ge1)
    pred[0:2, 0:2, 0:1] = 1  # 4 liver voxels, all inside the truth liver
    pred[0, 0, 0] = 2
    pred[3, 3, 3] = 2  # a false-positive tumour voxel
    ge1 = case_metrics(pred, truth, (1.0, 1.0, 1.0))
    counts = ("liver_pred_voxels", "liver_true_voxels", "liver_intersection")
    assert tuple(ge1[key] for key in counts) == (5, 8, 4)
    assert ge1["liver_dice"] == pytest.approx(2 * 4 / 13)
    assert ge1["tumor_dice"] == pytest.approx(2 * 1 / 3)
    assert ge1["tumor_empty"] == "" and ge1["liver_empty"] == ""
    eq1 = case_metrics(pred, truth, (1.0, 1.0, 1.0), liver_mode="eq1")
    assert tuple(eq1[key] for key in counts) == (3, 7, 3)
    assert eq1["liver_dice"] == pytest.approx(2 * 3 / 10)


def test_single_voxel_area_and_hd95_by_hand():
    labels = np.zeros((5, 5, 9), np.uint8)
    labels[2, 2, 2] = 1
    row = case_metrics(labels, labels.copy(), (1.0, 2.0, 3.0))
    assert row["liver_dice"] == 1.0 and row["liver_nsd"] == 1.0 and row["liver_hd95"] == 0.0
    # Eight one-corner surfels, each a triangle of area vector (1/8)(sy sz, sx sz, sx sy).
    expected = 8 * np.linalg.norm(np.array([6.0, 3.0, 2.0]) / 8)
    assert row["liver_surface_true_mm2"] == pytest.approx(expected)
    assert row["liver_surface_true_within_mm2"] == pytest.approx(expected)
    moved = np.roll(labels, 4, axis=2)  # 4 voxels of 3 mm along z: every corner 12 mm away
    shifted = case_metrics(moved, labels, (1.0, 2.0, 3.0))
    assert shifted["liver_hd95"] == pytest.approx(12.0) and shifted["liver_nsd"] == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((6, 6, 6), np.uint8)
    liver = empty.copy()
    liver[1:4, 1:4, 1:4] = 1
    both = case_metrics(liver, liver, (1, 1, 1))
    assert (both["tumor_empty"], both["tumor_dice"], both["tumor_nsd"]) == ("both", 1.0, 1.0)
    assert both["tumor_surface_pred_mm2"] == 0.0 and math.isnan(both["tumor_hd95"])
    tumour = liver.copy()
    tumour[2, 2, 2] = 2
    false_positive = case_metrics(tumour, liver, (1, 1, 1))
    assert (false_positive["tumor_empty"], false_positive["tumor_dice"]) == ("truth", 0.0)
    assert false_positive["tumor_nsd"] == 0.0 and math.isnan(false_positive["tumor_hd95"])
    assert false_positive["tumor_surface_pred_mm2"] > 0  # still counted for pooled NSD
    missed = case_metrics(liver, tumour, (1, 1, 1))
    assert (missed["tumor_empty"], missed["tumor_dice"], missed["tumor_nsd"]) == ("pred", 0.0, 0.0)
    assert math.isnan(missed["tumor_hd95"])
    nothing = case_metrics(empty, empty, (1, 1, 1))
    assert nothing["liver_empty"] == "both" and nothing["liver_nsd"] == 1.0


def test_row_keys_stay_stable():
    row = case_metrics(np.ones((3, 3, 3), np.uint8), np.ones((3, 3, 3), np.uint8), (1, 1, 1))
    for name in ("liver", "tumor"):
        expected = [
            f"{name}_{key}"
            for key in (
                "dice",
                "nsd",
                "hd95",
                "empty",
                "pred_voxels",
                "true_voxels",
                "intersection",
                "surface_pred_mm2",
                "surface_true_mm2",
                "surface_pred_within_mm2",
                "surface_true_within_mm2",
            )
        ]
        if name == "liver":
            assert [key for key in row if key.startswith(name)] == expected
    lesion_values = [
        "tumor_lesion_sensitivity",
        "tumor_lesion_sensitivity_lt10mm",
        "tumor_lesion_sensitivity_10to20mm",
        "tumor_lesion_sensitivity_ge20mm",
        "tumor_lesion_precision",
        "tumor_fp_per_case",
        "tumor_lesion_dice",
        "case_sensitivity",
        "case_specificity",
    ]
    lesion_counts = [
        f"tumor_{key}"
        for key in (
            "lesions_true",
            "lesions_detected",
            "lesions_pred",
            "lesions_pred_matched",
            "lesions_fp",
            "lesion_dice_sum",
            "case_positive",
            "lesions_true_lt10mm",
            "lesions_detected_lt10mm",
            "lesions_true_10to20mm",
            "lesions_detected_10to20mm",
            "lesions_true_ge20mm",
            "lesions_detected_ge20mm",
        )
    ]
    tumour = [*expected[:3], *lesion_values, *expected[3:], *lesion_counts]
    assert [key for key in row if key.startswith(("tumor", "case_"))] == tumour
    assert list(row)[-1] == "lesion_size_edges_mm"


@pytest.mark.parametrize(
    ("pred", "spacing", "tolerance", "mode", "message"),
    [
        (np.full((3, 3, 3), 3, np.uint8), (1, 1, 1), 2.0, "ge1", "pred: label values 3"),
        (np.full((3, 3, 3), -1, np.int16), (1, 1, 1), 2.0, "ge1", "pred: label values -1"),
        (np.full((3, 3, 3), 0.5, np.float32), (1, 1, 1), 2.0, "ge1", "pred: label holds non-"),
        (np.full((3, 3, 3), np.nan), (1, 1, 1), 2.0, "ge1", "pred: label holds non-"),
        (np.zeros((3, 3, 4), np.uint8), (1, 1, 1), 2.0, "ge1", "shape"),
        (np.zeros((3, 3, 3), np.uint8), (1, 0, 1), 2.0, "ge1", "spacing_mm"),
        (np.zeros((3, 3, 3), np.uint8), (1, 1, 1), -1.0, "ge1", "tolerance_mm"),
        (np.zeros((3, 3, 3), np.uint8), (1, 1, 1), 2.0, "gt0", "liver_mode"),
    ],
)
def test_bad_input_raises_a_named_error(pred, spacing, tolerance, mode, message):
    truth = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(TumorsweepError, match=message):
        case_metrics(pred, truth, spacing, tolerance, liver_mode=mode)


def test_evaluate_cases_equals_surface_distance_on_its_prediction(
    realistic_cases, surface_distance, tmp_path
):
    """The trainer's entry point: truth read from NIfTI (Fortran order), prediction inverted."""
    import torch

    from tumorsweep.data.transforms import eval_transforms
    from tumorsweep.evaluate import evaluate_cases, predict_case

    _, truth, spacing, _ = realistic_cases[0]
    truth = np.ascontiguousarray(truth[:, :, 40:64])  # 24 slices of 2.5 mm
    image = np.choose(truth, [-100.0, 120.0, 50.0]).astype(np.float32)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(truth, affine), tmp_path / "ct_label.nii.gz")
    case = {"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "ct_label.nii.gz")}

    class NearestIntensity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            centres = torch.tensor([0.0, 141 / 210, 71 / 210]).view(1, 3, 1, 1, 1)
            return -40 * (x - centres) ** 2  # windowed -100, 120, 50 HU

    model = NearestIntensity()
    settings = dict(roi=(32, 32, 32), overlap=0.25)
    row = evaluate_cases(model, [case], eval_transforms(), **settings)[0]
    pred, stored, header_spacing = predict_case(model, case, eval_transforms(), **settings)
    assert not stored.flags.c_contiguous  # as nibabel hands it over
    expected = _oracle(surface_distance, pred, np.asarray(stored), header_spacing)
    assert 0.8 < expected["liver_dice"] < 1.0
    _assert_matches(row, expected, "evaluate_cases")
