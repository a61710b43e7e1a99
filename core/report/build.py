"""From an MLflow store to a written report: load, summarise, render, save.

Experiment names come from the store and may be anything (`/abs/x`, `../../x`): files are
named by `file_stem`, written to a scratch folder inside the output folder first and moved
into place only when all of them were written, so a report never lands outside `--out` and
a failure leaves no half-written report behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tumorsweep.errors import TumorsweepError
from tumorsweep.report.plots import plot_knob, plot_lesion_sizes, plot_per_case
from tumorsweep.report.runs import (
    MISSING_COLUMNS,
    PER_CASE_COLUMNS,
    load_runs,
    missing_lines,
    read_per_case,
)
from tumorsweep.report.stats import BOOTSTRAP_SEED, N_RESAMPLES
from tumorsweep.report.summary import summarise
from tumorsweep.report.tables import (
    interval_table,
    notes_markdown,
    paper_table,
    seeds_table,
    seeds_table_notes,
    table_notes,
    to_latex,
    to_markdown,
)

REPORT_FILES = ("report.md", "summary.csv", "runs.csv")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_STEM = 80


@dataclass(frozen=True)
class Report:
    """What a report is made of: the tidy runs, per-case values, per-column statistics, and
    the finished trials whose per-case table was not found (`MISSING_COLUMNS`)."""

    runs: pd.DataFrame
    per_case: pd.DataFrame
    summary: pd.DataFrame
    missing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MISSING_COLUMNS))

    @property
    def experiments(self) -> list[str]:
        """Experiment names in the order asked for."""
        return list(dict.fromkeys(self.summary["experiment"]))

    def table(self, experiment: str) -> pd.DataFrame:
        """The paper-style table (strings) of one experiment."""
        return paper_table(self.summary, experiment)


def build_report(
    tracking_uri: str,
    experiments: str | list[str],
    all_sweeps: bool = False,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    artifact_root: str | Path | None = None,
) -> Report:
    """Load the latest sweep (or all sweeps) of each experiment and compute its statistics.

    Args:
        tracking_uri: the MLflow store.
        experiments: a study name, several comma-separated, or a list.
        all_sweeps: pool every sweep of each experiment (default: the latest).
        n_resamples: bootstrap resamples of the intervals.
        seed: the bootstrap's seed.
        artifact_root: where the runs' artifact folder now is, when it moved away from the
            store (`read_per_case`); trials whose per-case table is still not found are listed
            in `Report.missing` and their columns get no interval or test.
    """
    if n_resamples < 1:
        raise TumorsweepError(f"bootstrap resamples must be >= 1, got {n_resamples}")
    if artifact_root is not None and not Path(artifact_root).is_dir():
        raise TumorsweepError(f"--artifact-root {artifact_root}: not a directory")
    runs = load_runs(tracking_uri, experiments, all_sweeps=all_sweeps)
    per_case, missing = read_per_case(tracking_uri, runs, artifact_root)
    summary = summarise(runs, per_case, n_resamples=n_resamples, seed=seed, missing=missing)
    return Report(runs, per_case, summary, missing)


def report_markdown(report: Report) -> str:
    """Every experiment's table with its notes, as one Markdown document."""
    parts = []
    for experiment in report.experiments:
        notes = notes_markdown(table_notes(report.summary, experiment))
        parts.append(f"## {experiment}\n\n{to_markdown(report.table(experiment))}\n\n{notes}\n")
        lines = missing_lines(report.missing[report.missing["experiment"] == experiment])
        if lines:
            listed = "\n".join(f"- {line}" for line in lines)
            parts.append(f"### {experiment}: per-case tables not found\n\n{listed}\n")
    return "\n".join(parts)


