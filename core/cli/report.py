"""`tumorsweep report`: write a sweep's tables (Markdown, CSV, LaTeX) and plots, no Jupyter."""

from __future__ import annotations

import argparse
import sys

from tumorsweep import tracking
from tumorsweep.errors import TumorsweepError
from tumorsweep.outputs import check_output_folder, exclusive
from tumorsweep.report import build_report, report_markdown, write_report
from tumorsweep.report.build import check_out_dir
from tumorsweep.report.runs import missing_lines, studies_in_store
from tumorsweep.report.stats import BOOTSTRAP_SEED, N_RESAMPLES
from tumorsweep.report.store import check_tracking_uri


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="paper-style tables and plots of a sweep from MLflow",
        description="Read a sweep's runs from MLflow and write report.md, summary.csv, runs.csv "
        "and per experiment .md/.csv/.tex tables and PNG plots to --out; print the tables.",
    )
    store = parser.add_argument_group("what is reported")
    store.add_argument(
        "--tracking-uri", help="MLflow URI (default: sqlite:///$PWD/mlflow.db, where a study wrote)"
    )
    store.add_argument(
        "--experiment",
        help="experiment (study) name, or several comma-separated (default: every study in the "
        "store)",
    )
    store.add_argument(
        "--out", default="report", help="directory to write the report into (default: report/)"
    )
    store.add_argument(
        "--all-sweeps",
        action="store_true",
        help="pool every sweep of each experiment (default: only the latest)",
    )
    stats = parser.add_argument_group("intervals and tests")
    stats.add_argument(
        "--resamples", type=int, default=N_RESAMPLES,
        help=f"bootstrap resamples (seeds and cases; default: {N_RESAMPLES})",
    )  # fmt: skip
    stats.add_argument(
        "--seed", type=int, default=BOOTSTRAP_SEED,
        help=f"bootstrap seed (default: {BOOTSTRAP_SEED})",
    )  # fmt: skip
    store.add_argument(
        "--artifact-root",
        metavar="DIR",
        help="where the runs' artifact folder is now, when the store was copied or moved "
        "without it (the folder holding <experiment id>/<run id>/artifacts, e.g. a moved "
        "mlartifacts/; default: where each run says, then mlartifacts/ beside mlflow.db)",
    )
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Check the arguments, build the report, write it to --out and print its Markdown."""
    if args.resamples < 1:
        raise TumorsweepError(f"--resamples must be at least 1, got {args.resamples}")
    out = check_out_dir(args.out)
    check_output_folder(out, "--out")
    uri = args.tracking_uri or tracking.default_tracking_uri()
    check_tracking_uri(uri)  # before anything is created
    experiments = args.experiment or ",".join(studies_in_store(uri))
    if not experiments:
        raise TumorsweepError(f"{uri} holds no study (no sweep run): run one, or name --experiment")
    created = [p for p in [out, *out.parents] if not p.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        # one report at a time per folder: two at once would mix their files
        with exclusive(out / ".tumorsweep-report.lock", f"--out {out}"):
            report = build_report(
                uri,
                experiments,
                all_sweeps=args.all_sweeps,
                n_resamples=args.resamples,
                seed=args.seed,
                artifact_root=args.artifact_root,
            )
            write_report(report, out)
    except BaseException:
        for folder in created:  # a refused or failed report leaves no folder behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    print(report_markdown(report))
    for line in missing_lines(report.missing):  # also in report.md; here so nobody misses it
        print(f"tumorsweep report: warning: {line}", file=sys.stderr)
    return 0
