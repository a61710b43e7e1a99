"""Lesion-level detection: connected tumour components of truth and prediction, and their matches.

A lesion is a connected component of the tumour mask (26-connected by default; 18 or 6 on
request) on the label's native grid. A true lesion T is *detected* when the predicted lesions
that overlap it (at least one shared voxel) together cover it with IoU(T, M) > `match_iou`, M
being the union of those predicted lesions. The default `match_iou = 0` is "any overlap", the
rule of the BraTS 2023 lesion-wise metrics (a ground-truth lesion counts as found when any
predicted component touches it; all touching components form its match) and of the detection
sensitivities the synthesis papers report for small tumours; a positive `match_iou` (e.g. 0.5,
panoptica's default matching threshold) asks for a match of the lesion's extent too. Per true
lesion: equivalent diameter (mm) = diameter of the sphere of its volume, (6 V / pi)^(1/3) with
V = voxels x voxel volume on the native grid, and matched Dice = 2|T and M| / (|T| + |M|) (0
when missed). A predicted lesion is matched when it belongs to a detected lesion's M, otherwise
it is a false positive. A prediction that merges two true lesions matches both (each scored
against the whole component, as BraTS does); one true lesion split into two predicted lesions
is one detection and no false positive.

Everything is computed from two component labellings of the tumours' bounding box and the
voxel counts of their overlaps (one `np.unique` over the overlapping voxels), so the cost grows
with the tumour box, not with the number of lesions. No Ray, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tumorsweep.errors import TumorsweepError

CONNECTIVITY_RANKS = {6: 1, 18: 2, 26: 3}
DEFAULT_SIZE_EDGES_MM = (10.0, 20.0)


@dataclass(frozen=True)
class LesionParams:
    """How lesions are found, matched, sized and how a case is called positive.

    - `connectivity`: neighbours that join tumour voxels into one lesion (6, 18 or 26).
    - `match_iou`: a true lesion is detected when IoU(lesion, union of the predicted lesions
      touching it) > this; 0 = any overlap (BraTS 2023 lesion-wise rule).
    - `size_edges_mm`: ascending edges of the equivalent-diameter buckets (mm); (10, 20) gives
      < 10, [10, 20) and >= 20 mm.
    - `case_min_volume_mm3`: a case is called positive (tumour found) when a predicted lesion
      is larger than this volume; 0 = any predicted tumour voxel.
    """

    connectivity: int = 26
    match_iou: float = 0.0
    size_edges_mm: tuple[float, ...] = DEFAULT_SIZE_EDGES_MM
    case_min_volume_mm3: float = 0.0

    def __post_init__(self) -> None:
        if self.connectivity not in CONNECTIVITY_RANKS:
            raise TumorsweepError(
                f"lesion connectivity: expected 6, 18 or 26, got {self.connectivity!r}"
            )
        if not (0.0 <= self.match_iou < 1.0):
            raise TumorsweepError(
                f"lesion match_iou: expected 0 <= value < 1, got {self.match_iou}"
            )
        edges = tuple(float(e) for e in self.size_edges_mm)
        if (
            not edges
            or any(not math.isfinite(e) or e <= 0 for e in edges)
            or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
        ):
            raise TumorsweepError(
                f"lesion size_edges_mm: expected ascending positive numbers, got "
                f"{self.size_edges_mm!r}"
            )
        object.__setattr__(self, "size_edges_mm", edges)
        if not (math.isfinite(self.case_min_volume_mm3) and self.case_min_volume_mm3 >= 0):
            raise TumorsweepError(
                f"lesion case_min_volume_mm3: expected a number >= 0, got "
                f"{self.case_min_volume_mm3!r}"
            )


def bucket_names(size_edges_mm: Sequence[float] = DEFAULT_SIZE_EDGES_MM) -> tuple[str, ...]:
    """Names of the diameter buckets: `lt10mm`, `10to20mm`, `ge20mm` for edges (10, 20)."""
    edges = [f"{float(e):g}".replace(".", "p") for e in size_edges_mm]
    middle = [f"{a}to{b}mm" for a, b in zip(edges, edges[1:], strict=False)]
    return (f"lt{edges[0]}mm", *middle, f"ge{edges[-1]}mm")


def edges_text(size_edges_mm: Sequence[float]) -> str:
    """The edges as one cell of a per-case row (`10;20`), read back by `parse_edges`."""
    return ";".join(f"{float(e):g}" for e in size_edges_mm)


def parse_edges(text: object) -> tuple[float, ...]:
    """Edges from `edges_text` (or a single number read back from a CSV)."""
    return tuple(float(part) for part in str(text).split(";"))


@dataclass(frozen=True)
class LesionStats:
    """The lesions of one case: per true lesion its size, bucket, detection and matched Dice,
    and the predicted lesions' counts (what every lesion metric is computed from)."""

    voxels: np.ndarray  # voxels of each true lesion, in label order
    diameter_mm: np.ndarray  # equivalent diameter of each true lesion
    bucket: np.ndarray  # index into bucket_names(size_edges_mm)
    detected: np.ndarray  # bool per true lesion
    dice: np.ndarray  # matched Dice per true lesion, 0 when missed
    n_pred: int  # predicted lesions
    n_pred_matched: int  # predicted lesions that belong to a detected lesion's match
    case_positive: bool  # a predicted lesion above case_min_volume_mm3
    n_buckets: int

    @property
    def n_true(self) -> int:
        return int(self.voxels.size)

    @property
    def n_detected(self) -> int:
        return int(self.detected.sum())

    @property
    def n_fp(self) -> int:
        return self.n_pred - self.n_pred_matched

    def per_bucket(self) -> tuple[np.ndarray, np.ndarray]:
        """True and detected lesion counts per bucket."""
        true = np.bincount(self.bucket, minlength=self.n_buckets)
        found = np.bincount(self.bucket[self.detected], minlength=self.n_buckets)
        return true, found


