"""Paper-style tables from `summarise` output, rendered as Markdown and LaTeX.

Rows Liver Dice, Liver NSD, Tumor Dice, Tumor NSD, HD95, then the lesion-level detection rows
(tumour lesion sensitivity overall and by size, precision, false positives per case, lesion-wise
Dice, case sensitivity and specificity; plus the trial count); one column per
configuration. A cell reads `mean ± std [CI low, CI high]*`: mean and sample std over seeds
(with cross-validation: over folds, or seeds x folds, and the table says so), the 95% bootstrap
interval (two-level over seeds and cases, or cases only for one seed; cases pooled over folds), `*`
when the paired test against the baseline column survives Holm's correction over the table.
A published value stands in the column beside ours only when it was scored with our
evaluation protocol on our evaluation set; matched but scored otherwise, it goes to a
separate column at the right whose name says both protocols. Columns without numbers say why
(FAILED, KILLED, running, stale (driver gone), n/a), never 0. `table_notes` says all of this
for one table, including overrides of the leakage guards and the sweep's data warnings, each
column's training pool per source (and where it differs in size from the published column's),
and the published columns that no public code makes, with the reading ours used.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from tumorsweep.evaluate.registry import summary_names
from tumorsweep.report.reference import PROTOCOLS
from tumorsweep.report.runs import PER_CASE_ARTIFACT
from tumorsweep.report.stats import (
    ALPHA,
    CI_CASES,
    CI_TWO_LEVEL,
    FOLD_PAIRED_T,
    SIGN_FLIP,
    TWO_LEVEL_T,
)
from tumorsweep.report.summary import TABLE_METRICS
from tumorsweep.synthesis.config import SPHERE_MODES

METRIC_NAMES = summary_names()
TRIALS_ROW = "Trials"
PUBLISHED_SUFFIX = " [published]"
MISSING_MARK = " †"  # a column whose per-case tables were not found (no interval, no test)
# What the notes say about each override param a trial set true.
OVERRIDE_NOTES = {
    "eval.allow_test_selection": (
        "checkpoints may have been selected on the test list, so these numbers are optimistic"
    ),
    "data.allow_overlap": (
        "training cases may overlap the validation or test list, so these numbers are optimistic"
    ),
    "generator.released": (
        "the DiffTumor generator is Chen et al.'s released weights, trained on cases outside "
        "this study's control (they may include its validation or test cases)"
    ),
}


def _given(value: float) -> bool:
    return not (value is None or math.isnan(value))


def decimals(metric: str) -> int:
    """Digits a metric is printed with: distances (HD95, mm) 2, scores and rates 5."""
    return 2 if metric.endswith("hd95") else 5


def format_value(row: pd.Series, interval: bool = True) -> str:
    """One of our cells: `0.57500 ± 0.01200 [0.53100, 0.61900]*` (HD95 in mm with 2 decimals),
    without the interval when `interval` is false, or why there is no number."""
    if row["status"] != "ok":
        return row["status"]
    digits = decimals(str(row.get("metric", "")))
    text = f"{row['mean']:.{digits}f}"
    if _given(row["std"]):
        text += f" ± {row['std']:.{digits}f}"
    if interval and _given(row["ci_low"]):
        text += f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"
    return text + ("*" if row["significant"] else "")


def format_interval(row: pd.Series) -> str:
    """The 95% interval of one of our cells alone (`[0.53100, 0.61900]`), or ""."""
    if row["status"] != "ok" or not _given(row["ci_low"]):
        return ""
    digits = decimals(str(row.get("metric", "")))
    return f"[{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


def format_published(row: pd.Series) -> str:
    """The published cell: the replication's value and the paper's own figure if printed."""
    text = f"{row['published']:.5f}" if _given(row["published"]) else ""
    if _given(row["paper"]):
        text += f" (paper {row['paper']:.4f})"
    return text.strip()


def format_trials(row: pd.Series) -> str:
    """How many trials (seeds, folds, or seeds x folds) gave numbers, and how many failed, were
    killed or are unfinished."""
    parts = [f"{row['n_seeds']}/{row['n_trials']} {row['unit']}"]
    for count, word in (
        ("n_failed", "FAILED"),
        ("n_killed", "KILLED"),
        ("n_running", "running"),
        ("n_stale", "stale (driver gone)"),
    ):
        if row[count]:
            parts.append(f"{row[count]} {word}")
    return ", ".join(parts) + (" (baseline)" if row["is_baseline"] else "")


def published_apart_name(row: pd.Series) -> str:
    """Column name of a published value scored with another protocol than ours."""
    return (
        f"{row['label']} [published, {row['published_protocol']} protocol; ours: {row['protocol']}]"
    )


def column_name(row: pd.Series) -> str:
    """A configuration's column header: its label, marked `MISSING_MARK` when per-case tables
    of its trials were not found (no interval, no test)."""
    return row["label"] + (MISSING_MARK if row.get("n_per_case_missing", 0) else "")


def paper_table(summary: pd.DataFrame, experiment: str, intervals: bool = True) -> pd.DataFrame:
    """The formatted table of one experiment: metric rows x configuration columns (strings);
    with `intervals` false the cells hold mean ± std only (`interval_table` holds the rest)."""
    chosen = summary[summary["experiment"] == experiment]
    columns: dict[str, list[str]] = {}
    apart: dict[str, list[str]] = {}
    for _, config in chosen.groupby("label", sort=False):
        by_metric = config.set_index("metric", drop=False)
        tumor = by_metric.loc["tumor_dice"]
        name = column_name(tumor)
        columns[name] = [format_value(by_metric.loc[m], intervals) for m in TABLE_METRICS]
        columns[name].append(format_trials(tumor))
        if by_metric["published_label"].notna().any():
            cells = [format_published(by_metric.loc[m]) for m in TABLE_METRICS]
            cells.append(f"{tumor['published_label']} ({tumor['published_source']})")
            if tumor["published_comparable"]:
                columns[name + PUBLISHED_SUFFIX] = cells
            else:
                apart[published_apart_name(tumor)] = cells
    index = [METRIC_NAMES[m] for m in TABLE_METRICS] + [TRIALS_ROW]
    return pd.DataFrame({**columns, **apart}, index=index)


def interval_table(summary: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The 95% bootstrap intervals of `paper_table`'s columns of ours (metric rows), for the
    second LaTeX table that keeps the first one narrow enough for a page."""
    chosen = summary[summary["experiment"] == experiment]
    columns = {}
    for _, config in chosen.groupby("label", sort=False):
        by_metric = config.set_index("metric", drop=False)
        columns[column_name(by_metric.loc["tumor_dice"])] = [
            format_interval(by_metric.loc[m]) for m in TABLE_METRICS
        ]
    return pd.DataFrame(columns, index=[METRIC_NAMES[m] for m in TABLE_METRICS])


