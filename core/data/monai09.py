"""Resampling to a voxel spacing as MONAI 0.9's `Spacingd` computes it, and its inversion.

Hu et al.'s `validation.py` runs with MONAI 0.9.0 (their requirements.txt). Its `Spacingd`
differs from today's MONAI in more than the interpolation precision, and each difference moves
the resampled HU by up to ~1e-4 HU at sharp edges (enough to flip an argmax now and then):

- the affine it resamples from is the one `Orientationd` left, held in float32, and the
  voxel-to-voxel transform is solved in float32 (`solve(src, dst)` of float32 matrices);
  the interpolation itself runs in float64 (its `dtype` default) and returns float32;
- the output grid: shape = round(extent of the eight corners in output voxels + 1); origin = the
  input corner that is smallest in output voxel coordinates (MONAI >= 1.0 centres the grid
  when no corner is);
- its inverse (`Invertd`) is a new resampling from the current float32 affine to the original
  voxel size, with the output grid's origin found by the same corner rule and the shape set to
  the original one, again solved in float32.

This module reproduces those steps with MONAI's own interpolation layer (`AffineTransform`,
unchanged since 0.9) so `eval.protocol=hu2023` resamples and inverts as the public code did.
`tests/evaluate/test_faithfulness_hu2023.py` compares the whole evaluation with MONAI 0.9.0 itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing, zoom_affine
from monai.networks.layers import AffineTransform
from monai.transforms import InvertibleTransform, MapTransform

AFFINE_TOL = (
    1e-3  # MONAI 0.9's tolerance for "already on this grid" and "this corner is the origin"
)


def output_grid(
    shape: Sequence[int], in_affine: np.ndarray, out_affine: np.ndarray
) -> tuple[tuple[int, ...], np.ndarray]:
    """MONAI 0.9's output grid: (shape, origin in world mm) of a volume of `shape` voxels with
    affine `in_affine` resampled to the rotation and zoom of `out_affine`.

    The shape spans the eight corner voxel centres in output voxels (rounded, + 1); the origin
    is the first corner (in C order of the corner bits) that is smallest along every output
    axis, else the first corner."""
    sides = [(0.0, float(n) - 1.0) for n in shape]
    corners = np.array([list(c) + [1.0] for c in itertools.product(*sides)]).T  # (4, 8)
    world = np.asarray(in_affine, dtype=np.float64) @ corners
    to_output = np.linalg.inv(np.asarray(out_affine, dtype=np.float64))
    voxels = to_output @ world
    voxels = voxels[:-1] / voxels[-1]
    out_shape = tuple(int(n) for n in np.round(np.ptp(voxels, axis=1) + 1.0))
    rotation = to_output[:-1, :-1]
    origin = world[:-1, 0]
    for index in range(world.shape[1]):
        spread = rotation @ world[:-1, :] - rotation @ world[:-1, index : index + 1]
        if np.allclose(np.min(spread, axis=1), 0.0, rtol=AFFINE_TOL):
            origin = world[:-1, index]
            break
    return out_shape, origin


def resample(
    image: torch.Tensor,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    shape: Sequence[int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """`image` (C, X, Y, Z) on `src_affine` resampled onto `shape` voxels of `dst_affine`:
    voxel transform solved in float32, interpolated in float64 (border padding, corners not
    aligned), returned in float32."""
    src, dst = (np.asarray(a, dtype=np.float32) for a in (src_affine, dst_affine))
    if np.allclose(src, dst, atol=AFFINE_TOL) and tuple(image.shape[1:]) == tuple(shape):
        return image.to(torch.float32)
    xform = np.linalg.solve(src, dst)  # float32, as MONAI 0.9 solves it
    if np.allclose(xform, np.eye(4), atol=AFFINE_TOL) and tuple(image.shape[1:]) == tuple(shape):
        return image.to(torch.float32)
    layer = AffineTransform(
        normalized=False,
        mode=mode,
        padding_mode="border",
        align_corners=False,
        reverse_indexing=True,
    )
    values = torch.as_tensor(image).as_subclass(torch.Tensor).to(torch.float64)
    theta = torch.as_tensor(xform).to(torch.float64)
    out = layer(values.unsqueeze(0), theta=theta, spatial_size=tuple(int(n) for n in shape))
    return out.squeeze(0).to(torch.float32)


class Monai09Spacingd(MapTransform, InvertibleTransform):
    """Resample `keys` to `pixdim` mm as MONAI 0.9's `Spacingd` (default settings) does;
    invertible by `monai.transforms.Invertd` as MONAI 0.9 inverted it (see the module text).

    Args:
        keys: the image keys (MetaTensors with their affine).
        pixdim: output voxel size in mm.
        mode: interpolation ("bilinear" for images).
    """

    def __init__(
        self, keys: str | Sequence[str], pixdim: Sequence[float], mode: str = "bilinear"
    ) -> None:
        super().__init__(keys)
        self.pixdim = np.asarray([float(p) for p in pixdim], dtype=np.float64)
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            # MONAI 0.9's Orientationd leaves the affine in float32
            source = np.asarray(image.affine, dtype=np.float32)
            target = zoom_affine(source.astype(np.float64), self.pixdim, diagonal=False)
            shape, origin = output_grid(image.shape[1:], source, target)
            target[:-1, -1] = origin
            target = target.astype(np.float32)
            out = MetaTensor(resample(image, source, target, shape, self.mode))
            out.copy_meta_from(image, copy_attr=True)
            out.affine = torch.as_tensor(target, dtype=torch.float64)
            self.push_transform(
                out,
                orig_size=tuple(image.shape[1:]),
                extra_info={"source": source.tolist(), "target": target.tolist()},
            )
            d[key] = out
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            record = self.pop_transform(image)
            source = np.asarray(record["extra_info"]["source"], dtype=np.float32)
            current = np.asarray(record["extra_info"]["target"], dtype=np.float32)
            back = zoom_affine(current.astype(np.float64), affine_to_spacing(source, -1), False)
            _, origin = output_grid(image.shape[1:], current, back)
            back[:-1, -1] = origin
            shape = tuple(int(n) for n in record["orig_size"])
            out = MetaTensor(resample(image, current, back, shape, self.mode))
            out.copy_meta_from(image, copy_attr=True)
            out.affine = torch.as_tensor(source, dtype=torch.float64)
            d[key] = out
        return d