def lesion_stats(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    params: LesionParams | None = None,
) -> LesionStats:
    """Lesions of two boolean tumour masks of the same shape (any memory layout).

    Components are labelled on the bounding box of both masks; lesion ids follow scipy's
    labelling order there (C order of the box, so first voxel in C order of the volume).
    """
    params = params or LesionParams()
    voxel_mm3 = float(np.prod([float(s) for s in spacing_mm]))
    box = _box(pred, truth)
    if box is None:
        empty = np.zeros(0, np.int64)
        return LesionStats(
            empty, np.zeros(0), empty, np.zeros(0, bool), np.zeros(0), 0, 0, False,
            len(params.size_edges_mm) + 1,
        )  # fmt: skip
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY_RANKS[params.connectivity])
    truth_ids, n_true = ndimage.label(np.ascontiguousarray(truth[box]), structure=structure)
    pred_ids, n_pred = ndimage.label(np.ascontiguousarray(pred[box]), structure=structure)
    true_voxels = np.bincount(truth_ids.ravel(), minlength=n_true + 1)[1:]
    pred_voxels = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)[1:]
    both = (truth_ids > 0) & (pred_ids > 0)
    pairs, overlap = np.unique(
        truth_ids[both].astype(np.int64) * (n_pred + 1) + pred_ids[both], return_counts=True
    )
    pair_true, pair_pred = pairs // (n_pred + 1) - 1, pairs % (n_pred + 1) - 1
    # per true lesion: its overlap with, and the size of, the union of predicted lesions touching it
    inter = np.bincount(pair_true, weights=overlap, minlength=n_true)
    union_size = np.bincount(pair_true, weights=pred_voxels[pair_pred], minlength=n_true)
    iou = np.divide(inter, true_voxels + union_size - inter, out=np.zeros(n_true), where=inter > 0)
    detected = (inter > 0) & (iou > params.match_iou)
    dice = np.where(detected, 2.0 * inter / np.maximum(true_voxels + union_size, 1), 0.0)
    matched = np.zeros(n_pred, bool)
    matched[pair_pred[detected[pair_true]]] = True
    diameter = np.cbrt(6.0 * true_voxels * voxel_mm3 / math.pi)
    bucket = np.searchsorted(np.asarray(params.size_edges_mm), diameter, side="right")
    positive = bool((pred_voxels * voxel_mm3 > params.case_min_volume_mm3).any())
    return LesionStats(
        true_voxels.astype(np.int64),
        diameter,
        bucket.astype(np.int64),
        detected,
        dice,
        int(n_pred),
        int(matched.sum()),
        positive,
        len(params.size_edges_mm) + 1,
    )


def lesion_records(case: str, stats: LesionStats) -> list[dict[str, object]]:
    """One row per true lesion: case, lesion id (1-based, labelling order), volume, equivalent
    diameter (mm), detected and matched Dice; the per-lesion table trials log."""
    return [
        {
            "case": case,
            "lesion": index + 1,
            "voxels": int(stats.voxels[index]),
            "diameter_mm": float(stats.diameter_mm[index]),
            "detected": bool(stats.detected[index]),
            "matched_dice": float(stats.dice[index]),
        }
        for index in range(stats.n_true)
    ]


def _box(pred: np.ndarray, truth: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the voxels set in either mask, or None when both are empty."""
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(pred.any(axis=others) | truth.any(axis=others))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)