def _labels(rows: pd.DataFrame) -> str:
    return ", ".join(dict.fromkeys(rows["label"]))


def _statistics_notes(chosen: pd.DataFrame) -> list[str]:
    baselines = chosen["baseline_label"].dropna().unique()
    against = ", ".join(baselines) if len(baselines) else "no baseline column found"
    n_tests = int(chosen["p_value"].notna().sum())
    units = " or ".join(dict.fromkeys(chosen["unit"]))
    if chosen["ci_low"].notna().any():
        notes = [f"mean ± sample std over {units} [95% bootstrap CI of the mean]"]
    else:
        notes = [f"mean ± sample std over {units}; no 95% intervals (no per-case values)"]
    notes += _missing_notes(chosen)
    if n_tests:
        notes.append(
            f"* differs from {against} at {ALPHA:g} after Holm's correction over the {n_tests} "
            "comparisons (metric x column) of this table; raw and adjusted p in summary.csv"
        )
    elif len(baselines):
        notes.append(f"no paired tests: no column besides {against} has per-case values")
    else:
        notes.append("no paired tests: no baseline column found")
    ci = {
        CI_TWO_LEVEL: "two-level bootstrap (seeds, then cases) for ",
        CI_CASES: "bootstrap over cases only (one seed: seed-to-seed variance not included) for ",
    }
    parts = [
        text + _labels(chosen[chosen["ci_method"] == method])
        for method, text in ci.items()
        if (chosen["ci_method"] == method).any()
    ]
    if parts:
        notes.append("95% CI: " + "; ".join(parts))
    folded = chosen[chosen["n_folds"] > 0]
    if not folded.empty:
        notes.append(
            f"cross-validation in {_labels(folded)}: each case scored by the fold(s) whose test "
            "list holds it; intervals pool the cases of all folds (one value per case and seed)"
        )
    tests = {
        TWO_LEVEL_T: "two-level Welch t-test of the per-trial means over shared cases, "
        "seed-to-seed and case-to-case variance both in its error, for ",
        SIGN_FLIP: "case-level sign-flip test for ",
        FOLD_PAIRED_T: "t-test of the per-fold mean differences (folds paired: same training "
        "and test cases), fold-to-fold and case-to-case variance both in its error, for ",
    }
    for method, text in tests.items():
        rows = chosen[chosen["test"] == method]
        if rows.empty:
            continue
        note = "p: " + text + _labels(rows)
        if method == SIGN_FLIP:
            note += " (a column with a single seed: the p-value cannot account for seed variance)"
        notes.append(note)
    return notes


