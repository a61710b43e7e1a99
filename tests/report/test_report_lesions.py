"""Lesion rows of the report: below Dice/NSD, with the two-level bootstrap over cases (never
lesions one by one) of the per-case values, NaN where a case has no lesion of a size; and the
plot of sensitivity by size per configuration. A real MLflow store holds two configurations x
three seeds whose per-case CSVs carry the lesion columns, as trials write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from report_util import CASES, SPHERE_SWEPT, RunStore, unet_params  # tests/ is on the path

from tumorsweep.evaluate.registry import summary_names
from tumorsweep.report import build_report, paper_table, plot_lesion_sizes, write_report
from tumorsweep.report.stats import bootstrap_ci

LESION_ROWS = [
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


def _lesion_table(ratio: float, seed: int) -> pd.DataFrame:
    """Per-case values: small lesions found less often with the 0.25 ratio; case 3 tumour-free
    (sensitivities undefined, specificity defined), cases 0-1 without lesions >= 20 mm."""
    rng = np.random.default_rng(int(ratio * 100) + 10 * seed)
    n = len(CASES)
    small = np.clip(0.7 - (0.3 if ratio else 0.0) + rng.normal(0, 0.1, n), 0, 1)
    table = pd.DataFrame(
        {
            "case": CASES,
            "liver_dice": 0.95 + rng.normal(0, 0.005, n),
            "liver_nsd": 0.88 + rng.normal(0, 0.01, n),
            "tumor_dice": 0.6 + rng.normal(0, 0.05, n),
            "tumor_nsd": 0.62 + rng.normal(0, 0.05, n),
            "tumor_lesion_sensitivity_lt10mm": small,
            "tumor_lesion_sensitivity_10to20mm": np.clip(0.9 + rng.normal(0, 0.05, n), 0, 1),
            "tumor_lesion_sensitivity_ge20mm": 1.0,
            "tumor_fp_per_case": rng.integers(0, 3, n).astype(float),
            "case_specificity": np.nan,
        }
    )
    table["tumor_lesion_sensitivity"] = table[
        ["tumor_lesion_sensitivity_lt10mm", "tumor_lesion_sensitivity_10to20mm"]
    ].mean(axis=1)
    table.loc[[0, 1], "tumor_lesion_sensitivity_ge20mm"] = np.nan
    tumour_free = 3
    for column in table.columns:
        if column.startswith("tumor_lesion_sensitivity"):
            table.loc[tumour_free, column] = np.nan
    table.loc[tumour_free, "case_specificity"] = float(seed != 1)
    return table


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    store = RunStore(tmp_path_factory.mktemp("lesion-store"))
    exp = store.experiment("lesions")
    parent = store.sweep(exp, SPHERE_SWEPT, {"synthesis.sphere_ratio": 0.0}, 1000)
    for ratio in (0.0, 0.25):
        for seed in range(3):
            table = _lesion_table(ratio, seed)
            run_id = store.trial(exp, parent, unet_params(ratio), seed, table=table)
            logged = [c for c in table.columns if c in summary_names()]
            values = {m: float(np.nanmean(table[m])) for m in logged if table[m].notna().any()}
            store.client.log_batch(run_id, metrics=[Metric(m, v, 0, 0) for m, v in values.items()])
            store.metrics[("lesions", ratio, seed)] = values
    return store


@pytest.fixture(scope="module")
def report(store: RunStore):
    return build_report(store.uri, "lesions", n_resamples=500)


def test_lesion_rows_sit_below_dice_with_case_bootstrap_intervals(store: RunStore, report) -> None:
    table = paper_table(report.summary, "lesions")
    names = summary_names()
    rows = list(table.index)
    assert rows.index(names["tumor_lesion_sensitivity_lt10mm"]) > rows.index("Tumor NSD")
    for ratio, label in ((0.0, "UNET"), (0.25, "UNET(+25% Sphere)")):
        chosen = report.summary[report.summary["label"] == label].set_index("metric")
        for metric in ("tumor_lesion_sensitivity_lt10mm", "tumor_lesion_sensitivity_ge20mm"):
            tables = [_lesion_table(ratio, seed) for seed in range(3)]
            # trials by seed x cases sorted by name, cases no trial scored dropped (documented)
            matrix = np.array([t.set_index("case")[metric].sort_index().to_numpy() for t in tables])
            matrix = matrix[:, ~np.isnan(matrix).all(axis=0)]
            row = chosen.loc[metric]
            logged = [store.metrics[("lesions", ratio, s)][metric] for s in range(3)]
            assert row["mean"] == pytest.approx(np.mean(logged))
            # cases without such a lesion are left out, cases (not lesions) are resampled
            assert row["n_cases"] == matrix.shape[1] == (8 - 1 if "lt10" in metric else 8 - 3)
            low, high = bootstrap_ci(matrix, n_resamples=500)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
            assert row["ci_method"] == "seeds+cases"
    specificity = report.summary.set_index(["label", "metric"]).loc[("UNET", "case_specificity")]
    assert specificity["mean"] == pytest.approx(2 / 3) and specificity["n_cases"] == 1
    cell = table.loc[names["tumor_lesion_sensitivity_lt10mm"], "UNET(+25% Sphere)"]
    assert "[" in cell and "±" in cell
    assert table.loc[names["tumor_lesion_precision"], "UNET"] == "n/a"  # not logged here
    # the small-lesion drop of the 0.25 column is tested against the baseline like Dice
    drop = report.summary.set_index(["label", "metric"]).loc[
        ("UNET(+25% Sphere)", "tumor_lesion_sensitivity_lt10mm")
    ]
    assert drop["test"] == "two-level t" and drop["p_value"] < 0.05


def test_sensitivity_by_size_plot_is_written_per_experiment(report, tmp_path: Path) -> None:
    figure = plot_lesion_sizes(report.summary, "lesions")
    axes = figure.axes[0]
    ticks = [t.get_text() for t in axes.get_xticklabels()]
    assert ticks == ["< 10mm", "10-20mm", ">= 20mm", "all sizes"]
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["UNET", "UNET(+25% Sphere)"]
    written = write_report(report, tmp_path / "out")
    png = tmp_path / "out" / "lesions_lesion_sizes.png"
    assert png in written and png.read_bytes()[:4] == b"\x89PNG"
    assert set(LESION_ROWS) <= set(report.summary["metric"])
