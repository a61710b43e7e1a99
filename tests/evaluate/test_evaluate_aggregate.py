"""aggregate on hand-made rows: means, population std, pooled values, HD95's undefined cases,
empty counts; and the metric registry as the one place a metric is added."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tumorsweep.cli import main
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import aggregate, case_metrics, registry


def _row(dice: float, nsd: float, hd95: float, empty: str, counts: tuple, surfaces: tuple) -> dict:
    """One case row with the same numbers for liver and tumour."""
    row = {"case": "x"}
    for name in ("liver", "tumor"):
        row.update(
            {
                f"{name}_dice": dice,
                f"{name}_nsd": nsd,
                f"{name}_hd95": hd95,
                f"{name}_empty": empty,
                f"{name}_pred_voxels": counts[0],
                f"{name}_true_voxels": counts[1],
                f"{name}_intersection": counts[2],
                f"{name}_surface_pred_mm2": surfaces[0],
                f"{name}_surface_true_mm2": surfaces[1],
                f"{name}_surface_pred_within_mm2": surfaces[2],
                f"{name}_surface_true_within_mm2": surfaces[3],
            }
        )
    return row


ROWS = [
    _row(0.5, 0.25, 4.0, "", (10, 30, 10), (4.0, 6.0, 1.0, 1.5)),
    _row(1.0, 1.0, math.nan, "both", (0, 0, 0), (0.0, 0.0, 0.0, 0.0)),
    _row(0.0, 0.0, math.nan, "truth", (5, 0, 0), (2.0, 0.0, 0.0, 0.0)),
    _row(0.8, 0.6, 10.0, "", (10, 10, 8), (3.0, 3.0, 1.5, 2.1)),
]


def test_means_std_and_pooled_values():
    summary = aggregate(ROWS)
    assert summary["tumor_dice"] == pytest.approx(2.3 / 4)
    assert summary["tumor_dice_std"] == pytest.approx(np.std([0.5, 1.0, 0.0, 0.8]))
    assert summary["tumor_dice_n"] == 4 and summary["liver_nsd_n"] == 4
    assert summary["tumor_nsd"] == pytest.approx(1.85 / 4)
    # Pooled Dice: 2 * 18 / (25 + 40); pooled NSD: (2.5 + 3.6) / (9 + 9).
    assert summary["tumor_dice_global"] == pytest.approx(36 / 65)
    assert summary["liver_nsd_global"] == pytest.approx(6.1 / 18)
    assert (summary["tumor_empty_both"], summary["tumor_empty_truth"]) == (1, 1)
    assert summary["tumor_empty_pred"] == 0


def test_hd95_mean_over_defined_cases_with_its_count():
    summary = aggregate(ROWS)
    assert summary["tumor_hd95"] == pytest.approx(7.0) and summary["tumor_hd95_n"] == 2
    assert summary["tumor_hd95_std"] == pytest.approx(3.0)
    assert "tumor_hd95_global" not in summary  # no pooled form
    undefined = aggregate([ROWS[1], ROWS[2]])
    assert math.isnan(undefined["liver_hd95"]) and undefined["liver_hd95_n"] == 0
    # NaN only where a mask is empty: elsewhere it is a broken row, not a convention.
    broken = dict(ROWS[0], tumor_hd95=math.nan)
    with pytest.raises(TumorsweepError, match="tumor_hd95"):
        aggregate([broken])


def test_dataframe_input_csv_round_trip_and_real_rows_agree(tmp_path):
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:5, 1:5, 1:5] = 1
    shifted = np.roll(labels, 1, axis=0)
    rows = [case_metrics(labels, labels, (1, 1, 1)), case_metrics(shifted, labels, (1, 1, 1))]
    from_list = aggregate(rows)
    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    from_csv = aggregate(pd.read_csv(tmp_path / "rows.csv"))
    assert from_list.keys() == from_csv.keys()
    for key, value in from_list.items():
        assert from_csv[key] == pytest.approx(value, nan_ok=True), key
    assert from_list["liver_dice"] == pytest.approx((1.0 + 2 * 48 / 128) / 2)
    assert from_list["liver_dice_global"] == pytest.approx(2 * (64 + 48) / 256)
    assert from_list["liver_hd95"] == pytest.approx(0.5) and from_list["liver_hd95_n"] == 2
    assert from_list["tumor_empty_both"] == 2 and from_list["tumor_dice_global"] == 1.0
    assert math.isnan(from_list["tumor_hd95"]) and from_list["tumor_hd95_n"] == 0


def test_bad_rows_raise_named_errors():
    with pytest.raises(TumorsweepError, match="no case rows"):
        aggregate([])
    broken = dict(ROWS[0])
    del broken["tumor_intersection"]
    with pytest.raises(TumorsweepError, match="tumor_intersection"):
        aggregate([broken])
    broken = dict(ROWS[0], liver_dice=None)
    with pytest.raises(TumorsweepError, match="liver_dice"):
        aggregate([broken])


def test_a_metric_added_to_the_registry_reaches_rows_summary_and_cli(monkeypatch, tmp_path, capsys):
    """Adding a registry entry is all it takes: case_metrics, aggregate and the CLI follow."""
    volume = registry.Metric(
        name="volume_ratio",
        display="Volume ratio",
        higher_is_better=False,
        unit="",
        per_class=lambda s: s.pred_voxels / s.true_voxels if s.true_voxels else math.nan,
        counts=lambda s: {"pred_count": s.pred_voxels, "true_count": s.true_voxels},
        pooled=lambda column: column("pred_count").sum() / column("true_count").sum(),
        empty_rule="undefined without truth",
        nan_when_empty=True,
    )
    monkeypatch.setattr(registry, "METRICS", (*registry.METRICS, volume))
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    grown = labels.copy()
    grown[1:7, 2:6, 2:6] = 1
    row = case_metrics(grown, labels, (1, 1, 1))
    assert row["liver_volume_ratio"] == 1.5 and row["liver_pred_count"] == 96
    summary = aggregate([row, case_metrics(labels, labels, (1, 1, 1))])
    assert summary["liver_volume_ratio"] == pytest.approx(1.25)
    assert summary["liver_volume_ratio_global"] == pytest.approx(160 / 128)
    for folder, array in (("pred", grown), ("truth", labels)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / folder / "a.nii.gz")
    out = tmp_path / "rows.csv"
    args = ["--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth")]
    assert main(["evaluate", *args, "--out", str(out), "--no-postprocess"]) == 0
    printed = capsys.readouterr().out
    assert "volume_ratio" in printed and "1.5000+-0.0000 (n=1)" in printed
    assert "Volume ratio undefined without truth" in printed
    assert pd.read_csv(out).loc[0, "liver_pred_count"] == 96
