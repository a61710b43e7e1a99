"""The command line: `tumorsweep` (one sub-command per capability, each registered by its
module here) and, in `tumorsweep.cli.study`, the flags every `sweeps/<study>.py` shares.

Every command-line module lives in this package and sits on top of the library: it parses
flags, calls `tumorsweep.data`, `tumorsweep.synthesis`, `tumorsweep.generative`,
`tumorsweep.evaluate`, `tumorsweep.sweep` or `tumorsweep.report`, and turns a
`TumorsweepError` into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from tumorsweep.errors import TumorsweepError

# Modules that add sub-commands, in the order they appear in `--help`.
_COMMAND_MODULES = (
    "tumorsweep.cli.data",  # phantom, check-data
    "tumorsweep.cli.synthesis",  # synthesize, fit-location
    "tumorsweep.cli.generator",  # train-generator
    "tumorsweep.cli.evaluate",  # evaluate
    "tumorsweep.cli.predict",  # predict
    "tumorsweep.cli.report",  # report
    "tumorsweep.cli.config",  # config
)
# Each command's examples (its `--help` ends with them), where its module gives none.
EXAMPLES = {
    "phantom": "tumorsweep phantom phantoms/ --cases 8 --spacing 2 2 2 --preview",
    "check-data": "tumorsweep check-data --data /data/Task03_Liver --split hu-val",
    "evaluate": "tumorsweep evaluate --pred preds/ --truth labelsTr/ --protocol hu2023 "
    "--out per_case.csv",
    "predict": "tumorsweep predict --run RUN_ID --images new_cts/ --out labels/\n"
    "  tumorsweep predict --model models:/liver/1 --images ct.nii.gz --out labels/",
    "report": "tumorsweep report        # in the folder of a finished study (mlflow.db here)\n"
    "  tumorsweep report --experiment sphere_ratio --out report/\n"
    "  tumorsweep report --tracking-uri sqlite:////copy/mlflow.db --artifact-root "
    "/copy/mlartifacts",
    "config": "tumorsweep config --preset demo\n  tumorsweep config --markdown > docs/config.md",
}
EPILOG = """studies (Ray Tune sweeps, one MLflow run per trial) are scripts, not sub-commands:
  python sweeps/sphere_ratio.py --dry-run      # every sweeps/*.py takes the same flags
  python sweeps/sphere_ratio.py --help
then: tumorsweep report; mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db"""


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every registered sub-command, each ending its help with
    examples."""
    parser = argparse.ArgumentParser(
        prog="tumorsweep",
        description="Synthetic liver-tumour ablation studies: data, synthesis, evaluation, report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for name, command in sub.choices.items():
        if not command.epilog and name in EXAMPLES:
            command.epilog = f"examples:\n  {EXAMPLES[name]}"
            command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; bad input prints one line and returns 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TumorsweepError as exc:
        print(f"tumorsweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RuntimeError as exc:
        if not str(exc).startswith("Symlink loop"):  # Python 3.11's Path.resolve()
            raise
        print(f"tumorsweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read or write that failed after the checks (disk full meanwhile)
        where = exc.filename or "a file"
        print(f"tumorsweep {args.command}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
