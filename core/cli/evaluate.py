"""`tumorsweep evaluate`: score any method's predicted label files against ground truth.

Pairs `--pred` and `--truth` NIfTI files by case name, checks each pair (readable, 3-D, labels
0/1/2 only in the raw files, same shape and affine), post-processes the prediction as the
`--protocol` does (unless `--no-postprocess`), scores every case with the protocol's liver
definition and only then writes one row per case to `--out`, one row per true tumour lesion
to `<out>_lesions.csv`, and prints the mean table with pooled values and empty-mask counts,
then the lesion-level detection metrics (docs/lesion-metrics.md). Any problem stops the run
before anything is written.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tumorsweep.data.io import (
    as_labels,
    check_same_grid,
    open_nifti,
    resolve_path,
    spacing_of,
    voxels,
)
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import registry
from tumorsweep.evaluate.aggregate import EMPTY_KINDS, aggregate
from tumorsweep.evaluate.lesions import LesionParams
from tumorsweep.evaluate.metrics import case_metrics_and_lesions
from tumorsweep.evaluate.naming import NIFTI_SUFFIXES, case_name
from tumorsweep.evaluate.protocol import (
    ORGAN_MASK_KEY,
    PROTOCOLS,
    EvalProtocol,
    organ_mask,
    with_organ_masks,
)
from tumorsweep.outputs import check_output_file, write_error


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice, NSD, HD95 and lesion detection of predicted label files against ground truth",
        description=__doc__.splitlines()[0],
    )
    files = parser.add_argument_group("input and output")
    files.add_argument("--pred", type=Path, required=True, help="folder of predicted labels")
    files.add_argument("--truth", type=Path, required=True, help="folder of true labels")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--tolerance-mm", type=float, default=2.0, help="NSD tolerance, mm (default: 2)"
    )
    scoring.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="tumorsweep",
        help="post-processing and liver definition (default: tumorsweep; "
        + "; ".join(f"{name}: {protocol.description}" for name, protocol in PROTOCOLS.items())
        + "; no inversion here: predictions are already on the label grid)",
    )
    scoring.add_argument(
        "--organ-masks",
        default=None,
        help="folder of organ masks, one per case named as its truth file (Chen et al.'s "
        "organ_pseudo_swin_new/liver/), or 'truth' for each case's own truth label (phantoms, "
        "tests; it flatters the scores): required by an organ-gated protocol (chen2024), "
        "whose liver is this mask and whose tumours are kept only inside it (default: none)",
    )
    scoring.add_argument(
        "--no-postprocess",
        action="store_true",
        help="score predictions as they are (default: the protocol's post-processing)",
    )
    _lesion_flags(parser)
    files.add_argument(
        "--out",
        type=Path,
        required=True,
        help="per-case CSV to write (the per-lesion table goes beside it, <name>_lesions.csv)",
    )
    parser.set_defaults(func=run_evaluate)


def _lesion_flags(parser: argparse.ArgumentParser) -> None:
    defaults = LesionParams()
    lesions = parser.add_argument_group("lesion detection (docs/lesion-metrics.md)")
    lesions.add_argument(
        "--lesion-connectivity",
        type=int,
        choices=(6, 18, 26),
        default=defaults.connectivity,
        help="neighbours joining tumour voxels into one lesion (default 26)",
    )
    lesions.add_argument(
        "--lesion-match-iou",
        type=float,
        default=defaults.match_iou,
        help="a true lesion is detected when the predicted lesions touching it cover it with "
        "IoU > this (default 0: any overlap, the BraTS 2023 lesion-wise rule)",
    )
    lesions.add_argument(
        "--lesion-size-edges-mm",
        type=float,
        nargs="+",
        default=list(defaults.size_edges_mm),
        help="equivalent-diameter bucket edges in mm (default 10 20)",
    )
    lesions.add_argument(
        "--case-min-volume-mm3",
        type=float,
        default=defaults.case_min_volume_mm3,
        help="a case is tumour-positive when a predicted lesion is larger than this (default 0)",
    )


def run_evaluate(args: argparse.Namespace) -> int:
    """Check and score every case pair, then write the CSV and print the summary."""
    protocol = PROTOCOLS[args.protocol]
    lesions = LesionParams(
        args.lesion_connectivity,
        args.lesion_match_iou,
        tuple(args.lesion_size_edges_mm),
        args.case_min_volume_mm3,
    )
    pairs = _pair_cases(args.pred, args.truth)
    organs = _organ_masks(protocol, args, pairs)
    lesion_out = lesion_table_path(args.out)
    inputs = [path for pair in pairs.values() for path in pair]
    _check_out(args.out, inputs)
    _check_out(lesion_out, inputs)
    rows, lesion_rows = [], []
    for name, (pred_path, truth_path) in pairs.items():
        pred, truth, spacing, affine = _load_pair(name, pred_path, truth_path)
        if not args.no_postprocess:
            organ = None
            if name in organs:
                case = {"case": name, "label": str(truth_path), ORGAN_MASK_KEY: organs[name]}
                organ = organ_mask(case, pred.shape, affine)
            pred = protocol.postprocess(pred, organ)
        try:
            metrics, records = case_metrics_and_lesions(
                pred, truth, spacing, args.tolerance_mm, protocol.liver_mode, lesions, name
            )
        except TumorsweepError as exc:
            raise TumorsweepError(f"case {name}: {exc}") from None
        rows.append({"case": name, **metrics})
        lesion_rows.extend(records)
    table = pd.DataFrame(rows)
    summary = aggregate(table)
    text = _summary_text(summary, len(rows), protocol.name)
    text += "\n" + _lesion_text(summary, lesions)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(table, args.out)
        _write_csv(pd.DataFrame(lesion_rows, columns=LESION_COLUMNS), lesion_out)
    except OSError as exc:
        raise write_error(args.out, exc) from None
    print(text)
    print(f"per-case rows: {args.out}")
    print(f"per-lesion rows: {lesion_out}")
    return 0


def _organ_masks(
    protocol: EvalProtocol, args: argparse.Namespace, pairs: dict[str, tuple[Path, Path]]
) -> dict[str, str]:
    """Case -> organ mask file for an organ-gated protocol (checked before any case is
    scored: the flag given, the folder and every case's file present); {} otherwise."""
    if not protocol.organ_gate or args.no_postprocess:
        if args.organ_masks is not None and not protocol.organ_gate:
            raise TumorsweepError(
                f"--organ-masks: protocol {protocol.name} does not use organ masks (chen2024 does)"
            )
        return {}
    if args.organ_masks is None:
        raise TumorsweepError(
            f"--protocol {protocol.name}: needs --organ-masks (a folder of organ masks named as "
            "the truth files, or 'truth')"
        )
    cases = [{"case": name, "label": str(truth)} for name, (_, truth) in pairs.items()]
    try:
        cases = with_organ_masks(cases, args.organ_masks)
    except TumorsweepError as exc:
        raise TumorsweepError(f"--organ-masks: {exc}") from None
    for case in cases:
        if not Path(case[ORGAN_MASK_KEY]).is_file():
            raise TumorsweepError(
                f"--organ-masks: {case[ORGAN_MASK_KEY]}: file not found (organ mask of case "
                f"{case['case']})"
            )
    return {case["case"]: case[ORGAN_MASK_KEY] for case in cases}


LESION_COLUMNS = ("case", "lesion", "voxels", "diameter_mm", "detected", "matched_dice")


def lesion_table_path(out: Path) -> Path:
    """Where the per-lesion table of `--out` goes: `<stem>_lesions.csv` beside it."""
    return out.with_name(f"{out.stem}_lesions.csv")


def _write_csv(table: pd.DataFrame, out: Path) -> None:
    """The CSV written beside `out` and renamed onto it: a failed write leaves no half file."""
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".csv", dir=out.parent)
    os.close(handle)
    try:
        table.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_out(out: Path, inputs: list[Path]) -> None:
    """`--out` must be a writable file path that is none of the inputs (probed before any
    case is scored: a read-only folder or a device such as /dev/full is refused)."""
    if out.is_dir():
        raise TumorsweepError(f"--out {out}: is a folder; give the CSV file to write")
    resolved = resolve_path(out)
    if any(resolved == resolve_path(path) for path in inputs):
        raise TumorsweepError(f"--out {out}: is one of the input label files")
    check_output_file(out, "--out")


