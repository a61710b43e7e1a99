"""A synthesis event's changes to an (image, label) pair, kept beside the volumes.

Training's fast chain never writes into its cache: a synthesis event is planned on read-only
views of the cached liver box and kept as a `VolumeEdit` (a few boxes of new values, each
with the voxels it writes), which is pasted into each training patch cut from the cache. This
costs work on the tumours' boxes only, where copying the liver box per sample cost about as
much as a small event itself. A box's values can also be left to compute (`LazyStroke`): a
patch then pays only for the part of the box it holds (a paper-preset 96^3 patch holds a fifth
to a quarter of a Hu mix event's blended voxels on 1 mm livers of 1.8 M and 1.0 M voxels).
`VolumeEdit.apply` writes the same values into whole arrays (the in-place path), so both
paths give the same voxels (to float32 rounding where a patch computes part of a box).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Index = tuple[int, int, int]


def _overlap(
    lo: Index, shape: Index, target_shape: tuple[int, ...], start: Index
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where the box [lo, lo + shape) meets a target array whose voxel 0 lies at `start`: the
    target's slices and the box's own; None when they do not meet."""
    a = [max(x, s) for x, s in zip(lo, start, strict=True)]
    b = [min(x + n, s + m) for x, n, s, m in zip(lo, shape, start, target_shape, strict=True)]
    if any(x >= y for x, y in zip(a, b, strict=True)):
        return None
    into = tuple(slice(x - s, y - s) for x, y, s in zip(a, b, start, strict=True))
    read = tuple(slice(x - o, y - o) for x, y, o in zip(a, b, lo, strict=True))
    return into, read


@dataclass(frozen=True)
class Stroke:
    """New values on the box [lo, lo + shape) of a volume: `values` (an array of the box's
    shape, or a scalar) written where `mask` is true (everywhere when `mask` is None)."""

    lo: Index
    shape: Index
    values: np.ndarray | float | int
    mask: np.ndarray | None = None

    def shifted(self, offset: Index) -> Stroke:
        """The same stroke in coordinates where the volume starts at -`offset`."""
        lo = tuple(a + o for a, o in zip(self.lo, offset, strict=True))
        return Stroke(lo, self.shape, self.values, self.mask)

    def write(self, target: np.ndarray, start: Index = (0, 0, 0)) -> None:
        """Write the part of the stroke inside `target`, whose voxel 0 lies at `start`."""
        found = _overlap(self.lo, self.shape, target.shape, start)
        if found is None:
            return
        into, read = found
        values = self.values[read] if isinstance(self.values, np.ndarray) else self.values
        where = True if self.mask is None else self.mask[read]
        np.copyto(target[into], values, where=where, casting="unsafe")


@dataclass(frozen=True)
class LazyStroke:
    """A stroke whose values are computed when it is written, on the part of its box
    [lo, lo + shape) the target holds only: `compute(a, b)` returns (values, mask or None)
    for the box's own voxels [a, b) (relative to `lo`), as `Stroke.values` and `Stroke.mask`
    would hold them there. Whatever `compute` reads must not change before the last write
    (the training chain's cache is never written; the in-place path writes each voxel
    once, after reading it)."""

    lo: Index
    shape: Index
    compute: Callable[[Index, Index], tuple[np.ndarray, np.ndarray | None]]

    def shifted(self, offset: Index) -> LazyStroke:
        """The same stroke in coordinates where the volume starts at -`offset`."""
        lo = tuple(a + o for a, o in zip(self.lo, offset, strict=True))
        return LazyStroke(lo, self.shape, self.compute)

    def write(self, target: np.ndarray, start: Index = (0, 0, 0)) -> None:
        """Compute and write the part of the stroke inside `target` (voxel 0 at `start`)."""
        found = _overlap(self.lo, self.shape, target.shape, start)
        if found is None:
            return
        into, read = found
        values, mask = self.compute(
            tuple(s.start for s in read), tuple(s.stop for s in read)
        )  # fmt: skip
        where = True if mask is None else mask
        np.copyto(target[into], values, where=where, casting="unsafe")


@dataclass
class VolumeEdit:
    """What one synthesis event changes: image strokes and label strokes, written in order
    (a later stroke wins where two overlap), and how many voxels became tumour."""

    image: list[Stroke | LazyStroke] = field(default_factory=list)
    label: list[Stroke | LazyStroke] = field(default_factory=list)
    added: int = 0

    def shifted(self, offset: Index) -> VolumeEdit:
        """The edit for a volume in which the planned one starts at `offset`."""
        return VolumeEdit(
            [s.shifted(offset) for s in self.image],
            [s.shifted(offset) for s in self.label],
            self.added,
        )

    def apply(self, image: np.ndarray, label: np.ndarray, start: Index = (0, 0, 0)) -> None:
        """Write the edit into `image` and `label` (same shape; voxel 0 at `start` of the
        planned volume): the whole volume, or a patch cut from it."""
        for stroke in self.image:
            stroke.write(image, start)
        for stroke in self.label:
            stroke.write(label, start)

    @classmethod
    def replacing(cls, image: np.ndarray, label: np.ndarray, added: int = 0) -> VolumeEdit:
        """An edit that replaces a whole (image, label) box by new arrays."""
        shape = tuple(int(n) for n in image.shape)
        zero = (0, 0, 0)
        return cls([Stroke(zero, shape, image)], [Stroke(zero, shape, label)], added)
