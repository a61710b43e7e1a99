"""Lesion-level detection metrics against panoptica (the oracle) and hand-built cases.

panoptica runs in its own side environment (it pins pandas < 3): its connected components
(cc3d, 26-connected) and `NaiveThresholdMatching` on IoU give, per case, true positives, false
positives, misses and every reference lesion's size, match and Dice. Its definitions coincide
with ours where no predicted lesion touches two true lesions: any overlap = IoU > 0 with
several predicted components allowed per lesion (split predictions included), and IoU > 0.5
one-to-one where no lesion is split. Hand-built cases check what panoptica does not define:
diameter buckets on anisotropic grids, case-level detection, post-processing, connectivity,
merged predictions; every memory layout and dtype gives the same numbers.
"""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tumorsweep.cli import main
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import aggregate, case_metrics
from tumorsweep.evaluate.lesions import LesionParams, bucket_names, lesion_stats
from tumorsweep.evaluate.metrics import case_metrics_and_lesions

CELL = (16, 16, 20)
GRID = (3, 3, 2)


@pytest.fixture(scope="module")
def panoptica():
    """The side environment with panoptica 2.1.7, built once per machine (never skipped)."""
    from oracles.env import SideEnv

    return SideEnv("panoptica").ensure()


def _ball(shape, centre, radii) -> np.ndarray:
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(axes, centre, radii, strict=True)) <= 1.0


def _grid_case(rng: np.random.Generator, split: bool) -> tuple[np.ndarray, np.ndarray]:
    """Tumour masks: one true lesion or none per grid cell, its prediction missed, moved and
    resized, or (`split`) cut in two by a one-voxel plane; false positives in empty cells.
    Every blob stays a voxel inside its cell, so no prediction touches two true lesions."""
    shape = tuple(c * g for c, g in zip(CELL, GRID, strict=True))
    truth, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    for cell in np.ndindex(*GRID):
        centre = np.array(cell) * CELL + (np.array(CELL) - 1) / 2 + rng.uniform(-1, 1, 3)
        kind = rng.choice(["empty", "fp", "missed", "found", "found", "split"])
        if kind == "fp":
            pred |= _ball(shape, centre, rng.uniform(1.0, 3.0, 3))
            continue
        if kind == "empty":
            continue
        radii = rng.uniform(1.2, 5.5, 3)
        truth |= _ball(shape, centre, radii)
        if kind == "missed":
            continue
        guess = _ball(shape, centre + rng.uniform(-1.5, 1.5, 3), radii * rng.uniform(0.6, 1.1, 3))
        if kind == "split" and split:
            axis = int(rng.integers(0, 3))
            cut = [slice(None)] * 3
            cut[axis] = slice(int(round(centre[axis])), int(round(centre[axis])) + 1)
            guess[tuple(cut)] = False
        pred |= guess
    return pred, truth


def _oracle(panoptica, tmp_path, cases, threshold: float, many_to_one: bool) -> list[dict]:
    arrays = {}
    for index, (pred, truth) in enumerate(cases):
        arrays[f"pred_{index}"], arrays[f"truth_{index}"] = pred, truth
    np.savez(tmp_path / "cases.npz", **arrays)
    out = panoptica.run("panoptica_lesions.py", tmp_path / "cases.npz", threshold, int(many_to_one))
    return json.loads(out.strip().splitlines()[-1])


def _compare(ours, theirs: dict, context: object) -> None:
    assert ours.n_true == theirs["n_ref"], context
    assert ours.n_detected == theirs["tp"], context
    assert ours.n_fp == theirs["fp"], context
    assert ours.n_true - ours.n_detected == theirs["fn"], context
    mine = sorted(
        (int(v), bool(d), round(float(x), 12))
        for v, d, x in zip(ours.voxels, ours.detected, ours.dice, strict=True)
    )
    want = sorted((o["voxels"], o["detected"], round(o["dice"], 12)) for o in theirs["lesions"])
    assert mine == want, context