def file_stem(experiment: str) -> str:
    """A safe file name stem for an experiment: letters, digits, `_` and `-` only; a name that
    had to change (or would clash with the report's own files) gets a hash of itself."""
    stem = _UNSAFE.sub("_", experiment).strip("_-")[:_MAX_STEM] or "experiment"
    if stem != experiment or f"{stem}.md" in REPORT_FILES:
        digest = hashlib.sha256(experiment.encode("utf-8")).hexdigest()[:8]
        stem = f"{stem}-{digest}"
    return stem


def check_out_dir(out_dir: str | Path) -> Path:
    """The output folder, checked before any work: a folder, or creatable (created later)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TumorsweepError(f"--out {out} is an existing file, not a directory")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TumorsweepError(f"--out {out}: {parent} is not a writable directory")
    return out


def _write_files(report: Report, folder: Path) -> list[str]:
    """Write every file of the report into `folder`; returns their names."""
    names = list(REPORT_FILES)
    (folder / names[0]).write_text(report_markdown(report), encoding="utf-8")
    report.summary.to_csv(folder / names[1], index=False)
    report.runs.to_csv(folder / names[2], index=False)
    for experiment in report.experiments:
        table = report.table(experiment)
        stem = file_stem(experiment)
        (folder / f"{stem}.md").write_text(to_markdown(table) + "\n", encoding="utf-8")
        table.to_csv(folder / f"{stem}.csv", index_label="metric")
        (folder / f"{stem}.tex").write_text(_latex(report, experiment), encoding="utf-8")
        plot_knob(report.summary, experiment).savefig(folder / f"{stem}_knob.png", dpi=100)
        plot_per_case(report.per_case, report.summary, experiment).savefig(
            folder / f"{stem}_per_case.png", dpi=100
        )
        plot_lesion_sizes(report.summary, experiment).savefig(
            folder / f"{stem}_lesion_sizes.png", dpi=100
        )
        ends = (".md", ".csv", ".tex", "_knob.png", "_per_case.png", "_lesion_sizes.png")
        names += [f"{stem}{end}" for end in ends]
    return names


def _latex(report: Report, experiment: str) -> str:
    """Two LaTeX tables of one experiment: mean ± std with the notes as footnote lines, then
    the 95% intervals (seven columns of both in one table would not fit a page)."""
    summary = report.summary
    means = to_latex(
        paper_table(summary, experiment, intervals=False),
        f"{experiment}: mean ± std (95% intervals in the next table)",
        table_notes(summary, experiment),
    )
    intervals = interval_table(summary, experiment)
    if not (intervals != "").to_numpy().any():
        return means + "\n"
    caption = f"{experiment}: 95% bootstrap intervals of the means of the previous table"
    return f"{means}\n\n{to_latex(intervals, caption)}\n"


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write report.md, summary.csv (exact numbers, raw and Holm-adjusted p), runs.csv, and per
    experiment `<stem>.md`, `.csv`, `.tex`, `<stem>_knob.png`, `_per_case.png` and
    `_lesion_sizes.png` (lesion sensitivity by size per configuration) (stem =
    `file_stem(experiment)`), all inside `out_dir`; returns the paths written."""
    out = check_out_dir(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    except OSError as exc:
        raise TumorsweepError(f"cannot create output directory {out}: {exc}") from exc
    try:
        names = _write_files(report, scratch)
        for name in names:
            os.replace(scratch / name, out / name)
    except OSError as exc:
        raise TumorsweepError(f"cannot write the report into {out}: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [out / name for name in names]


def summary_table(tracking_uri: str, experiment: str, parent_run_id: str | None = None) -> str:
    """Markdown results of one sweep (the latest, or `parent_run_id`), for printing at its end:
    per configuration tumour Dice mean over seeds, std, seeds, liver Dice, published value."""
    runs = load_runs(tracking_uri, experiment, parent_run_id=parent_run_id)
    summary = summarise(runs, pd.DataFrame(columns=PER_CASE_COLUMNS))
    table = seeds_table(summary, experiment)
    return "\n".join([to_markdown(table), "", notes_markdown(seeds_table_notes(table))])
