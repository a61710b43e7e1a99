"""`tumorsweep phantom` and `tumorsweep check-data` sub-commands."""

from __future__ import annotations

import argparse
import sys

from tumorsweep.data.config import DataSource
from tumorsweep.data.splits import NAMED_SPLITS
from tumorsweep.errors import TumorsweepError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data sub-commands to the `tumorsweep` parser."""
    phantom = subparsers.add_parser(
        "phantom",
        help="write a phantom abdominal CT dataset (MSD Task03 layout)",
        description="Write synthetic abdominal CTs in HU with liver labels, half of them with "
        "independently made 'real' tumours, as an MSD Task03 dataset (dataset.json, imagesTr, "
        "labelsTr) to try tumorsweep without data.",
    )
    shape = phantom.add_argument_group("the phantoms")
    phantom.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the dataset into")
    shape.add_argument("--cases", type=int, default=12, help="number of CTs (default 12)")
    shape.add_argument(
        "--seed", type=int, default=0, help="seed (default 0); case N depends only on (seed, N)"
    )
    shape.add_argument(
        "--shape", type=int, nargs=3, default=(128, 128, 96), metavar=("X", "Y", "Z"),
        help="voxels per axis (default 128 128 96)",
    )  # fmt: skip
    shape.add_argument(
        "--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("SX", "SY", "SZ"),
        help="voxel size in mm (default 1 1 1)",
    )  # fmt: skip
    shape.add_argument(
        "--tumor-cases", type=int, default=None, help="CTs with real tumours (default: half)"
    )
    shape.add_argument(
        "--orientation", default="RAS",
        help="axis codes of the files on disk, e.g. RAS or LPS (default RAS)",
    )  # fmt: skip
    shape.add_argument(
        "--preview", action="store_true", help="also write preview.png (radiological views)"
    )
    phantom.set_defaults(func=_phantom)

    check = subparsers.add_parser(
        "check-data",
        help="validate a dataset and summarise its cases",
        description="Read every case of a dataset as a study would (layout, headers, labels, "
        "the named split) and print its training, validation and test lists; nothing is "
        "written.",
    )
    data = check.add_argument_group("data")
    data.add_argument(
        "--data", required=True, help="dataset folder or description .json (required)"
    )
    data.add_argument(
        "--split", choices=sorted(NAMED_SPLITS), default=None,
        help="named evaluation set used as the test list (default: the dataset's own test list)",
    )  # fmt: skip
    add_source_flags(data)
    check.set_defaults(func=_check_data)


def add_source_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--base-dir and --source, shared by check-data and every study."""
    parser.add_argument(
        "--base-dir", help="folder the --data JSON's relative paths start from (data.base_dir, "
        "MONAI's base_dir; default: the JSON's own folder)",
    )  # fmt: skip
    parser.add_argument(
        "--source", action="append", default=[], metavar="SPEC", help="one more training "
        "source (data.sources): a path (a healthy source), or YAML like '{path: "
        "datafolds/healthy.json, base_dir: /data, role: healthy, name: healthy}'; repeatable "
        "(default: none)",
    )  # fmt: skip


def parse_source(spec: str) -> DataSource:
    """One `--source` flag: a bare path (a healthy source), or a YAML mapping of
    `tumorsweep.data.config.DataSource` fields."""
    import yaml
    from pydantic import ValidationError

    try:
        value = yaml.safe_load(spec)
    except yaml.YAMLError:
        value = spec
    fields = value if isinstance(value, dict) else {"path": spec}
    try:
        return DataSource.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise TumorsweepError(f"--source {spec!r}: {where}: {problem['msg']}") from None


def _phantom(args: argparse.Namespace) -> int:
    from tumorsweep.data.phantom import write_phantom_dataset

    tumor_cases = args.cases // 2 if args.tumor_cases is None else args.tumor_cases
    path = write_phantom_dataset(
        args.out_dir,
        cases=args.cases,
        seed=args.seed,
        shape=tuple(args.shape),
        spacing=tuple(args.spacing),
        tumor_cases=tumor_cases,
        orientation=args.orientation,
        preview=args.preview,
    )
    print(f"wrote {args.cases} cases ({tumor_cases} with tumours): {path}")
    if args.preview:
        print(f"preview: {path.parent / 'preview.png'}")
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from tumorsweep.data.check import check_dataset

    sources = [parse_source(spec) for spec in args.source]
    result = check_dataset(args.data, split=args.split, base_dir=args.base_dir, sources=sources)
    split = result.split
    print(
        f"{split.name} ({split.fmt}): {len(split.train)} train, {len(split.validation)} "
        f"validation, {len(split.test)} test ({split.eval_set})"
    )
    print(result.table())
    print()
    print(result.source_table())
    for message in split.warnings + result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    found = result.first_problem()
    if found is None:
        print("ok: every case passed" + (" (see the warnings)" if result.warnings else ""))
        return 0
    kind, messages = found
    print(f"error: {len(messages)} case(s) with problem '{kind}':", file=sys.stderr)
    for message in messages:
        print(f"  {message}", file=sys.stderr)
    return 1
