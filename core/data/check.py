"""Validate a dataset before anyone spends GPU hours on it.

Every case of a study is read and checked; problems are grouped into classes ordered from the
most basic (a file that cannot be read) to the most specific (no liver), so the first class
with any bad case is the one to fix first, and all of its cases are listed at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from core.data.folds import Study, load_study
from core.data.io import check_label_values, load_volume
from core.errors import TumorsweepError

SPACING_RANGE_MM = (0.2, 10.0)
PROBLEM_CLASSES = (
    "unreadable",  # missing, damaged, not 3-D, NaN voxels
    "mismatch",  # image and label disagree in shape or affine
    "label values",  # values outside {0, 1, 2}
    "spacing",  # voxel size outside SPACING_RANGE_MM
    "empty liver",  # no liver voxel at all
)


@dataclass
class CaseSummary:
    """What check-data learnt about one case (None where it could not be read)."""

    case: str
    role: str
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    liver_ml: float | None = None
    tumors: int | None = None
    tumor_ml: float | None = None


@dataclass
class DataCheck:
    """Per-case summaries and the problems found, by class."""

    study: Study
    cases: list[CaseSummary]
    problems: dict[str, list[str]] = field(default_factory=dict)

    def first_problem(self) -> tuple[str, list[str]] | None:
        """The most basic class of problem found, with every bad case of it."""
        for name in PROBLEM_CLASSES:
            if self.problems.get(name):
                return name, self.problems[name]
        return None

    def table(self) -> str:
        """Fixed-width summary table, one row per case."""
        header = f"{'case':<22} {'role':<10} {'shape':<16} {'spacing mm':<18} {'liver ml':>9} "
        header += f"{'tumours':>7} {'tumour ml':>9}"
        rows = [header]
        for c in self.cases:
            shape = "x".join(map(str, c.shape)) if c.shape else "?"
            spacing = "x".join(f"{s:.2g}" for s in c.spacing) if c.spacing else "?"
            liver = f"{c.liver_ml:.1f}" if c.liver_ml is not None else "?"
            tumors = str(c.tumors) if c.tumors is not None else "?"
            tumor_ml = f"{c.tumor_ml:.2f}" if c.tumor_ml is not None else "?"
            rows.append(
                f"{c.case:<22} {c.role:<10} {shape:<16} {spacing:<18} {liver:>9} {tumors:>7} "
                f"{tumor_ml:>9}"
            )
        return "\n".join(rows)


def _check_case(entry: dict, role: str, problems: dict[str, list[str]]) -> CaseSummary:
    summary = CaseSummary(entry["case"], role)
    try:
        image, affine, spacing = load_volume(entry["image"])
        label, label_affine, _ = load_volume(entry["label"])
    except TumorsweepError as exc:
        problems.setdefault("unreadable", []).append(str(exc))
        return summary
    summary.shape, summary.spacing = image.shape, spacing
    if image.shape != label.shape:
        problems.setdefault("mismatch", []).append(
            f"{entry['label']}: label shape {label.shape} differs from image shape {image.shape}"
        )
        return summary
    gap = float(np.max(np.abs(affine - label_affine)))
    if gap > 1e-3:
        problems.setdefault("mismatch", []).append(
            f"{entry['label']}: label affine differs from the image affine by up to {gap:.4g}"
        )
    if not all(SPACING_RANGE_MM[0] <= s <= SPACING_RANGE_MM[1] for s in spacing):
        problems.setdefault("spacing", []).append(
            f"{entry['image']}: spacing {spacing} mm outside {SPACING_RANGE_MM}"
        )
    try:
        check_label_values(entry["label"], label)
    except TumorsweepError as exc:
        kind = "empty liver" if "empty liver" in str(exc) else "label values"
        problems.setdefault(kind, []).append(str(exc))
        if kind == "label values":
            return summary
    voxel_ml = float(np.prod(spacing)) / 1000.0
    summary.liver_ml = float(np.count_nonzero(label >= 1)) * voxel_ml
    tumor = label == 2
    summary.tumors = int(ndimage.label(tumor, structure=np.ones((3, 3, 3)))[1])
    summary.tumor_ml = float(np.count_nonzero(tumor)) * voxel_ml
    return summary


def check_dataset(path: str | Path, split: str | None = None) -> DataCheck:
    """Load the study at `path` and check every case of its train, validation and test lists."""
    study = load_study(path, split=split)
    problems: dict[str, list[str]] = {}
    seen: set[str] = set()
    cases = []
    for role, entries in (
        ("train", study.train),
        ("validation", study.validation),
        ("test", study.test),
    ):
        for entry in entries:
            if entry["image"] in seen:
                continue
            seen.add(entry["image"])
            cases.append(_check_case(entry, role, problems))
    return DataCheck(study, cases, problems)