def test_any_overlap_equals_panoptica_many_to_one_matching(panoptica, tmp_path) -> None:
    rng = np.random.default_rng(7)
    cases = [_grid_case(rng, split=True) for _ in range(6)]
    theirs = _oracle(panoptica, tmp_path, cases, 0.0, many_to_one=True)
    total_split = 0
    for index, ((pred, truth), want) in enumerate(zip(cases, theirs, strict=True)):
        ours = lesion_stats(pred, truth, (0.8, 0.8, 2.5))
        _compare(ours, want, index)
        total_split += ours.n_pred - ours.n_pred_matched - ours.n_fp  # 0: a consistency check
        assert ours.n_pred_matched >= ours.n_detected
    assert total_split == 0
    # the cases are not trivial: misses, false positives and split predictions all occur
    stats = [lesion_stats(p, t, (1, 1, 1)) for p, t in cases]
    assert sum(s.n_true - s.n_detected for s in stats) > 0 and sum(s.n_fp for s in stats) > 0
    assert sum(s.n_pred_matched - s.n_detected for s in stats) > 0  # split lesions


def test_iou_half_equals_panoptica_one_to_one_matching(panoptica, tmp_path) -> None:
    rng = np.random.default_rng(11)
    cases = [_grid_case(rng, split=False) for _ in range(6)]
    theirs = _oracle(panoptica, tmp_path, cases, 0.5, many_to_one=False)
    params = LesionParams(match_iou=0.5)
    for index, ((pred, truth), want) in enumerate(zip(cases, theirs, strict=True)):
        _compare(lesion_stats(pred, truth, (1.0, 1.0, 1.0), params), want, index)
    # some touching predictions miss the 0.5 bar: the threshold changes the answer here
    strict = [lesion_stats(p, t, (1, 1, 1), params).n_detected for p, t in cases]
    loose = [lesion_stats(p, t, (1, 1, 1)).n_detected for p, t in cases]
    assert sum(strict) < sum(loose)


