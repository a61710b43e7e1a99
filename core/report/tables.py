"""Paper-style tables from `summarise` output, rendered as Markdown and LaTeX.

Rows Liver Dice, Liver NSD, Tumor Dice, Tumor NSD (plus the trial count); one column per
configuration, each followed by the published value where one matches. A cell reads
`mean ± std [CI low, CI high]*`: mean and sample std over seeds, 95% bootstrap interval over
cases, `*` when the paired Wilcoxon test against the baseline column gives p < 0.05. Columns
without numbers say why (FAILED, running, n/a), never 0.
"""

from __future__ import annotations

import math

import pandas as pd

from core.report.stats import ALPHA, TABLE_METRICS

METRIC_NAMES = {
    "liver_dice": "Liver Dice",
    "liver_nsd": "Liver NSD",
    "tumor_dice": "Tumor Dice",
    "tumor_nsd": "Tumor NSD",
}
TRIALS_ROW = "Trials"
PUBLISHED_SUFFIX = " [published]"


def _given(value: float) -> bool:
    return not (value is None or math.isnan(value))


def format_value(row: pd.Series) -> str:
    """One of our cells: `0.57500 ± 0.01200 [0.53100, 0.61900]*`, or why there is no number."""
    if row["status"] != "ok":
        return row["status"]
    text = f"{row['mean']:.5f}"
    if _given(row["std"]):
        text += f" ± {row['std']:.5f}"
    if _given(row["ci_low"]):
        text += f" [{row['ci_low']:.5f}, {row['ci_high']:.5f}]"
    return text + ("*" if row["significant"] else "")


def format_published(row: pd.Series) -> str:
    """The published cell: the replication's value and the paper's own figure if printed."""
    text = f"{row['published']:.5f}" if _given(row["published"]) else ""
    if _given(row["paper"]):
        text += f" (paper {row['paper']:.4f})"
    return text.strip()


def format_trials(row: pd.Series) -> str:
    """How many trials gave numbers, and how many failed or are still running."""
    parts = [f"{row['n_seeds']}/{row['n_trials']} seeds"]
    if row["n_failed"]:
        parts.append(f"{row['n_failed']} FAILED")
    if row["n_running"]:
        parts.append(f"{row['n_running']} running")
    return ", ".join(parts) + (" (baseline)" if row["is_baseline"] else "")


def paper_table(summary: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The formatted table of one experiment: metric rows x configuration columns (strings)."""
    chosen = summary[summary["experiment"] == experiment]
    columns: dict[str, list[str]] = {}
    for label, config in chosen.groupby("label", sort=False):
        by_metric = config.set_index("metric")
        tumor = by_metric.loc["tumor_dice"]
        columns[label] = [format_value(by_metric.loc[m]) for m in TABLE_METRICS]
        columns[label].append(format_trials(tumor))
        if by_metric["published"].notna().any() or by_metric["paper"].notna().any():
            columns[label + PUBLISHED_SUFFIX] = [
                format_published(by_metric.loc[m]) for m in TABLE_METRICS
            ] + [f"{tumor['published_label']} ({tumor['published_source']})"]
    index = [METRIC_NAMES[m] for m in TABLE_METRICS] + [TRIALS_ROW]
    return pd.DataFrame(columns, index=index)


def table_notes(summary: pd.DataFrame, experiment: str) -> list[str]:
    """Footnotes for one experiment's table: what the numbers and the star mean."""
    chosen = summary[summary["experiment"] == experiment]
    baselines = chosen["baseline_label"].dropna().unique()
    against = ", ".join(baselines) if len(baselines) else "no baseline column found"
    return [
        "mean ± sample std over seeds [95% bootstrap CI over cases, seed-averaged per case]",
        f"* p < {ALPHA:g}, two-sided paired Wilcoxon over shared cases against {against}",
        "published: koukihk/Synthetic-Tumors replication (paper: the original paper's figure)",
    ]


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown of a string table, its index as the first column."""
    header = ["", *table.columns]
    lines = [_md_row(header), "|" + "|".join([" :--- "] + [" :---: "] * len(table.columns)) + "|"]
    lines += [
        _md_row([str(name), *row]) for name, row in zip(table.index, table.values, strict=True)
    ]
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write ± in math mode)."""
    return "".join(_LATEX_ESCAPES.get(char, char) for char in str(text))


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    """A LaTeX `table` with a `tabular` (booktabs rules) of a string table."""
    header = " & ".join(["", *map(latex_escape, table.columns)]) + r" \\"
    body = [
        " & ".join([latex_escape(name), *map(latex_escape, row)]) + r" \\"
        for name, row in zip(table.index, table.values, strict=True)
    ]
    return "\n".join(
        [
            r"\begin{table}[ht]",
            r"\centering",
            r"\begin{tabular}{l" + "c" * len(table.columns) + "}",
            r"\toprule",
            header,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{{latex_escape(caption)}}}" if caption else "",
            r"\end{table}",
        ]
    ).replace("\n\n", "\n")


def seeds_table(summary: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """One row per configuration: tumour Dice mean, std, seeds, liver Dice, published value."""
    chosen = summary[summary["experiment"] == experiment].set_index(["label", "metric"])
    rows = {}
    for label in dict.fromkeys(chosen.index.get_level_values("label")):
        tumor, liver = chosen.loc[(label, "tumor_dice")], chosen.loc[(label, "liver_dice")]
        ok = tumor["status"] == "ok"
        rows[label] = {
            "Tumor Dice": f"{tumor['mean']:.5f}" if ok else tumor["status"],
            "± std": f"{tumor['std']:.5f}" if ok and _given(tumor["std"]) else "",
            "Seeds": format_trials(tumor),
            "Liver Dice": f"{liver['mean']:.5f}" if liver["status"] == "ok" else liver["status"],
            "Published Tumor Dice": format_published(tumor),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
