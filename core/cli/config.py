"""`tumorsweep config`: every trial field with its default and description, or what a preset
changes, so `--set field=value` is discoverable from the command line."""

from __future__ import annotations

import argparse

from tumorsweep.config import PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `config` sub-command to the `tumorsweep` parser."""
    parser = subparsers.add_parser(
        "config",
        help="list every config field (default, description) or what a preset changes",
        description="List every trial config field with its default and description (set any "
        "of them with --set field=value on a study), or, with --preset, the fields that "
        "preset changes.",
    )
    shown = parser.add_argument_group("what is listed")
    shown.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="show only what this preset changes (default: every field)",
    )
    shown.add_argument(
        "--markdown",
        action="store_true",
        help="print the full reference as Markdown (docs/config.md)",
    )
    parser.set_defaults(func=_config)


def _config(args: argparse.Namespace) -> int:
    from tumorsweep.config_reference import describe, reference_markdown

    print(reference_markdown() if args.markdown else describe(args.preset))
    return 0
