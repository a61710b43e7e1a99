"""One DiffTumor synthesis event on a CT in HU (Chen et al. CVPR 2024, STEP3), pure numpy in,
the generator's device inside: draw a tumour mask, let the generator fill it, paste it back.

- Type: early / medium / large with `synthesis.difftumor` probabilities. Early = 1-3 blobs,
  all tiny or all small (even odds, one type per event as the public code draws it); medium =
  one medium blob; large = one blob whose semi-axes reach 2x the large radius (as the public
  code draws them). Semi-axes, elastic deformation and locations follow Hu et al.
  (`synthesis.radius`, `synthesis.elastic_sigma`, the middle-40% slice rule).
- Where: a generator patch (side P) centred on a Hu-rule liver point, shifted inside the
  volume; every blob is placed inside the liver part of that patch (the public code draws
  them inside its training crop) and the union is cut to the liver.
- Fill: early tumours by the early model's DDPM chain, others by the late model's DDIM.
- Paste: I = (1 - w) I + w G with w the mask blurred by sigma ~ U(blur.low, blur.high); voxels
  where w = 0 are left bit-for-bit unchanged; label 2 on the mask.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.sampler import Generator
from tumorsweep.synthesis.config import SynthesisConfig
from tumorsweep.synthesis.location import uniform_centre
from tumorsweep.synthesis.shapes import Blob, deformed_ellipsoid

KINDS = ("early", "medium", "large")
_EARLY_BLOBS = ("tiny", "small")
_EARLY_COUNT = (1, 3)
_LARGE_AXIS_FACTOR = 2.0  # the public code: large semi-axes in [0.75 r, 2.0 r]
_MIN_LIVER_VOXELS = 100


def draw_kind(config: SynthesisConfig, rng: np.random.Generator) -> str:
    """Early, medium or large, with the configured probabilities."""
    d = config.difftumor
    probs = np.array([d.early, d.medium, d.large], dtype=np.float64)
    return KINDS[int(rng.choice(len(KINDS), p=probs / probs.sum()))]


def _blob(kind: str, centre: tuple[int, ...], config: SynthesisConfig, rng) -> Blob:
    r0 = config.radius[kind]
    top = _LARGE_AXIS_FACTOR if kind == "large" else 1.25
    lo_axis, hi_axis = max(1, int(0.75 * r0)), max(1, int(top * r0))
    axes = tuple(int(a) for a in rng.integers(lo_axis, hi_axis + 1, size=3))
    sigma_lo, sigma_hi = config.elastic_sigma[kind]
    if kind == "tiny":
        sigma = float(rng.uniform(sigma_lo, sigma_hi))
    else:
        sigma = float(rng.integers(int(sigma_lo), int(sigma_hi) + 1))
    return Blob(centre=tuple(int(c) for c in centre), semi_axes=axes, elastic_sigma=sigma)


def draw_mask(
    liver: np.ndarray, kind: str, config: SynthesisConfig, rng: np.random.Generator
) -> np.ndarray:
    """Tumour mask of one event on a patch's liver mask (bool, same shape), cut to the liver."""
    blobs = []
    if kind == "early":  # one type per event, 1-3 blobs of it (public get_fixed_geo)
        blob_kind = _EARLY_BLOBS[int(rng.integers(len(_EARLY_BLOBS)))]
        for _ in range(int(rng.integers(_EARLY_COUNT[0], _EARLY_COUNT[1] + 1))):
            blobs.append(_blob(blob_kind, uniform_centre(liver, rng), config, rng))
    else:
        blobs.append(_blob(kind, uniform_centre(liver, rng), config, rng))
    mask = np.zeros(liver.shape, dtype=bool)
    for blob in blobs:
        lo, hi, part = deformed_ellipsoid(blob, liver.shape, rng)
        if part.size:
            mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] |= part
    return mask & liver


def patch_window(
    centre: tuple[int, ...], size: int, shape: tuple[int, ...]
) -> tuple[slice, slice, slice]:
    """A cube of side `size` around `centre`, shifted to lie inside `shape` (shorter along
    axes the volume is shorter than `size`)."""
    starts = [
        min(max(0, c - size // 2), max(0, n - size)) for c, n in zip(centre, shape, strict=True)
    ]
    return tuple(slice(s, min(n, s + size)) for s, n in zip(starts, shape, strict=True))


def synthesize_difftumor_inplace(
    image_hu: np.ndarray,
    label: np.ndarray,
    generator: Generator,
    config: SynthesisConfig,
    rng: np.random.Generator,
) -> int:
    """One event into `image_hu` (float, HU, at the generator's spacing) and `label` (0/1),
    in place; returns the number of tumour voxels added."""
    if image_hu.ndim != 3 or image_hu.shape != label.shape:
        raise TumorsweepError(
            f"image shape {image_hu.shape} and label shape {label.shape} must be the same 3-D shape"
        )
    liver = label >= 1
    if np.count_nonzero(liver) < _MIN_LIVER_VOXELS:
        raise TumorsweepError(
            f"liver has {np.count_nonzero(liver)} voxels; need >= {_MIN_LIVER_VOXELS}"
        )
    kind = draw_kind(config, rng)
    size = generator.config.patch_size
    window = patch_window(uniform_centre(liver, rng), size, liver.shape)
    mask = draw_mask(liver[window], kind, config, rng)
    if not mask.any():
        return 0
    patch = np.full((size,) * 3, generator.config.window[0], dtype=np.float32)
    inside = tuple(slice(0, w.stop - w.start) for w in window)
    patch[inside] = image_hu[window]
    full_mask = np.zeros((size,) * 3, dtype=np.float32)
    full_mask[inside] = mask
    device = generator.device
    noise = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    filled = generator.inpaint(
        torch.from_numpy(patch)[None, None],
        torch.from_numpy(full_mask)[None, None],
        "early" if kind == "early" else "late",
        ddim_steps=config.difftumor.ddim_steps,
        eta=config.difftumor.ddim_eta,
        generator=noise,
    )
    filled = filled[0, 0].cpu().numpy()[inside]
    sigma = float(rng.uniform(config.difftumor.blur.low, config.difftumor.blur.high))
    weight = mask.astype(np.float32)
    if sigma > 0:
        weight = gaussian_filter(weight, sigma, mode="reflect")  # scipy's default, as theirs
    region = image_hu[window]
    touched = weight > 0
    region[touched] = (1 - weight[touched]) * region[touched] + weight[touched] * filled[touched]
    label[window][mask] = 2
    return int(np.count_nonzero(mask))
