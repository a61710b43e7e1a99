"""Validate a dataset before anyone spends GPU hours on it (`check-data`, and every sweep).

Every case is read and checked; problems are grouped into classes ordered from the most basic
(a file that cannot be read) to the most specific (no liver), so the first class with any bad
case is the one to fix first, and all of its cases are listed at once. Intensities that do not
look like Hounsfield units (no air below -500 HU, a liver median outside -100..300 HU: an
image normalised to [0, 1], or stored with the +1024 offset, say) are warnings. A sweep runs
the same check on its case lists before Ray starts; results are cached per file content, so
a second sweep on the same data is instant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorsweep.data.config import DataConfig, DataSource
from tumorsweep.data.io import (
    AFFINE_TOLERANCE,
    as_labels,
    load_volume,
)
from tumorsweep.data.layouts import DatasetSplit, load_split
from tumorsweep.errors import TumorsweepError

SPACING_RANGE_MM = (0.2, 10.0)
AIR_BELOW_HU = -500.0  # a CT field of view holds air outside the body
LIVER_MEDIAN_HU = (-100.0, 300.0)  # fatty ~-40 .. enhanced ~130 (unenhanced ~55)
PROBLEM_CLASSES = (
    "unreadable",  # missing, damaged, not 3-D, NaN voxels
    "mismatch",  # image and label disagree in shape or affine
    "label values",  # values outside {0, 1, 2}, fractional labels
    "spacing",  # voxel size outside SPACING_RANGE_MM
    "empty liver",  # no liver voxel at all
)
_ROLES = ("train", "validation", "test")
_CHECK_VERSION = 1  # bump when the checks change: cached results are then recomputed


@dataclass
class CaseSummary:
    """What a check learnt about one case (None where it could not be read)."""

    case: str
    role: str
    source: str = ""
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    liver_ml: float | None = None
    tumors: int | None = None
    tumor_ml: float | None = None
    liver_median_hu: float | None = None


@dataclass
class CaseResult:
    """One case's summary, problems (class, message) and warnings."""

    summary: CaseSummary
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class DataCheck:
    """Per-case summaries, the problems found by class, and the warnings."""

    split: DatasetSplit | None
    cases: list[CaseSummary]
    problems: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: tuple[dict[str, str], ...] = ()
    bad_cases: set[str] = field(default_factory=set)

    def source_table(self) -> str:
        """One row per source: layout, role, its cases by list, healthy and tumour-bearing
        cases, total liver volume range and how many cases have a problem."""
        header = f"{'source':<20} {'layout':<7} {'role':<10} {'cases':>5} {'train':>5} "
        header += f"{'val':>4} {'test':>4} {'healthy':>7} {'tumour':>6} {'liver ml':>15} "
        header += f"{'problems':>8}"
        rows = [header]
        for source in self.sources or ({"name": "", "layout": "", "role": ""},):
            mine = [c for c in self.cases if c.source == source["name"]]
            count = {role: sum(c.role == role for c in mine) for role in _ROLES}
            livers = [c.liver_ml for c in mine if c.liver_ml is not None]
            span = f"{min(livers):.0f}-{max(livers):.0f}" if livers else "?"
            healthy = sum(c.tumors == 0 for c in mine)
            tumour = sum(bool(c.tumors) for c in mine)
            bad = sum(c.case in self.bad_cases for c in mine)
            rows.append(
                f"{source['name'][:20]:<20} {source['layout']:<7} {source['role']:<10} "
                f"{len(mine):>5} {count['train']:>5} {count['validation']:>4} "
                f"{count['test']:>4} {healthy:>7} {tumour:>6} {span:>15} {bad:>8}"
            )
        return "\n".join(rows)

    def first_problem(self) -> tuple[str, list[str]] | None:
        """The most basic class of problem found, with every bad case of it."""
        for name in PROBLEM_CLASSES:
            if self.problems.get(name):
                return name, self.problems[name]
        return None

    def table(self) -> str:
        """Fixed-width summary table, one row per case."""
        header = f"{'case':<22} {'role':<10} {'shape':<16} {'spacing mm':<18} {'liver ml':>9} "
        header += f"{'tumours':>7} {'tumour ml':>9} {'liver HU':>8}"
        rows = [header]
        for c in self.cases:
            shape = "x".join(map(str, c.shape)) if c.shape else "?"
            spacing = "x".join(f"{s:.2g}" for s in c.spacing) if c.spacing else "?"
            liver = f"{c.liver_ml:.1f}" if c.liver_ml is not None else "?"
            tumors = str(c.tumors) if c.tumors is not None else "?"
            tumor_ml = f"{c.tumor_ml:.2f}" if c.tumor_ml is not None else "?"
            hu = f"{c.liver_median_hu:.0f}" if c.liver_median_hu is not None else "?"
            rows.append(
                f"{c.case:<22} {c.role:<10} {shape:<16} {spacing:<18} {liver:>9} {tumors:>7} "
                f"{tumor_ml:>9} {hu:>8}"
            )
        return "\n".join(rows)


