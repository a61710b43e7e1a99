"""The `tumorsweep` command: one sub-command per capability, each registered by its module.

Each sub-package exposes `register(subparsers)` in its own `cli` module, so this file only
lists them; a module that is not importable (e.g. an optional extra) is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from core.errors import TumorsweepError

# Modules that add sub-commands, in the order they appear in `--help`.
_COMMAND_MODULES = (
    "core.data.cli",  # phantom, check-data
    "core.synthesis.cli",  # synthesize, fit-location
    "core.generative.cli",  # train-generator
    "core.evaluate.cli",  # evaluate
    "core.predict_cli",  # predict
    "core.report_cli",  # report
)


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="tumorsweep",
        description="Synthetic liver-tumour ablation studies: data, synthesis, evaluation, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a module not written yet or an extra not installed
            if exc.name != name:
                raise
            continue
        module.register(sub)
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


if __name__ == "__main__":
    sys.exit(main())