def _nifti_files(folder: Path, role: str) -> dict[str, Path]:
    """Case name -> NIfTI path in a folder; duplicates and empty folders are errors."""
    if not folder.is_dir():
        raise TumorsweepError(f"--{role} {folder}: not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("._") or not path.name.endswith(NIFTI_SUFFIXES):
            continue
        name = case_name(path)
        if name in files:
            raise TumorsweepError(
                f"--{role} {folder}: case {name} twice ({files[name].name}, {path.name})"
            )
        files[name] = path
    if not files:
        raise TumorsweepError(f"--{role} {folder}: no .nii or .nii.gz files")
    return files


def _pair_cases(pred_folder: Path, truth_folder: Path) -> dict[str, tuple[Path, Path]]:
    """Pred and truth paths per case; any case present on one side only is an error."""
    preds = _nifti_files(pred_folder, "pred")
    truths = _nifti_files(truth_folder, "truth")
    no_pred = sorted(set(truths) - set(preds))
    no_truth = sorted(set(preds) - set(truths))
    if no_pred or no_truth:
        problems = []
        if no_pred:
            problems.append(f"no prediction for {', '.join(no_pred)}")
        if no_truth:
            problems.append(f"no truth for {', '.join(no_truth)}")
        raise TumorsweepError(f"unpaired cases: {'; '.join(problems)}")
    return {name: (preds[name], truths[name]) for name in truths}


def _load_pair(
    name: str, pred_path: Path, truth_path: Path
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], np.ndarray]:
    """Both label volumes as checked uint8 labels, the truth spacing and affine.

    Shapes and affines are compared from the headers first; the raw voxel values are checked
    before anything (post-processing included) maps them.
    """
    pred_image, truth_image = open_nifti(pred_path), open_nifti(truth_path)
    try:
        check_same_grid(pred_path, pred_image, truth_path, truth_image)
    except TumorsweepError as exc:
        raise TumorsweepError(f"case {name}: {exc}") from None
    pred = as_labels(pred_path, voxels(pred_image, pred_path))
    truth = as_labels(truth_path, voxels(truth_image, truth_path))
    return pred, truth, spacing_of(truth_image), np.asarray(truth_image.affine)


