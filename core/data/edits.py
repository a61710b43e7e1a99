"""A synthesis event's changes to an (image, label) pair, kept beside the volumes.

Training's fast chain never writes into its cache: a synthesis event is planned on read-only
views of the cached liver box and kept as a `VolumeEdit` (a few boxes of new values, each
with the voxels it writes), which is pasted into each training patch cut from the cache. This
costs work on the tumours' boxes only, where copying the liver box per sample cost about as
much as a small event itself. `VolumeEdit.apply` writes the same values into whole arrays
(the in-place path), so both paths give the same voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Index = tuple[int, int, int]


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
        lo = [max(a, s) for a, s in zip(self.lo, start, strict=True)]
        hi = [
            min(a + n, s + m)
            for a, n, s, m in zip(self.lo, self.shape, start, target.shape, strict=True)
        ]
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            return
        into = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
        read = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, self.lo, strict=True))
        values = self.values[read] if isinstance(self.values, np.ndarray) else self.values
        where = True if self.mask is None else self.mask[read]
        np.copyto(target[into], values, where=where, casting="unsafe")


@dataclass
class VolumeEdit:
    """What one synthesis event changes: image strokes and label strokes, written in order
    (a later stroke wins where two overlap), and how many voxels became tumour."""

    image: list[Stroke] = field(default_factory=list)
    label: list[Stroke] = field(default_factory=list)
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