def _missing_notes(chosen: pd.DataFrame) -> list[str]:
    """Columns whose per-case tables were not found, and what they therefore lack."""
    if "n_per_case_missing" not in chosen.columns:
        return []
    configs = chosen.drop_duplicates("label")
    lacking = configs[configs["n_per_case_missing"] > 0]
    if lacking.empty:
        return []
    counts = ", ".join(
        f"{row['label']} ({row['n_per_case_missing']} of {row['n_finished']} finished trials)"
        for _, row in lacking.iterrows()
    )
    return [
        f"{MISSING_MARK.strip()} per-case tables ({PER_CASE_ARTIFACT}) not found for {counts}: "
        "no 95% interval and no paired test in these columns, nor against them; the runs and "
        "where they were looked for are listed in report.md (--artifact-root DIR if the "
        "artifact folder moved)"
    ]


_SOURCES = {
    "replication": "koukihk/Synthetic-Tumors replication, their own training (paper: the "
    "original paper's figure)",
    "checkpoint": "the authors' released checkpoints, evaluated by the koukihk/Synthetic-Tumors "
    "replication (paper: the original paper's figure)",
    "faq": "the SyntheticTumors FAQ (tumour Dice only; it names no evaluation set, taken as "
    "Hu's Val)",
}


def _by_deviations(rows: pd.DataFrame):
    """(deviations, rows) for the configurations that left the paper preset, grouped."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, deviations in rows["deviations"].items():
        if deviations:
            groups.setdefault(tuple(deviations), []).append(index)
    return [(list(key), rows.loc[indices]) for key, indices in groups.items()]


def _published_notes(chosen: pd.DataFrame) -> list[str]:
    matched = chosen[chosen["published_label"].notna()]
    if matched.empty:
        return [
            "no published value matches these columns (backbone, evaluation set "
            f"{', '.join(map(str, chosen['eval_set'].unique()))} and swept params)"
        ]
    sources = list(dict.fromkeys(matched["published_source"]))
    notes = ["published: " + "; ".join(_SOURCES.get(s, s) for s in sources)]
    beside = matched[matched["published_comparable"]]
    if not beside.empty:
        protocol = beside["protocol"].iloc[0]
        notes.append(
            f"published values beside ours were scored like ours ({protocol} protocol) on the "
            "same evaluation set"
        )
    for deviations, rows in _by_deviations(beside):
        notes.append(
            f"{_labels(rows)} also differ from the published protocol in "
            f"{', '.join(deviations)}: the published value beside them is a reference, not a "
            "replication of that column"
        )
    for (theirs, ours), rows in matched[~matched["published_comparable"]].groupby(
        ["published_protocol", "protocol"], sort=False
    ):
        notes.append(
            f"published values for {_labels(rows)} were scored with the {theirs} protocol "
            f"({PROTOCOLS.get(theirs, theirs)}), ours with {ours} "
            f"({PROTOCOLS.get(ours, 'several protocols')}): not comparable, so they are shown "
            "apart in the right-hand columns, not beside ours"
        )
    return notes


def pool_text(pool: dict[str, dict[str, int]]) -> str:
    """`116 cases (healthy: 116 healthy; Task03_Liver: 0)`-style text of a training pool."""
    arms = {"healthy": "healthy", "real_tumor": "real-tumour"}
    total = sum(sum(counts.values()) for counts in pool.values())
    parts = [
        f"{source}: "
        + (" + ".join(f"{n} {arms.get(arm, arm)}" for arm, n in counts.items() if n) or "0")
        for source, counts in pool.items()
    ]
    return f"{total} cases ({'; '.join(parts)})"


def _pool_total(pool: dict[str, dict[str, int]]) -> int:
    return sum(sum(counts.values()) for counts in pool.values())


def _pool_notes(chosen: pd.DataFrame) -> list[str]:
    """Each column's training pool per source, and where it differs in size from the pool of
    the published column matched to it."""
    if "train_pool" not in chosen.columns:
        return []
    configs = chosen[chosen["metric"] == "tumor_dice"].drop_duplicates("label")
    pools = {row["label"]: json.loads(row["train_pool"] or "{}") for _, row in configs.iterrows()}
    groups: dict[str, list[str]] = {}
    for label, pool in pools.items():
        if pool:
            groups.setdefault(pool_text(pool), []).append(label)
    notes = [f"training pool of {', '.join(labels)}: {text}" for text, labels in groups.items()]
    for _, row in configs.iterrows():
        published, pool = row.get("published_pool"), pools[row["label"]]
        if not isinstance(published, dict) or not pool:
            continue
        if _pool_total(pool) != published["cases"]:
            notes.append(
                f"{row['label']} trained on {_pool_total(pool)} cases, the published "
                f"{row['published_label']} on {published['text']}: the training pools differ, "
                "so the published value is a reference, not a replication of this column"
            )
    return notes


def _reading(row: pd.Series) -> str:
    """How our column read a published column that no public code defines."""
    param = row.get("published_reading")
    value = row.get(param) if isinstance(param, str) else None
    if param == "synthesis.sphere_mode":
        mode = value if value in SPHERE_MODES else "replace"
        return f"synthesis.sphere_mode={mode}: {SPHERE_MODES[mode]}"
    if param == "synthesis.style":
        return (
            f"synthesis.style={value}: tumorsweep's own implementation from the paper's "
            "description (synthesis.zhang.*)"
        )
    return f"{param}={value}" if param else "tumorsweep's own"


def _no_code_notes(chosen: pd.DataFrame) -> list[str]:
    """Published values no public code makes, each with the reading our column used."""
    if "published_no_code" not in chosen.columns:
        return []
    configs = chosen[chosen["metric"] == "tumor_dice"].drop_duplicates("label")
    rows = configs[[isinstance(v, str) and bool(v) for v in configs["published_no_code"]]]
    groups: dict[tuple[str, str], list[str]] = {}
    for _, row in rows.iterrows():
        key = (row["published_no_code"], _reading(row))
        groups.setdefault(key, []).append(f"{row['published_label']} (beside {row['label']})")
    return [
        f"no public implementation: the published {', '.join(labels)}: {why}; so no published "
        f"code is replicated here, ours reads the column as {reading}"
        for (why, reading), labels in groups.items()
    ]


def _trust_notes(chosen: pd.DataFrame) -> list[str]:
    configs = chosen.drop_duplicates("label")
    notes = []
    for name, consequence in OVERRIDE_NOTES.items():
        rows = configs[[name in overrides for overrides in configs["overrides"]]]
        if not rows.empty:
            notes.append(f"override {name}=true in {_labels(rows)}: {consequence}")
    warnings = dict.fromkeys(w for ws in configs["data_warnings"] for w in ws)
    notes += [f"data warning recorded by the sweep: {warning}" for warning in warnings]
    if configs["n_killed"].any():
        notes.append("KILLED: trials stopped by a signal before they finished (no numbers)")
    if configs["n_stale"].any():
        notes.append(
            "stale (driver gone): trials MLflow still lists as RUNNING whose sweep driver on "
            "this machine no longer exists; they will not finish"
        )
    return notes


def table_notes(summary: pd.DataFrame, experiment: str) -> list[str]:
    """Footnotes for one experiment's table: what the numbers, the intervals and the star
    mean, which published values are comparable, and what makes numbers less trustworthy."""
    chosen = summary[summary["experiment"] == experiment]
    return (
        _statistics_notes(chosen)
        + _published_notes(chosen)
        + _no_code_notes(chosen)
        + _pool_notes(chosen)
        + _trust_notes(chosen)
    )


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
    "†": r"$^\dagger$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write ± in math mode)."""
    return "".join(_LATEX_ESCAPES.get(char, char) for char in str(text))


