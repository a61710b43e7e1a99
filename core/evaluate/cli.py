"""`tumorsweep evaluate`: score any method's predicted label files against ground truth.

Pairs `--pred` and `--truth` NIfTI files by case name, checks each pair shares shape and
affine, post-processes the prediction (unless `--no-postprocess`), writes one row per case to
`--out` and prints the mean table with pooled values and empty-mask counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from core.errors import TumorsweepError
from core.evaluate.aggregate import EMPTY_KINDS, aggregate
from core.evaluate.metrics import CLASSES, LIVER_MODES, case_metrics
from core.evaluate.naming import NIFTI_SUFFIXES, case_name
from core.evaluate.postprocess import postprocess


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice and NSD of predicted label files against ground truth",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--pred", type=Path, required=True, help="folder of predicted labels")
    parser.add_argument("--truth", type=Path, required=True, help="folder of true labels")
    parser.add_argument("--tolerance-mm", type=float, default=2.0, help="NSD tolerance (mm)")
    parser.add_argument(
        "--no-postprocess",
        action="store_true",
        help="score predictions as they are (default: largest liver, tumours near it)",
    )
    parser.add_argument(
        "--liver-mode", choices=LIVER_MODES, default="ge1", help="liver = >=1 or ==1"
    )
    parser.add_argument("--out", type=Path, required=True, help="per-case CSV to write")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Score every case pair, write the CSV, print the summary."""
    pairs = _pair_cases(args.pred, args.truth)
    rows = []
    for name, (pred_path, truth_path) in pairs.items():
        pred, truth, spacing = _load_pair(name, pred_path, truth_path)
        if not args.no_postprocess:
            pred = postprocess(pred)
        try:
            metrics = case_metrics(pred, truth, spacing, args.tolerance_mm, args.liver_mode)
        except TumorsweepError as exc:
            raise TumorsweepError(f"case {name}: {exc}") from None
        rows.append({"case": name, **metrics})
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(_summary_text(aggregate(table), len(rows)))
    print(f"per-case rows: {args.out}")
    return 0


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
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Both label volumes as stored, and the truth spacing; shape and affine must agree."""
    try:
        pred_image, truth_image = nib.load(pred_path), nib.load(truth_path)
        pred, truth = np.asarray(pred_image.dataobj), np.asarray(truth_image.dataobj)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise TumorsweepError(f"case {name}: cannot read NIfTI ({exc})") from None
    if pred.shape != truth.shape:
        raise TumorsweepError(
            f"case {name}: prediction shape {pred.shape} differs from truth shape {truth.shape}"
        )
    if not np.allclose(pred_image.affine, truth_image.affine, atol=1e-4):
        raise TumorsweepError(
            f"case {name}: prediction affine differs from truth affine "
            f"({pred_path.name} vs {truth_path.name}); resample the prediction to the label grid"
        )
    spacing = tuple(float(s) for s in truth_image.header.get_zooms()[:3])
    return pred, truth, spacing


def _summary_text(summary: dict[str, float | int], cases: int) -> str:
    """The mean table: per class mean +- std, pooled values and empty-mask counts."""
    lines = [
        f"{cases} cases",
        f"{'class':<6} {'dice':>15} {'nsd':>15} {'dice_global':>11} {'nsd_global':>10}",
    ]
    for name in CLASSES:
        dice = f"{summary[f'{name}_dice']:.4f}+-{summary[f'{name}_dice_std']:.4f}"
        nsd = f"{summary[f'{name}_nsd']:.4f}+-{summary[f'{name}_nsd_std']:.4f}"
        lines.append(
            f"{name:<6} {dice:>15} {nsd:>15} {summary[f'{name}_dice_global']:>11.4f} "
            f"{summary[f'{name}_nsd_global']:>10.4f}"
        )
    for name in CLASSES:
        counts = ", ".join(f"{kind} {summary[f'{name}_empty_{kind}']}" for kind in EMPTY_KINDS)
        lines.append(f"{name} empty masks (both -> 1, truth or pred only -> 0): {counts}")
    return "\n".join(lines)
