"""aggregate on hand-made rows: means, population std, pooled values and empty counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import TumorsweepError
from core.evaluate import aggregate, case_metrics


def _row(dice: float, nsd: float, empty: str, counts: tuple, surfaces: tuple) -> dict:
    """One case row with the same numbers for liver and tumour."""
    row = {"case": "x"}
    for name in ("liver", "tumor"):
        row.update(
            {
                f"{name}_dice": dice,
                f"{name}_nsd": nsd,
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
    _row(0.5, 0.25, "", (10, 30, 10), (4.0, 6.0, 1.0, 1.5)),
    _row(1.0, 1.0, "both", (0, 0, 0), (0.0, 0.0, 0.0, 0.0)),
    _row(0.0, 0.0, "truth", (5, 0, 0), (2.0, 0.0, 0.0, 0.0)),
]


def test_means_std_and_pooled_values():
    summary = aggregate(ROWS)
    assert summary["tumor_dice"] == pytest.approx(0.5)
    assert summary["tumor_dice_std"] == pytest.approx(np.std([0.5, 1.0, 0.0]))
    assert summary["tumor_dice_n"] == 3 and summary["liver_nsd_n"] == 3
    assert summary["tumor_nsd"] == pytest.approx(1.25 / 3)
    # Pooled Dice: 2 * 10 / (15 + 30); pooled NSD: (1 + 1.5) / (6 + 6).
    assert summary["tumor_dice_global"] == pytest.approx(20 / 45)
    assert summary["liver_nsd_global"] == pytest.approx(2.5 / 12)
    assert (summary["tumor_empty_both"], summary["tumor_empty_truth"]) == (1, 1)
    assert summary["tumor_empty_pred"] == 0


def test_dataframe_input_and_real_rows_agree():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:5, 1:5, 1:5] = 1
    shifted = np.roll(labels, 1, axis=0)
    rows = [case_metrics(labels, labels, (1, 1, 1)), case_metrics(shifted, labels, (1, 1, 1))]
    from_list = aggregate(rows)
    assert from_list == aggregate(pd.DataFrame(rows))
    assert from_list["liver_dice"] == pytest.approx((1.0 + 2 * 48 / 128) / 2)
    assert from_list["liver_dice_global"] == pytest.approx(2 * (64 + 48) / 256)
    assert from_list["tumor_empty_both"] == 2 and from_list["tumor_dice_global"] == 1.0


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