def _summary_text(summary: dict[str, float | int], cases: int, protocol: str) -> str:
    """The mean table: per class and metric mean +- std (cases), pooled values, empty counts."""
    metrics = [m for m in registry.METRICS if m.classes == registry.CLASSES]
    pooled = [m for m in metrics if m.pooled is not None]
    heads = [f"{m.name} ({m.unit})" if m.unit else m.name for m in metrics]
    heads += [f"{m.name}_global" for m in pooled]
    lines = [
        f"{cases} cases, protocol {protocol}",
        f"{'class':<6} " + " ".join(f"{head:>22}" for head in heads),
    ]
    for name in registry.CLASSES:
        cells = [
            f"{summary[f'{name}_{m.name}']:.4f}+-{summary[f'{name}_{m.name}_std']:.4f} "
            f"(n={summary[f'{name}_{m.name}_n']})"
            for m in metrics
        ]
        cells += [f"{summary[f'{name}_{m.name}_global']:.4f}" for m in pooled]
        lines.append(f"{name:<6} " + " ".join(f"{cell:>22}" for cell in cells))
    for name in registry.CLASSES:
        counts = ", ".join(f"{kind} {summary[f'{name}_empty_{kind}']}" for kind in EMPTY_KINDS)
        lines.append(f"{name} empty masks: {counts}")
    rules = "; ".join(f"{m.display} {m.empty_rule}" for m in metrics)
    lines.append(f"empty-mask conventions: {rules}")
    return "\n".join(lines)


def _lesion_text(summary: dict[str, float | int], lesions: LesionParams) -> str:
    """Lesion-level detection: per metric the mean over the cases it is defined for, its std
    and count, and the pooled value; the conventions and lesion totals."""
    rule = "any overlap" if lesions.match_iou == 0 else f"IoU > {lesions.match_iou:g}"
    lines = [
        f"lesions ({lesions.connectivity}-connected tumour components, detected by {rule}; "
        f"{summary['tumor_lesions_true_total']} true, {summary['tumor_lesions_pred_total']} "
        f"predicted, {summary['tumor_lesions_fp_total']} false positive; "
        f"{summary['tumor_cases_no_lesion']} cases without a true lesion)",
        f"{'metric':<38} {'mean+-std (cases)':>26} {'pooled':>8}",
    ]
    for metric in registry.metrics(lesions.size_edges_mm):
        if metric.classes == registry.CLASSES:
            continue
        key = metric.key("tumor")
        n = summary[f"{key}_n"]
        if n:
            cell = f"{summary[key]:.4f}+-{summary[f'{key}_std']:.4f} (n={n})"
        else:
            cell = "undefined (n=0)"
        pooled = f"{summary[f'{key}_global']:.4f}" if metric.pooled else "-"
        lines.append(f"{key:<38} {cell:>26} {pooled:>8}")
    if not summary["case_specificity_n"]:
        lines.append("case_specificity undefined: no tumour-free case in the evaluation set")
    rules = "; ".join(
        f"{m.display}: {m.empty_rule}"
        for m in registry.LESION_METRICS
        if m.classes != registry.CLASSES
    )
    lines.append(f"lesion conventions: {rules}")
    return "\n".join(lines)
