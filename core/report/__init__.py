"""Reports of a sweep: MLflow runs -> tidy DataFrame -> paper-style tables, statistics, plots.

No Ray, no torch: this reads what the sweep wrote to MLflow (see DESIGN.md "MLflow naming").
"""

from core.report.build import Report, build_report, report_markdown, summary_table, write_report
from core.report.plots import plot_knob, plot_per_case
from core.report.reference import match_published, published_table
from core.report.runs import load_per_case, load_runs
from core.report.stats import bootstrap_ci, paired_wilcoxon, summarise
from core.report.tables import paper_table, to_latex, to_markdown

__all__ = [
    "Report",
    "bootstrap_ci",
    "build_report",
    "load_per_case",
    "load_runs",
    "match_published",
    "paired_wilcoxon",
    "paper_table",
    "plot_knob",
    "plot_per_case",
    "published_table",
    "report_markdown",
    "summarise",
    "summary_table",
    "to_latex",
    "to_markdown",
    "write_report",
]
