"""MONAI transform chains for training and evaluation, in the order of Hu et al. (CVPR 2023).

Synthesis runs in HU on the resampled volume, before windowing; everything before it is
deterministic so `monai.data.CacheDataset` caches the loaded, reoriented, resampled volumes.
The training chain returns a list of `num_samples` patch dicts per sample
(`RandCropByPosNegLabeld`): batch with `monai.data.DataLoader` (its `list_data_collate`
flattens it). `pipeline="public"` is the chain as the public code writes it; `"fast"` gives
the same patches from a compact cache (`tumorsweep.data.sampling`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from tumorsweep.data.monai09 import Monai09Spacingd
from tumorsweep.data.sampling import (
    CompactForSamplingd,
    CropCachedPosNegd,
    SelectOrganCropd,
    SynthesiseLiverBoxd,
)
from tumorsweep.defaults import HU_WINDOW
from tumorsweep.errors import TumorsweepError

KEYS = ("image", "label")
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's RAS+ world convention
RESAMPLE_DTYPES = {"float32": np.float32, "float64": np.float64}
FLIP_PROB, ROTATE_PROB, INTENSITY_PROB = 0.2, 0.2, 0.15


def _check(spacing: Sequence[float], window: Sequence[float], patch_size: Sequence[int]) -> None:
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise TumorsweepError(f"spacing must be 3 positive sizes in mm, got {tuple(spacing)}")
    if len(window) != 2 or not float(window[0]) < float(window[1]):
        raise TumorsweepError(f"window must be (low, high) HU with low < high, got {tuple(window)}")
    if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
        raise TumorsweepError(f"patch_size must be 3 positive sizes, got {tuple(patch_size)}")


def _load_and_resample(
    spacing: Sequence[float],
    keys: Sequence[str],
    allow_missing: bool,
    resample: Literal["float32", "float64", "monai09"] = "float32",
) -> list:
    """Load -> channel first -> RAS -> resample (bilinear image, nearest label); the resampling
    computes in `resample` ("monai09": MONAI 0.9's `Spacingd`, image only) and returns float32."""
    if resample not in (*RESAMPLE_DTYPES, "monai09"):
        raise TumorsweepError(
            f"resample: expected one of {[*RESAMPLE_DTYPES, 'monai09']}, got {resample!r}"
        )
    if resample == "monai09":
        return [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS", labels=RAS_LABELS),
            Monai09Spacingd("image", pixdim=tuple(float(s) for s in spacing), mode="bilinear"),
        ]
    return [
        LoadImaged(keys, image_only=True, allow_missing_keys=allow_missing),
        EnsureChannelFirstd(keys, allow_missing_keys=allow_missing),
        Orientationd(keys, axcodes="RAS", labels=RAS_LABELS, allow_missing_keys=allow_missing),
        Spacingd(
            keys,
            pixdim=tuple(float(s) for s in spacing),
            mode=("bilinear", "nearest"),
            dtype=RESAMPLE_DTYPES[resample],
            allow_missing_keys=allow_missing,
        ),
    ]


def _window(window: Sequence[float]) -> ScaleIntensityRanged:
    return ScaleIntensityRanged(
        "image", a_min=float(window[0]), a_max=float(window[1]), b_min=0.0, b_max=1.0, clip=True
    )


def resampled_pair(spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Compose:
    """Image and label loaded, RAS, resampled, still in HU: where synthesis operates."""
    _check(spacing, HU_WINDOW, (1, 1, 1))
    return Compose(_load_and_resample(spacing, KEYS, allow_missing=False))


def train_transforms(
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    window: Sequence[float] = HU_WINDOW,
    patch_size: Sequence[int] = (96, 96, 96),
    synthesis: MapTransform | None = None,
    augment: bool = True,
    num_samples: int = 1,
    pipeline: Literal["public", "fast"] = "public",
    cache_dtype: Literal["float32", "int16"] = "float32",
    organ_crop_mm: float | None = None,
) -> Compose:
    """Training chain: load, RAS, resample, [synthesis in HU], window, pad, 1:1 crop, augment.

    `num_samples` crops are cut from each synthesised volume (one synthesis, several patches).
    `pipeline="fast"` caches compacted volumes (`cache_dtype`) and cuts the same patches from
    them (float32: images to rounding); use it with `CacheDataset(copy_cache=False)`: it never
    writes into the cached item. `organ_crop_mm`: healthy samples' crops are redrawn until
    they hold enough organ (`SelectOrganCropd`, Chen et al.'s crop selection).

    The label ends as an int64 tensor of class indices (0/1/2), the image as float32 in [0, 1]
    (before intensity augmentation).
    """
    _check(spacing, window, patch_size)
    if pipeline not in ("public", "fast"):
        raise TumorsweepError(f"pipeline must be 'public' or 'fast', got {pipeline!r}")
    patch = tuple(int(p) for p in patch_size)
    chain = _load_and_resample(spacing, KEYS, allow_missing=False)
    if pipeline == "fast":
        low = float(window[0])
        chain.append(CompactForSamplingd(patch, low, cache_dtype))
        if synthesis is not None:
            chain.append(SynthesiseLiverBoxd(synthesis))
        crop: MapTransform = CropCachedPosNegd(patch, low, num_samples=num_samples)
        if organ_crop_mm is not None:
            crop = SelectOrganCropd(crop, organ_crop_mm, spacing)
        chain += [crop, _window(window)]
    else:
        if synthesis is not None:
            chain.append(synthesis)
        crop = RandCropByPosNegLabeld(
            KEYS,
            label_key="label",
            spatial_size=patch,
            pos=1,
            neg=1,
            num_samples=num_samples,
            image_key="image",
            image_threshold=0,
        )
        if organ_crop_mm is not None:
            crop = SelectOrganCropd(crop, organ_crop_mm, spacing)
        chain += [
            _window(window),
            SpatialPadd(KEYS, spatial_size=patch, mode=("minimum", "constant")),
            crop,
        ]
    if augment:
        chain += _augmentations()
    chain.append(EnsureTyped(KEYS, dtype=(torch.float32, torch.int64), track_meta=False))
    return Compose(chain)


def _augmentations() -> list[MapTransform]:
    """The public code's augmentations: a flip per axis, a quarter turn, intensity scale and
    shift."""
    return [
        *(RandFlipd(KEYS, prob=FLIP_PROB, spatial_axis=axis) for axis in range(3)),
        RandRotate90d(KEYS, prob=ROTATE_PROB, max_k=3),
        RandScaleIntensityd("image", factors=0.1, prob=INTENSITY_PROB),
        RandShiftIntensityd("image", offsets=0.1, prob=INTENSITY_PROB),
    ]


def eval_transforms(
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    window: Sequence[float] = HU_WINDOW,
    resample: Literal["float32", "float64", "monai09"] = "float32",
) -> Compose:
    """Evaluation chain: load, RAS, resample, window; image and (if present) label.

    Metadata are kept so `monai.transforms.Invertd` can map predictions back to the native grid.
    `resample` is how the resampling (and its inversion) computes: in float32, in float64
    (MONAI's `Spacingd` default), or as MONAI 0.9's `Spacingd` did, which Hu et al.'s
    `validation.py` ran (`tumorsweep.data.monai09`; image only, the label stays as loaded).
    """
    _check(spacing, window, (1, 1, 1))
    chain = _load_and_resample(spacing, KEYS, allow_missing=True, resample=resample)
    return Compose([*chain, _window(window)])