def notes_markdown(notes: list[str]) -> str:
    """Notes as a Markdown list; a note that starts with a marker (`*`, `†`) keeps it
    (escaped, so `* differs...` is not read as a nested bullet)."""
    return "\n".join("- " + (f"\\{n}" if n.startswith("*") else n) for n in notes)


def to_latex(table: pd.DataFrame, caption: str = "", notes: list[str] | None = None) -> str:
    """A LaTeX `table` with a `tabular` (booktabs rules) of a string table, scaled down to the
    text width when wider (needs booktabs and graphicx), and `notes` as footnote lines under
    it, each keeping its marker (`*`, `†`)."""
    header = " & ".join(["", *map(latex_escape, table.columns)]) + r" \\"
    body = [
        " & ".join([latex_escape(name), *map(latex_escape, row)]) + r" \\"
        for name, row in zip(table.index, table.values, strict=True)
    ]
    footnotes = [rf"\par\footnotesize {latex_escape(note)}" for note in notes or []]
    return "\n".join(
        [
            r"\begin{table}[ht]",
            r"\centering",
            rf"\caption{{{latex_escape(caption)}}}" if caption else "",
            r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
            r"\begin{tabular}{l" + "c" * len(table.columns) + "}",
            r"\toprule",
            header,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}}",
            *footnotes,
            r"\end{table}",
        ]
    ).replace("\n\n", "\n")