def _labels(tumour_pred: np.ndarray, tumour_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0/1/2 label maps: liver everywhere but a one-voxel border, tumours inside it."""
    liver = np.zeros(tumour_truth.shape, np.uint8)
    liver[1:-1, 1:-1, 1:-1] = 1
    pred, truth = liver.copy(), liver.copy()
    pred[tumour_pred] = 2
    truth[tumour_truth] = 2
    return pred, truth


def _two_lesions_one_missed() -> tuple[np.ndarray, np.ndarray]:
    shape = (30, 30, 30)
    truth, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    truth[4:8, 4:8, 4:8] = True  # 64 voxels: missed
    truth[14:24, 14:24, 14:24] = True  # 1000 voxels: found by a smaller cube
    pred[15:23, 15:23, 15:23] = True  # 512 voxels inside it
    return _labels(pred, truth)


def test_two_lesions_one_missed_by_hand() -> None:
    pred, truth = _two_lesions_one_missed()
    row, lesions = case_metrics_and_lesions(pred, truth, (1.0, 1.0, 1.0), case="a")
    assert row["tumor_lesion_sensitivity"] == 0.5
    assert (row["tumor_lesions_true"], row["tumor_lesions_detected"]) == (2, 1)
    assert row["tumor_fp_per_case"] == 0 and row["tumor_lesion_precision"] == 1.0
    dice = 2 * 512 / (1000 + 512)
    assert row["tumor_lesion_dice"] == pytest.approx(dice / 2)  # the missed lesion counts 0
    # diameters: (6 V / pi)^(1/3): 64 mm^3 -> 4.96 mm (< 10), 1000 mm^3 -> 12.41 mm (10-20)
    assert row["tumor_lesion_sensitivity_lt10mm"] == 0.0
    assert row["tumor_lesion_sensitivity_10to20mm"] == 1.0
    assert math.isnan(row["tumor_lesion_sensitivity_ge20mm"])
    assert row["case_sensitivity"] == 1.0 and math.isnan(row["case_specificity"])
    assert lesions == [
        {
            "case": "a",
            "lesion": 1,
            "voxels": 64,
            "diameter_mm": pytest.approx((6 * 64 / math.pi) ** (1 / 3)),
            "detected": False,
            "matched_dice": 0.0,
        },
        {
            "case": "a",
            "lesion": 2,
            "voxels": 1000,
            "diameter_mm": pytest.approx((6 * 1000 / math.pi) ** (1 / 3)),
            "detected": True,
            "matched_dice": pytest.approx(dice),
        },
    ]


def test_a_lesion_split_in_two_predictions_is_one_detection() -> None:
    shape = (30, 30, 30)
    truth, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    truth[10:20, 10:20, 10:20] = True
    pred[10:20, 10:20, 10:14] = True  # 400 voxels
    pred[10:20, 10:20, 15:18] = True  # 300 voxels, a one-voxel gap between
    labels = _labels(pred, truth)
    row = case_metrics(*labels, (1.0, 1.0, 1.0))
    assert (row["tumor_lesions_pred"], row["tumor_lesions_pred_matched"]) == (2, 2)
    assert row["tumor_lesion_sensitivity"] == 1.0 and row["tumor_fp_per_case"] == 0
    assert row["tumor_lesion_precision"] == 1.0
    assert row["tumor_lesion_dice"] == pytest.approx(2 * 700 / 1700)  # against both pieces
    # IoU of the union 0.7: found at match_iou 0.6; no piece alone reaches 0.5 (0.4, 0.3)
    assert (
        case_metrics(*labels, (1, 1, 1), lesions=LesionParams(match_iou=0.6))[
            "tumor_lesions_detected"
        ]
        == 1
    )
    strict = case_metrics(*labels, (1, 1, 1), lesions=LesionParams(match_iou=0.75))
    assert strict["tumor_lesions_detected"] == 0 and strict["tumor_lesions_fp"] == 2
    assert strict["tumor_lesion_dice"] == 0.0 and strict["tumor_lesion_precision"] == 0.0


def test_one_prediction_over_two_lesions_finds_both() -> None:
    shape = (30, 30, 30)
    truth, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    truth[5:10, 5:10, 5:10] = truth[5:10, 5:10, 12:17] = True
    pred[5:10, 5:10, 5:17] = True
    row = case_metrics(*_labels(pred, truth), (1, 1, 1))
    assert (row["tumor_lesions_detected"], row["tumor_lesions_fp"]) == (2, 0)
    assert row["tumor_lesion_dice"] == pytest.approx(2 * 125 / (125 + 300))


def test_connectivity_joins_lesions_that_touch_at_a_corner() -> None:
    truth = np.zeros((12, 12, 12), bool)
    truth[2:5, 2:5, 2:5] = truth[5:8, 5:8, 5:8] = True  # corner to corner
    assert lesion_stats(truth, truth, (1, 1, 1)).n_true == 1
    assert lesion_stats(truth, truth, (1, 1, 1), LesionParams(connectivity=6)).n_true == 2
    assert lesion_stats(truth, truth, (1, 1, 1), LesionParams(connectivity=18)).n_true == 2


def test_anisotropic_spacing_moves_a_lesion_across_10_mm() -> None:
    truth = np.zeros((20, 20, 20), bool)
    truth[5:10, 5:10, 5:10] = True  # 125 voxels
    pred, labels = _labels(truth, truth)
    iso = case_metrics(pred, labels, (1.0, 1.0, 1.0))  # 125 mm^3 -> 6.2 mm
    thick = case_metrics(pred, labels, (1.0, 1.0, 5.0))  # 625 mm^3 -> 10.6 mm
    assert (iso["tumor_lesions_true_lt10mm"], iso["tumor_lesions_true_10to20mm"]) == (1, 0)
    assert (thick["tumor_lesions_true_lt10mm"], thick["tumor_lesions_true_10to20mm"]) == (0, 1)
    assert math.isnan(thick["tumor_lesion_sensitivity_lt10mm"])
    assert thick["tumor_lesion_sensitivity_10to20mm"] == 1.0
    other = case_metrics(pred, labels, (1, 1, 5), lesions=LesionParams(size_edges_mm=(11, 30)))
    assert other["tumor_lesions_true_lt11mm"] == 1 and "tumor_lesions_true_lt10mm" not in other
    assert bucket_names((7.5, 15)) == ("lt7p5mm", "7p5to15mm", "ge15mm")


def test_case_detection_and_its_undefined_specificity() -> None:
    shape = (20, 20, 20)
    none = np.zeros(shape, bool)
    speck = none.copy()
    speck[3:5, 3:5, 3:5] = True  # 8 voxels of 2 mm^3 = 16 mm^3
    tumour_free_fp = case_metrics(*_labels(speck, none), (1.0, 1.0, 2.0))
    assert tumour_free_fp["case_specificity"] == 0.0 and math.isnan(
        tumour_free_fp["case_sensitivity"]
    )
    assert tumour_free_fp["tumor_lesion_dice"] == 0.0  # false positives only
    assert math.isnan(tumour_free_fp["tumor_lesion_sensitivity"])
    ignored = case_metrics(
        *_labels(speck, none), (1.0, 1.0, 2.0), lesions=LesionParams(case_min_volume_mm3=16)
    )
    assert ignored["case_specificity"] == 1.0 and ignored["tumor_fp_per_case"] == 1
    clean = case_metrics(*_labels(none, none), (1, 1, 1))
    assert clean["case_specificity"] == 1.0 and clean["tumor_lesion_dice"] == 1.0
    assert math.isnan(clean["tumor_lesion_precision"])
    bearing = [case_metrics(*_two_lesions_one_missed(), (1, 1, 1))] * 2
    summary = aggregate([*bearing, tumour_free_fp, clean])
    assert summary["case_specificity"] == 0.5 and summary["case_specificity_n"] == 2
    assert summary["case_sensitivity"] == 1.0 and summary["tumor_cases_no_lesion"] == 2
    assert summary["tumor_lesion_sensitivity"] == 0.5 and summary["tumor_lesion_sensitivity_n"] == 2
    assert summary["tumor_lesion_sensitivity_global"] == 0.5
    assert summary["tumor_fp_per_case"] == 0.25
    # precision pooled: detected 2 over detected 2 + false positives 1
    assert summary["tumor_lesion_precision_global"] == pytest.approx(2 / 3)
    assert summary["tumor_lesion_precision_n"] == 3  # the clean case has no predicted lesion
    assert summary["tumor_lesions_true_total"] == 4 and summary["tumor_lesions_fp_total"] == 1
    only_bearing = aggregate(bearing)
    assert math.isnan(only_bearing["case_specificity"])
    assert only_bearing["case_specificity_n"] == 0


def test_aggregate_refuses_rows_scored_with_different_buckets() -> None:
    pred, truth = _two_lesions_one_missed()
    rows = [
        case_metrics(pred, truth, (1, 1, 1)),
        case_metrics(pred, truth, (1, 1, 1), lesions=LesionParams(size_edges_mm=(5,))),
    ]
    with pytest.raises(TumorsweepError, match="different lesion size edges"):
        aggregate(rows)
    summary = aggregate([rows[1]])
    assert summary["tumor_lesion_sensitivity_lt5mm"] == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"connectivity": 8},
        {"match_iou": 1.0},
        {"size_edges_mm": (20, 10)},
        {"size_edges_mm": ()},
        {"case_min_volume_mm3": -1},
    ],
)
def test_bad_lesion_params_are_one_clear_error(bad) -> None:
    with pytest.raises(TumorsweepError, match="lesion"):
        LesionParams(**bad)


LAYOUTS = {
    "C": np.ascontiguousarray,
    "Fortran": np.asfortranarray,
    "flipped": lambda a: np.flip(np.flip(a, (0, 2)).copy(), (0, 2)),
    "transposed": lambda a: np.ascontiguousarray(a.transpose(1, 2, 0)).transpose(2, 0, 1),
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2, :],
}


def _lesion_columns(row: dict) -> dict:
    return {k: v for k, v in row.items() if "lesion" in k or "case_" in k or "fp" in k}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_memory_layouts_and_dtypes_give_the_same_lesions(layout) -> None:
    rng = np.random.default_rng(5)
    tumour_pred, tumour_truth = _grid_case(rng, split=True)
    pred, truth = _labels(tumour_pred, tumour_truth)
    spacing = (0.7, 0.9, 2.5)
    expected, records = case_metrics_and_lesions(pred, truth, spacing)
    assert expected["tumor_lesions_true"] >= 5 and expected["tumor_lesions_fp"] >= 1
    arrange = LAYOUTS[layout]
    for dtype in (np.uint8, np.int16, np.float32, np.float64):
        row, got = case_metrics_and_lesions(
            arrange(pred.astype(dtype)), arrange(truth.astype(dtype)), spacing
        )
        assert _lesion_columns(row) == pytest.approx(_lesion_columns(expected), nan_ok=True)
        assert got == records
    masks = (arrange(tumour_pred), arrange(tumour_truth))
    direct = lesion_stats(*masks, spacing)
    assert direct.n_true == expected["tumor_lesions_true"]
    assert direct.n_fp == expected["tumor_lesions_fp"]
    liver_only = case_metrics(arrange(pred >= 1), arrange(truth >= 1), spacing)  # bool volumes
    assert liver_only["tumor_lesions_true"] == liver_only["tumor_lesions_pred"] == 0
    assert liver_only["case_specificity"] == 1.0


def test_evaluate_cli_removes_a_false_positive_outside_the_liver(tmp_path, capsys) -> None:
    pred, truth = (np.pad(a, ((0, 0), (0, 0), (0, 50))) for a in _two_lesions_one_missed())
    pred[10:13, 10:13, 75:78] = 2  # a false tumour 47 voxels from the liver: beyond the gate
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    pred_dir.mkdir()
    truth_dir.mkdir()
    healthy_truth = truth.copy()
    healthy_truth[truth == 2] = 1
    healthy_pred = healthy_truth.copy()
    for name, (p, t) in {"a": (pred, truth), "b": (healthy_pred, healthy_truth)}.items():
        nib.save(nib.Nifti1Image(p, np.diag([0.8, 0.8, 2.0, 1.0])), pred_dir / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(t, np.diag([0.8, 0.8, 2.0, 1.0])), truth_dir / f"{name}.nii.gz")
    out = tmp_path / "rows.csv"
    args = ["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = pd.read_csv(out).set_index("case")
    assert rows.loc["a", "tumor_lesions_fp"] == 0  # post-processing dropped it
    assert "tumor_lesion_sensitivity " in printed and "case_specificity" in printed
    assert "2 true, 1 predicted, 0 false positive; 1 cases without a true lesion" in printed
    lesions = pd.read_csv(tmp_path / "rows_lesions.csv")
    assert list(lesions.columns) == [
        "case", "lesion", "voxels", "diameter_mm", "detected", "matched_dice"
    ]  # fmt: skip
    assert lesions["detected"].tolist() == [False, True]
    # 64 voxels of 1.28 mm^3: 6.7 mm
    assert lesions.loc[0, "diameter_mm"] == pytest.approx((6 * 64 * 1.28 / math.pi) ** (1 / 3))
    out2 = tmp_path / "raw.csv"
    raw = ["evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out2)]
    assert main([*raw, "--no-postprocess", "--lesion-match-iou", "0.1"]) == 0
    assert pd.read_csv(out2).set_index("case").loc["a", "tumor_lesions_fp"] == 1
    assert "detected by IoU > 0.1" in capsys.readouterr().out
    capsys.readouterr()
    assert main([*raw, "--case-min-volume-mm3", "-1"]) == 2
    assert "case_min_volume_mm3" in capsys.readouterr().err


def test_evaluate_cli_says_when_specificity_is_undefined(tmp_path, capsys) -> None:
    pred, truth = _two_lesions_one_missed()
    for folder, array in (("pred", pred), ("truth", truth)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / folder / "a.nii.gz")
    args = ["--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]
    assert main(["evaluate", *args, "--out", str(tmp_path / "x.csv")]) == 0
    printed = capsys.readouterr().out
    assert "case_specificity undefined: no tumour-free case in the evaluation set" in printed
