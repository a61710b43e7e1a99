"""Figures of a study: metrics against the swept knob with CI bars, the per-case spread, and
lesion sensitivity by lesion size per configuration.

Figures are built without pyplot (no global figure state, no display needed): save them with
`fig.savefig`, or show them in a notebook.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tumorsweep.report.summary import case_means
from tumorsweep.report.tables import METRIC_NAMES, column_name


def _positions(configs: pd.DataFrame) -> tuple[np.ndarray, str]:
    """x of each configuration: the knob's value when one numeric knob is swept, else rank."""
    swept = configs["swept"].iloc[0]
    if len(swept) == 1 and swept[0] in configs:
        values = configs[swept[0]]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric and configs["eval_set"].nunique() == 1 and values.nunique() == len(values):
            return values.to_numpy(dtype=float), swept[0]
    return np.arange(len(configs), dtype=float), "configuration"


def _legend_text(rows: pd.DataFrame, ok: pd.Series) -> str:
    """What our markers and bars are, claiming only what is drawn."""
    if (ok & rows["ci_low"].notna()).any():
        return (
            "ours: mean (95% CI)"
            if (ok & rows["ci_low"].isna()).sum() == 0
            else ("ours: mean (95% CI; ± std where no CI)")
        )
    if (ok & rows["std"].notna()).any():
        return "ours: mean ± std (no CI: no per-case values)"
    return "ours: mean (no CI: no per-case values)"


def plot_knob(
    summary: pd.DataFrame, experiment: str, metrics: tuple[str, ...] = ("tumor_dice", "tumor_nsd")
) -> Figure:
    """Mean over seeds per configuration with its 95% bootstrap CI (std where no CI), the
    baseline's mean as a dashed line, and the published value as a cross where it was scored
    with our protocol; the x ticks read like the table's columns ("+5% Sphere"), a column
    without numbers shows its status, and the legend sits below the axes."""
    chosen = summary[summary["experiment"] == experiment]
    fig = Figure(figsize=(5.5 * len(metrics), 4.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        rows = chosen[chosen["metric"] == metric].reset_index(drop=True)
        x, x_name = _positions(rows)
        ok = rows["status"] == "ok"
        low = (rows["mean"] - rows["ci_low"]).where(rows["ci_low"].notna(), rows["std"])
        high = (rows["ci_high"] - rows["mean"]).where(rows["ci_low"].notna(), rows["std"])
        bars = np.nan_to_num(np.vstack([low, high]).astype(float)[:, ok.to_numpy()], nan=0.0)
        ax.errorbar(
            x[ok], rows["mean"][ok], yerr=bars, fmt="o", color="C0", capsize=4,
            label=_legend_text(rows, ok),
        )  # fmt: skip
        base = rows[rows["is_baseline"] & ok]
        if not base.empty:
            ax.axhline(base["mean"].iloc[0], color="0.5", ls="--", lw=1,
                       label=f"baseline {base['label'].iloc[0]}")  # fmt: skip
        published = rows["published"].notna() & rows["published_comparable"]
        if published.any():
            ax.plot(x[published], rows["published"][published], "x", color="C3", label="published")
        for xi, status in zip(x[~ok], rows["status"][~ok], strict=True):
            ax.annotate(status, (xi, 0.02), xycoords=("data", "axes fraction"), ha="center")
        names = [column_name(row) for _, row in rows.iterrows()]
        if x_name == "configuration":
            ax.set_xticks(x, names, rotation=30, ha="right")
        else:  # the knob to scale, each tick named like its table column, on two lines
            ax.set_xticks(x, [n.replace("(", "\n(", 1) for n in names], fontsize="small")
        ax.set_xlabel("configuration" if x_name == "configuration" else f"{x_name} (to scale)")
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
        ax.set_title(f"{experiment}: {METRIC_NAMES.get(metric, metric)}")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def plot_per_case(
    per_case: pd.DataFrame, summary: pd.DataFrame, experiment: str, metric: str = "tumor_dice"
) -> Figure:
    """Box plot of seed-averaged per-case values per configuration, each case a dot."""
    labels = list(dict.fromkeys(summary[summary["experiment"] == experiment]["label"]))
    values = [case_means(per_case, experiment, label, metric).to_numpy() for label in labels]
    fig = Figure(figsize=(max(5, 1.2 * len(labels)), 4))
    ax = fig.subplots()
    positions = np.arange(1, len(labels) + 1)
    filled = [i for i, v in enumerate(values) if v.size]
    if filled:
        ax.boxplot([values[i] for i in filled], positions=positions[filled], showfliers=False)
    jitter = np.random.default_rng(0)
    for position, cases in zip(positions, values, strict=True):
        offsets = jitter.uniform(-0.15, 0.15, cases.size)
        ax.plot(position + offsets, cases, ".", color="C0", alpha=0.6)
    for position, cases in zip(positions, values, strict=True):
        if not cases.size:
            ax.annotate("no per-case values", (position, 0.5), xycoords=("data", "axes fraction"),
                        ha="center", rotation=90, color="0.4")  # fmt: skip
    chosen = summary[(summary["experiment"] == experiment) & (summary["metric"] == metric)]
    names = [column_name(row) for _, row in chosen.drop_duplicates("label").iterrows()]
    ax.set_xticks(positions, names, rotation=30, ha="right")
    ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} per case")
    ax.set_title(f"{experiment}: per-case spread (mean over seeds per case)")
    fig.tight_layout()
    return fig


LESION_SENSITIVITY = "tumor_lesion_sensitivity"


def plot_lesion_sizes(summary: pd.DataFrame, experiment: str) -> Figure:
    """Lesion sensitivity per equivalent-diameter bucket (and over all sizes) per configuration:
    mean over trials with its 95% bootstrap CI over cases (and seeds), configurations side by
    side; a bucket without any true lesion in a configuration's cases has no point."""
    chosen = summary[summary["experiment"] == experiment]
    prefix = LESION_SENSITIVITY + "_"
    buckets = [
        m
        for m in dict.fromkeys(chosen["metric"])
        if m.startswith(prefix) and not m.endswith("_global")
    ]
    metrics = [*buckets, LESION_SENSITIVITY]
    names = [m[len(prefix) :].replace("lt", "< ").replace("ge", ">= ") for m in buckets]
    names = [n.replace("to", "-") for n in names] + ["all sizes"]
    labels = list(dict.fromkeys(chosen["label"]))
    fig = Figure(figsize=(max(5.0, 1.4 * len(metrics) + 0.4 * len(labels)), 4))
    ax = fig.subplots()
    width = 0.8 / max(len(labels), 1)
    for index, label in enumerate(labels):
        rows = chosen[chosen["label"] == label].set_index("metric")
        rows = rows.reindex(metrics)
        x = np.arange(len(metrics)) + (index - (len(labels) - 1) / 2) * width
        ok = (rows["status"] == "ok").to_numpy() & rows["mean"].notna().to_numpy()
        low = (rows["mean"] - rows["ci_low"]).to_numpy(dtype=float)
        high = (rows["ci_high"] - rows["mean"]).to_numpy(dtype=float)
        errors = np.nan_to_num(np.vstack([low, high])[:, ok], nan=0.0)
        ax.errorbar(
            x[ok], rows["mean"].to_numpy(dtype=float)[ok], yerr=errors, fmt="o", capsize=3,
            label=label,
        )  # fmt: skip
    ax.set_xticks(np.arange(len(metrics)), names)
    ax.set_xlabel("true lesion size (equivalent diameter, mm)")
    ax.set_ylabel("lesion sensitivity (mean over cases)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{experiment}: lesions found by size (95% CI)")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig
