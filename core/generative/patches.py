"""Training crops of a generator: the real-tumour training cases, resampled to the generator's
spacing and windowed once, then random cubes centred on tumour voxels.

Each case keeps only its liver's bounding box plus half a patch (float16 in [-1, 1]), so a
study's tumour cases fit in memory at 1 mm. Every tumour (26-connected component of label 2)
is classed "early" (equivalent-sphere radius <= `early_radius_mm`, Chen et al.) or "late".
A crop is centred on a random voxel of a tumour of the wanted class, its mask is every tumour
voxel of the crop (the public STEP2 loader crops the tumour label with the image), and it is
flipped at random per axis; the draw of item i in epoch e is seeded by (seed, e, i),
so every rank and every resumed run sees the same crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import GeneratorConfig

KINDS = ("early", "late")
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass
class TumourCase:
    """One case's windowed box and its tumours (voxel indices into the box, per tumour)."""

    name: str
    image: np.ndarray  # float16 in [-1, 1]
    tumours: list[np.ndarray]  # (n, 3) int32 voxel indices, one array per tumour
    radii_mm: list[float]  # equivalent-sphere radius of each tumour


def load_cases(entries: Sequence[dict], config: GeneratorConfig) -> list[TumourCase]:
    """Read each case at the generator's spacing; a case without tumour voxels is refused."""
    from tumorsweep.data.transforms import resampled_pair

    load = resampled_pair(config.spacing)
    voxel_mm3 = float(np.prod(config.spacing))
    low, high = config.window
    half = config.patch_size // 2
    cases = []
    for entry in entries:
        sample = load({"image": entry["image"], "label": entry["label"]})
        label = np.rint(np.asarray(sample["label"][0])).astype(np.uint8)
        hu = np.asarray(sample["image"][0], dtype=np.float32)
        if not (label == 2).any():
            raise TumorsweepError(f"{entry['label']}: a real-tumour case without tumour voxels")
        liver = np.nonzero(label >= 1)
        lo = [max(0, int(axis.min()) - half) for axis in liver]
        hi = [min(n, int(a.max()) + 1 + half) for a, n in zip(liver, label.shape, strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        unit = np.clip((hu[box] - low) / (high - low), 0.0, 1.0) * 2.0 - 1.0
        components, count = ndimage.label(label[box] == 2, structure=_CONNECTIVITY)
        voxels = ndimage.value_indices(components, ignore_value=0)
        tumours = [np.stack(voxels[k], axis=1).astype(np.int32) for k in range(1, count + 1)]
        radii = [(3.0 * len(t) * voxel_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0) for t in tumours]
        cases.append(TumourCase(entry["case"], unit.astype(np.float16), tumours, radii))
    return cases


class TumourCrops(torch.utils.data.Dataset):
    """`length` random crops (image, mask), each (1, P, P, P) float32, around tumours of one
    class ("early", "late" or "all"); a class with no tumour falls back to all tumours."""

    def __init__(
        self, cases: list[TumourCase], config: GeneratorConfig, kind: str, length: int
    ) -> None:
        limit = config.early_radius_mm
        wanted = {
            "early": lambda r: r <= limit,
            "late": lambda r: r > limit,
            "all": lambda r: True,
        }[kind]
        every = [(c, t, r) for c, case in enumerate(cases) for t, r in enumerate(case.radii_mm)]
        self.tumours = [(c, t) for c, t, r in every if wanted(r)]
        self.fallback = not self.tumours
        if self.fallback:
            self.tumours = [(c, t) for c, t, _ in every]
        self.cases, self.size, self.length = cases, config.patch_size, length
        self.seed, self.epoch = config.training.seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Crops of epoch `epoch` (called before each pass)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        case_index, tumour_index = self.tumours[int(rng.integers(len(self.tumours)))]
        case = self.cases[case_index]
        voxels = case.tumours[tumour_index]
        centre = voxels[int(rng.integers(len(voxels)))]
        image = np.full((self.size,) * 3, -1.0, dtype=np.float32)  # outside the scan: air
        mask = np.zeros((self.size,) * 3, dtype=np.float32)
        start = centre - self.size // 2
        src, dst = [], []
        for axis in range(3):
            a = max(0, int(start[axis]))
            b = min(case.image.shape[axis], int(start[axis]) + self.size)
            src.append(slice(a, b))
            dst.append(slice(a - int(start[axis]), b - int(start[axis])))
        image[tuple(dst)] = case.image[tuple(src)]
        every = np.concatenate(case.tumours)  # the mask: every tumour voxel of the crop
        inside = np.all((every >= start) & (every < start + self.size), axis=1)
        local = every[inside] - start
        mask[local[:, 0], local[:, 1], local[:, 2]] = 1.0
        flips = tuple(axis for axis in range(3) if rng.uniform() < 0.5)
        if flips:
            image, mask = np.flip(image, flips), np.flip(mask, flips)
        return (
            torch.from_numpy(np.ascontiguousarray(image))[None],
            torch.from_numpy(np.ascontiguousarray(mask))[None],
        )


def tumour_counts(cases: list[TumourCase], config: GeneratorConfig) -> dict[str, int]:
    """Number of training tumours per class."""
    radii = [r for case in cases for r in case.radii_mm]
    early = sum(r <= config.early_radius_mm for r in radii)
    return {"early": early, "late": len(radii) - early}
