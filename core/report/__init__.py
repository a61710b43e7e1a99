"""Reports of a sweep: MLflow runs -> tidy DataFrame -> paper-style tables, statistics, plots.

No Ray, no torch: this reads what the sweep wrote to MLflow (names in core/tracking.py).
"""

from tumorsweep.report.build import (
    Report,
    build_report,
    file_stem,
    report_markdown,
    summary_table,
    write_report,
)
from tumorsweep.report.plots import plot_knob, plot_lesion_sizes, plot_per_case
from tumorsweep.report.reference import match_published, published_table
from tumorsweep.report.runs import load_per_case, load_runs
from tumorsweep.report.stats import (
    bootstrap_ci,
    holm,
    paired_test,
    sign_flip_test,
    two_level_t_test,
)
from tumorsweep.report.summary import summarise
from tumorsweep.report.tables import paper_table, to_latex, to_markdown

__all__ = [
    "Report",
    "bootstrap_ci",
    "build_report",
    "file_stem",
    "holm",
    "load_per_case",
    "load_runs",
    "match_published",
    "paired_test",
    "paper_table",
    "plot_knob",
    "plot_lesion_sizes",
    "plot_per_case",
    "published_table",
    "report_markdown",
    "sign_flip_test",
    "summarise",
    "summary_table",
    "to_latex",
    "to_markdown",
    "two_level_t_test",
    "write_report",
]