def check_case(entry: dict, role: str) -> CaseResult:
    """Read one case fully and check it (see PROBLEM_CLASSES and the HU warnings)."""
    result = CaseResult(CaseSummary(entry["case"], role, entry.get("source", "")))
    summary, problems = result.summary, result.problems
    try:
        image, affine, spacing = load_volume(entry["image"])
        label, label_affine, _ = load_volume(entry["label"])
    except TumorsweepError as exc:
        problems.append(("unreadable", str(exc)))
        return result
    summary.shape, summary.spacing = image.shape, spacing
    if image.shape != label.shape:
        problems.append(
            (
                "mismatch",
                f"{entry['label']}: label shape {label.shape} differs from image shape "
                f"{image.shape}",
            )
        )
        return result
    gap = float(np.max(np.abs(affine - label_affine)))
    if gap > AFFINE_TOLERANCE:
        problems.append(
            (
                "mismatch",
                f"{entry['label']}: label affine differs from the image affine by up to "
                f"{gap:.4g} (tolerance {AFFINE_TOLERANCE})",
            )
        )
    if not all(SPACING_RANGE_MM[0] <= s <= SPACING_RANGE_MM[1] for s in spacing):
        problems.append(
            ("spacing", f"{entry['image']}: spacing {spacing} mm outside {SPACING_RANGE_MM}")
        )
    try:
        labels = as_labels(entry["label"], label)
    except TumorsweepError as exc:
        problems.append(("label values", str(exc)))
        return result
    liver = labels >= 1
    if not liver.any():
        problems.append(
            ("empty liver", f"{entry['label']}: empty liver (no voxel labelled 1 or 2)")
        )
        return result
    voxel_ml = float(np.prod(spacing)) / 1000.0
    summary.liver_ml = float(np.count_nonzero(liver)) * voxel_ml
    tumor = labels == 2
    summary.tumors = int(ndimage.label(tumor, structure=np.ones((3, 3, 3)))[1])
    summary.tumor_ml = float(np.count_nonzero(tumor)) * voxel_ml
    summary.liver_median_hu = float(np.median(image[labels == 1] if (labels == 1).any() else 0))
    result.warnings += _hu_warnings(entry["image"], image, summary.liver_median_hu)
    return result


def _hu_warnings(path: str, image: np.ndarray, liver_median: float) -> list[str]:
    """Hints that an image is not in Hounsfield units."""
    found = []
    if float(image.min()) >= AIR_BELOW_HU:
        found.append(
            f"{path}: no voxel below {AIR_BELOW_HU:g} HU (min {float(image.min()):.4g}): "
            "no air in the field of view; is the image in Hounsfield units?"
        )
    low, high = LIVER_MEDIAN_HU
    if not low <= liver_median <= high:
        found.append(
            f"{path}: liver median {liver_median:.4g} HU outside {low:g}-{high:g} HU; "
            "is the image in Hounsfield units?"
        )
    return found


def _file_digest(*paths: str) -> str:
    """Content hash of files (what a cached check result is keyed by)."""
    digest = hashlib.blake2b(f"v{_CHECK_VERSION}".encode(), digest_size=16)
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _cached_check(entry: dict, role: str, cache: Path | None) -> CaseResult:
    """`check_case`, reusing the stored result when both files' contents are unchanged."""
    if cache is None:
        return check_case(entry, role)
    try:
        key = _file_digest(entry["image"], entry["label"])
    except OSError:
        return check_case(entry, role)  # the check itself names the missing file
    stored = cache / f"{key}.json"
    if stored.is_file():
        payload = json.loads(stored.read_text())
        where = {"case": entry["case"], "role": role, "source": entry.get("source", "")}
        summary = CaseSummary(**{**payload["summary"], **where})
        return CaseResult(summary, [tuple(p) for p in payload["problems"]], payload["warnings"])
    result = check_case(entry, role)
    cache.mkdir(parents=True, exist_ok=True)
    partial = stored.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(result)))
    partial.replace(stored)
    return result


def check_entries(
    lists: Iterable[tuple[str, Iterable[dict]]], cache: Path | None = None
) -> DataCheck:
    """Check every case of (role, entries) lists once (a case in two lists: its first role)."""
    check = DataCheck(None, [])
    seen: set[str] = set()
    for role, entries in lists:
        for entry in entries:
            if entry["image"] in seen:
                continue
            seen.add(entry["image"])
            result = _cached_check(entry, role, cache)
            check.cases.append(result.summary)
            for kind, message in result.problems:
                check.problems.setdefault(kind, []).append(message)
                check.bad_cases.add(entry["case"])
            check.warnings += result.warnings
    if not check.cases:
        raise TumorsweepError("the dataset resolves to 0 cases: nothing to check or train on")
    return check


def check_dataset(
    path: str | Path,
    split: str | None = None,
    base_dir: str | None = None,
    sources: Sequence[DataSource] = (),
) -> DataCheck:
    """Load the dataset at `path` (relative JSON paths from `base_dir`) and the training
    lists of every extra source (`data.sources`), refuse one case reached from two sources,
    and check every case of the train, validation and test lists, each tagged with its source
    (`DataCheck.source_table`)."""
    from tumorsweep.data.cases import pool_with_sources

    dataset = load_split(path, split=split, base_dir=base_dir)
    data = DataConfig(root=str(path), base_dir=base_dir, sources=list(sources))
    healthy, tumor, notes, records = pool_with_sources(data, dataset)
    lists = (("train", healthy + tumor), ("validation", dataset.validation),
             ("test", dataset.test))  # fmt: skip
    if not any(entries for _, entries in lists):
        raise TumorsweepError(f"{path}: the dataset resolves to 0 cases (check its file names)")
    check = check_entries(lists)
    check.split, check.sources = dataset, records
    check.warnings = notes + check.warnings
    return check


def raise_first_problem(check: DataCheck) -> None:
    """One error naming the first class of problem and every case with it (for sweeps)."""
    found = check.first_problem()
    if found is not None:
        kind, messages = found
        shown = "; ".join(messages[:5]) + (
            f"; and {len(messages) - 5} more" if len(messages) > 5 else ""
        )
        raise TumorsweepError(f"{len(messages)} case(s) with problem '{kind}': {shown}")
