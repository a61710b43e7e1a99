"""The fast training chain's pieces: the public chain's patches without its full-volume work.

The public chain (Hu et al.) deep-copies each cached 1 mm volume per sample, synthesises on
the copy, windows the whole volume, pads it, and lets `RandCropByPosNegLabeld` find the
foreground (label > 0) and background (label == 0 and windowed image > 0) voxels anew before
drawing one. Three facts make that work unnecessary:

- Synthesis changes only liver voxels (PROTOCOL section 2; `synthesize_tumors` documents it)
  and keeps label > 0 there, so both index sets are the same before and after it: they are
  computed once, when the case is cached, on the HU image (windowed > 0 is HU > window low).
- Patches are drawn only around those voxels, so the cache keeps only the union of every
  window a centre can give (`patch_windows`); nothing outside it is ever read.
- The window and augmentations act voxel by voxel or on the patch alone, so they run on the
  patch; the synthesis runs on a copy of the liver box and is pasted into the patch.

`CompactForSamplingd` (deterministic, cached) and `SynthesiseLiverBoxd` + `CropCachedPosNegd`
(random) replace the public suffix; they draw from MONAI's random states in the same order
with MONAI's own `generate_pos_neg_label_crop_centers`, so with float32 storage a seeded
chain yields the public one's patches: labels bit for bit, images to float32 rounding (a Hu
event's blend is computed on the patch's part of each region; tests/data/test_data_transforms.py).
Foreground/background indices are not stored as MONAI's int64 lists (tens of millions per 1 mm
CT): per (x, y) row the cache holds cumulative counts, and the k-th voxel of the list is found
by a binary search over rows and a scan of one row.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from monai.transforms.utils import correct_crop_centers, generate_pos_neg_label_crop_centers

from tumorsweep.data.edits import VolumeEdit
from tumorsweep.errors import TumorsweepError

IMAGE, LABEL = "image", "label"
FG_ROWS, BG_ROWS, LIVER_BOX, SYNTH = "fg_rows", "bg_rows", "liver_box", "synthesised_box"
ORIGIN = "compact_origin"  # where the kept part starts in the resampled, padded grid
# A dict per cached case for facts derived from its read-only arrays, filled by the first
# sample that needs them (the synthesis keeps its scan of the liver box's label there): the
# same dict object in every sample of the case, since the cache is not deep-copied.
MEMO = "case_memo"
STORAGE = {"float32": np.float32, "int16": np.int16}


def patch_windows(eligible: np.ndarray, patch: Sequence[int]) -> tuple[tuple[int, int], ...] | None:
    """Per axis, the [start, stop) range covered by every patch window MONAI can centre on a
    True voxel of `eligible` (centres moved inside the volume by `correct_crop_centers`);
    None when no voxel is eligible."""
    shape = eligible.shape
    ranges = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(eligible.any(axis=other))
        if not hits.size:
            return None
        ranges.append((int(hits[0]), int(hits[-1])))
    first = correct_crop_centers([r[0] for r in ranges], patch, shape)
    last = correct_crop_centers([r[1] for r in ranges], patch, shape)
    return tuple(
        (int(a) - p // 2, int(b) - p // 2 + p) for a, b, p in zip(first, last, patch, strict=True)
    )


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """Cumulative count of True voxels over the (x, y) rows of a 3-D mask, in C order."""
    return np.cumsum(np.count_nonzero(mask, axis=2).ravel(), dtype=np.int64)


class CompactForSamplingd(MapTransform):
    """What the cache keeps of a resampled (image, label) pair for the fast chain.

    Pads like the public `SpatialPadd` (image per-line minimum, label 0; done in HU, which the
    monotone window maps to the same values), stores the image in `dtype` (int16 rounds to
    whole HU), the label as uint8, keeps only `patch_windows` of the voxels a patch can be
    centred on, and adds the per-row counts of both index sets, the liver box (one voxel
    wider per side, clipped) and where the kept part starts.
    """

    def __init__(self, patch_size: Sequence[int], window_low: float, dtype: str = "float32"):
        super().__init__((IMAGE, LABEL))
        self.patch = tuple(int(p) for p in patch_size)
        self.low = float(window_low)
        self.dtype = STORAGE[dtype]

    def _store(self, value: Any, dtype: type, pad_mode: str) -> np.ndarray:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        array = np.asarray(array)[0]
        if np.issubdtype(dtype, np.integer) and array.dtype.kind == "f":
            info = np.iinfo(dtype)
            array = np.clip(np.rint(array), info.min, info.max)
        array = array.astype(dtype, order="C")
        pad = [(max(p - n, 0) // 2, max(p - n, 0) - max(p - n, 0) // 2) for n, p in zip(
            array.shape, self.patch, strict=True)]  # fmt: skip
        return np.pad(array, pad, mode=pad_mode) if any(any(w) for w in pad) else array

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = getattr(d[IMAGE], "meta", {}).get("filename_or_obj", "training case")
        image = self._store(d[IMAGE], self.dtype, "minimum")
        label = self._store(d[LABEL], np.uint8, "constant")
        liver = label > 0
        eligible = liver | (image > self.low)
        windows = patch_windows(eligible, self.patch)
        if windows is None:
            raise TumorsweepError(
                f"{Path(str(source)).name}: no voxel to centre a training patch on (no liver "
                f"label and no voxel above {self.low:g} HU)"
            )
        keep = tuple(slice(a, b) for a, b in windows)
        image, label = np.ascontiguousarray(image[keep]), np.ascontiguousarray(label[keep])
        liver = liver[keep]
        d[IMAGE], d[LABEL] = image[None], label[None]
        d[ORIGIN] = tuple(a for a, _ in windows)
        d[FG_ROWS] = _row_counts(liver)
        d[BG_ROWS] = _row_counts(~liver & (image > self.low))
        box = []
        for axis in range(3):
            hits = np.flatnonzero(liver.any(axis=tuple(a for a in range(3) if a != axis)))
            lo, hi = (hits[0], hits[-1] + 1) if hits.size else (0, liver.shape[axis])
            box.append((max(0, int(lo) - 1), min(liver.shape[axis], int(hi) + 1)))
        d[LIVER_BOX] = tuple(box)
        d[MEMO] = {}
        return d


class RowIndices:
    """The flat C-order indices of one index set of a compacted case, without storing them.

    Behaves like MONAI's index arrays where `generate_pos_neg_label_crop_centers` uses them
    (`len`, integer `[]`); the k-th entry is the k-th voxel of the set in C order.
    """

    def __init__(self, counts: np.ndarray, image: np.ndarray, label: np.ndarray, low: float | None):
        self.counts, self.image, self.label, self.low = counts, image, label, low
        self.depth = label.shape[2]
        self.width = label.shape[1]

    def __len__(self) -> int:
        return int(self.counts[-1]) if self.counts.size else 0

    def __getitem__(self, k: int) -> int:
        k = int(k)
        if not 0 <= k < len(self):
            raise IndexError(k)
        row = int(np.searchsorted(self.counts, k, side="right"))
        before = int(self.counts[row - 1]) if row else 0
        x, y = divmod(row, self.width)
        labels = self.label[x, y]
        hits = labels > 0 if self.low is None else (labels == 0) & (self.image[x, y] > self.low)
        return row * self.depth + int(np.flatnonzero(hits)[k - before])


class SynthesiseLiverBoxd(Randomizable, MapTransform):
    """Runs a synthesis transform on the cached liver box only, without writing the cache.

    A synthesis with `plan_event` (`TumorSynthesisd`) plans its event on read-only views of
    the box (a float32 cache; an int16 one is converted first) and the resulting
    `VolumeEdit` stays beside the cache (`synthesised_box`) until `CropCachedPosNegd` writes
    it into the patches; any other synthesis runs on float32 copies of the box, kept as an
    edit that replaces the box. Its random state is the wrapped transform's (MONAI's
    `Compose.set_random_state` seeds it as it seeds the public chain's).
    """

    def __init__(self, synthesis: Any):
        MapTransform.__init__(self, (IMAGE, LABEL))
        self.synthesis = synthesis

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> SynthesiseLiverBoxd:
        self.synthesis.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen in the wrapped synthesis."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        box = tuple(slice(a, b) for a, b in d[LIVER_BOX])
        image, label = d[IMAGE][0][box], d[LABEL][0][box]
        plan = getattr(self.synthesis, "plan_event", None)
        if plan is not None:
            if image.dtype != np.float32:  # an int16 cache: planned on a float32 copy
                image = image.astype(np.float32)
            edit, flags = plan(image, label, memo=d.get(MEMO))
        else:
            edit, flags = self._on_copies(image, label)
        d.update(flags)
        d[SYNTH] = None if edit is None else edit.shifted(tuple(s.start for s in box))
        return d

    def _on_copies(
        self, image: np.ndarray, label: np.ndarray
    ) -> tuple[VolumeEdit, dict[Hashable, Any]]:
        """The wrapped transform on float32 copies of the box: an edit replacing the box and
        the flags it set."""
        image_key, label_key = self.synthesis.keys
        sample = {
            image_key: torch.from_numpy(image.astype(np.float32))[None],
            label_key: torch.from_numpy(label.copy())[None],
        }
        out = self.synthesis(sample)
        edit = VolumeEdit.replacing(
            np.asarray(torch.as_tensor(out[image_key])[0]),
            np.asarray(torch.as_tensor(out[label_key])[0]),
        )
        return edit, {k: v for k, v in out.items() if k not in (image_key, label_key)}


class CropCachedPosNegd(Randomizable, MapTransform):
    """`RandCropByPosNegLabeld(pos, neg, image_threshold=0)` on a compacted case: the same
    draws (MONAI's own centre generator and random state) from the cached index counts,
    returning `num_samples` dicts of a float32 HU image patch (synthesis pasted in) and a uint8
    label patch, with the sample's scalar entries (flags such as `real_tumor`) copied to each,
    as `RandCropByPosNegLabeld` copies them."""

    def __init__(
        self,
        patch_size: Sequence[int],
        window_low: float,
        num_samples: int = 1,
        pos: float = 1.0,
        neg: float = 1.0,
    ):
        MapTransform.__init__(self, (IMAGE, LABEL))
        self.patch = tuple(int(p) for p in patch_size)
        self.low = float(window_low)
        self.num_samples = int(num_samples)
        self.pos_ratio = pos / (pos + neg)
        self.centers: tuple = ()

    def randomize(self, data: Mapping[Hashable, Any]) -> None:
        image, label = data[IMAGE][0], data[LABEL][0]
        self.centers = generate_pos_neg_label_crop_centers(
            self.patch,
            self.num_samples,
            self.pos_ratio,
            label.shape,
            RowIndices(data[FG_ROWS], image, label, None),
            RowIndices(data[BG_ROWS], image, label, self.low),
            self.R,
        )

    def starts(self) -> list[tuple[int, ...]]:
        """The first voxel of each patch the last `randomize` drew (its centre - patch // 2)."""
        return [
            tuple(int(c) - p // 2 for c, p in zip(center, self.patch, strict=True))
            for center in self.centers
        ]

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        self.randomize(data)
        image, label = data[IMAGE][0], data[LABEL][0]
        synthesised: VolumeEdit | None = data.get(SYNTH)
        flags = {k: v for k, v in data.items() if isinstance(v, bool | int | float | str)}
        patches = []
        for start in self.starts():
            window = tuple(slice(s, s + p) for s, p in zip(start, self.patch, strict=True))
            patch_image = image[window].astype(np.float32)
            patch_label = label[window].copy()
            if synthesised is not None:
                synthesised.apply(patch_image, patch_label, start)
            patches.append(
                {
                    IMAGE: torch.from_numpy(patch_image)[None],
                    LABEL: torch.from_numpy(patch_label)[None],
                    **flags,
                }
            )
        return patches


def _sphere_voxels(radius_mm: float, spacing: Sequence[float]) -> float:
    return 4.0 / 3.0 * np.pi * radius_mm**3 / float(np.prod(spacing))


class SelectOrganCropd(Randomizable, MapTransform):
    """Chen et al.'s `RandCropByPosNegLabeld_select` (DiffTumor STEP3 `main.py`) around any
    crop transform: for a healthy sample (`real_tumor` flag absent or false) the crop is
    redrawn until its first patch holds more organ voxels (label > 0) than a sphere of radius
    R mm, R = `radius_mm` for draws 1-5, then 5 mm less every 5 draws (not below 5 mm); the
    31st draw is kept whatever it holds. Real-tumour samples are cropped once. Its random
    state is the wrapped crop's."""

    def __init__(
        self, crop: Any, radius_mm: float, spacing: Sequence[float], flag: str = "real_tumor"
    ):
        MapTransform.__init__(self, (IMAGE, LABEL))
        self.crop, self.flag = crop, flag
        self.radius, self.spacing = float(radius_mm), tuple(float(s) for s in spacing)
        self.draws = 0  # of the last call: how many crops it cut

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> SelectOrganCropd:
        self.crop.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen in the wrapped crop."""

    def threshold(self, draw: int) -> float:
        """Organ voxels the `draw`-th crop (1-based) must exceed to be kept."""
        radius = max(self.radius - 5.0 * ((draw - 1) // 5), 5.0) if draw > 5 else self.radius
        return _sphere_voxels(radius, self.spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        if bool(data.get(self.flag, False)):
            self.draws = 1
            return self.crop(data)
        for draw in range(1, 32):
            patches = self.crop(data)
            organ = int((torch.as_tensor(patches[0][LABEL]) > 0).sum())
            if draw == 31 or organ > self.threshold(draw):
                break
        self.draws = draw
        return patches
