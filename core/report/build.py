"""From an MLflow store to a written report: load, summarise, render, save."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import TumorsweepError
from core.report.plots import plot_knob, plot_per_case
from core.report.runs import PER_CASE_COLUMNS, load_per_case, load_runs
from core.report.stats import BOOTSTRAP_SEED, N_RESAMPLES, summarise
from core.report.tables import paper_table, seeds_table, table_notes, to_latex, to_markdown


@dataclass(frozen=True)
class Report:
    """What a report is made of: the tidy runs, per-case values and per-column statistics."""

    runs: pd.DataFrame
    per_case: pd.DataFrame
    summary: pd.DataFrame

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
) -> Report:
    """Load the latest sweep (or all sweeps) of each experiment and compute its statistics."""
    if n_resamples < 1:
        raise TumorsweepError(f"bootstrap resamples must be >= 1, got {n_resamples}")
    runs = load_runs(tracking_uri, experiments, all_sweeps=all_sweeps)
    per_case = load_per_case(tracking_uri, runs)
    return Report(runs, per_case, summarise(runs, per_case, n_resamples=n_resamples, seed=seed))


def report_markdown(report: Report) -> str:
    """Every experiment's table with its notes, as one Markdown document."""
    parts = []
    for experiment in report.experiments:
        notes = "\n".join(f"- {note}" for note in table_notes(report.summary, experiment))
        parts.append(f"## {experiment}\n\n{to_markdown(report.table(experiment))}\n\n{notes}\n")
    return "\n".join(parts)


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write report.md, summary.csv (exact numbers, p-values), runs.csv, and per experiment
    `<experiment>.md`, `.csv`, `.tex`, `<experiment>_knob.png` and `_per_case.png`."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TumorsweepError(f"cannot create output directory {out}: {exc}") from exc
    written = [out / "report.md", out / "summary.csv", out / "runs.csv"]
    written[0].write_text(report_markdown(report), encoding="utf-8")
    report.summary.to_csv(written[1], index=False)
    report.runs.to_csv(written[2], index=False)
    for experiment in report.experiments:
        table = report.table(experiment)
        stem = out / experiment
        paths = [stem.with_suffix(s) for s in (".md", ".csv", ".tex")]
        paths[0].write_text(to_markdown(table) + "\n", encoding="utf-8")
        table.to_csv(paths[1], index_label="metric")
        caption = f"{experiment}: " + "; ".join(table_notes(report.summary, experiment))
        paths[2].write_text(to_latex(table, caption) + "\n", encoding="utf-8")
        figures = {
            out / f"{experiment}_knob.png": plot_knob(report.summary, experiment),
            out / f"{experiment}_per_case.png": plot_per_case(
                report.per_case, report.summary, experiment
            ),
        }
        for path, figure in figures.items():
            figure.savefig(path, dpi=100)
        written += paths + list(figures)
    return written


def summary_table(tracking_uri: str, experiment: str, parent_run_id: str | None = None) -> str:
    """Markdown results of one sweep (the latest, or `parent_run_id`), for printing at its end:
    per configuration tumour Dice mean over seeds, std, seeds, liver Dice, published value."""
    runs = load_runs(tracking_uri, experiment, parent_run_id=parent_run_id)
    summary = summarise(runs, pd.DataFrame(columns=PER_CASE_COLUMNS))
    return to_markdown(seeds_table(summary, experiment))