def seeds_table(summary: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """One row per configuration: tumour Dice mean, std, seeds, liver Dice, and the published
    value where it was scored with our protocol. A column empty in every row is left out
    (`seeds_table_notes` says why)."""
    chosen = summary[summary["experiment"] == experiment].set_index(["label", "metric"])
    trials = "Seeds" if (chosen["unit"] == "seeds").all() else "Trials"
    rows = {}
    for label in dict.fromkeys(chosen.index.get_level_values("label")):
        tumor, liver = chosen.loc[(label, "tumor_dice")], chosen.loc[(label, "liver_dice")]
        ok = tumor["status"] == "ok"
        rows[label] = {
            "Tumor Dice": f"{tumor['mean']:.5f}" if ok else tumor["status"],
            "± std": f"{tumor['std']:.5f}" if ok and _given(tumor["std"]) else "",
            trials: format_trials(tumor),
            "Liver Dice": f"{liver['mean']:.5f}" if liver["status"] == "ok" else liver["status"],
            "Published Tumor Dice": format_published(tumor)
            if tumor["published_comparable"]
            else "",
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    empty = [c for c in ("± std", "Published Tumor Dice") if c in table and (table[c] == "").all()]
    return table.drop(columns=empty)


def seeds_table_notes(table: pd.DataFrame) -> list[str]:
    """Why a column of `seeds_table` is missing, and where the intervals are."""
    notes = []
    if "± std" not in table:
        notes.append("no ± std: every configuration ran one seed (--seeds N for more)")
    if "Published Tumor Dice" not in table:
        notes.append(
            "no published column: no configuration matches a published one in protocol and "
            "evaluation set (the demo scores with tumorsweep's protocol on phantom CTs)"
        )
    notes.append("intervals and paired tests against the baseline: tumorsweep report")
    return notes
