"""DiffTumor synthesis as a step on the training batch, where Chen et al. (CVPR 2024,
MrGiovanni/DiffTumor, STEP3 `monai_trainer.train_epoch`) put it: on the trainer's device, after
cropping, flips and intensity augmentation, on each crop's own liver, so every synthetic tumour
lies inside the patch the network sees.

Per patch of a batch (channel-first crops windowed to [0, 1] by the trial's `data.window`):
- the gate: a healthy patch (no real-tumour case, no tumour voxel) gets a tumour with
  probability `synthesis.difftumor.prob` (public: `random.random() > 0.5`);
- the type (early / medium / large) and the mask, drawn on the liver (label >= 1) of the part
  of the crop the generator sees (a `patch_size`^3 window around a liver point; the whole crop
  when both are the same size, as in the paper) and cut to that liver;
- a mask that misses every voxel the nearest interpolation to the latent grid reads (every
  `latent_factor`-th) is redrawn: the generator would paint nothing there, yet the label would
  say tumour (issue 22: 3 of 38 demo tumours at 2 mm; at Chen et al.'s 1 mm almost never);
- the fill: patches of the same diffusion model (early: DDPM; medium and large: the late model's
  DDIM) go through the generator together, one call per model and batch (the public code calls
  it per patch; the draws are independent per patch either way);
- the paste, in the crop's own units: w = mask blurred with sigma ~ U(blur.low, blur.high),
  scipy's default reflect boundary as in the public code; x <- (1 - w) x + w g with g the
  generated patch clipped to [0, 1] (the public code clips its generated sample the same way);
  voxels where w = 0 are left bit-for-bit unchanged (the public code also clips them); label 2
  on the mask.

Randomness: one `numpy.random.Generator` per call, passed in (the trainer seeds it from the
trial seed, rank and epoch); the generator's noise is seeded from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from tumorsweep.generative.sampler import Generator
from tumorsweep.generative.synthesis import _MIN_LIVER_VOXELS, draw_kind, draw_mask, patch_window
from tumorsweep.synthesis.config import SynthesisConfig
from tumorsweep.synthesis.location import uniform_centre

MASK_TRIES = 10  # mask draws per event before the patch is left without a tumour


def reaches_latent(mask: np.ndarray, factor: int) -> bool:
    """Whether a tumour mask (in generator-patch coordinates, the window starting at the patch
    origin) survives the nearest interpolation to the latent grid: latent voxel i reads mask
    voxel `factor * i`. A mask that misses every sampled voxel is absent from the denoiser's
    condition, so the generator paints no tumour there; labelling it would teach the network
    that normal liver is tumour."""
    return bool(mask[::factor, ::factor, ::factor].any())


@dataclass
class _Event:
    """One patch's planned synthesis: which sample, where in its crop, which model, the mask."""

    index: int
    window: tuple[slice, slice, slice]
    model: str  # "early" or "late"
    mask: np.ndarray  # bool, the window's shape


class BatchDiffTumor:
    """DiffTumor synthesis on a training batch (see the module docstring).

    Args:
        generator: a loaded generator, on the device the batch will be on.
        config: the trial's synthesis settings (`style: difftumor`).
        window: the HU window the crops were scaled to [0, 1] with (`data.window`).
    """

    on_batch = True  # the trainer calls it on each batch (not a loader transform)

    def __init__(
        self, generator: Generator, config: SynthesisConfig, window: tuple[float, float]
    ) -> None:
        self.generator = generator
        self.config = config
        self.window = (float(window[0]), float(window[1]))

    def __call__(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        healthy: torch.Tensor | None,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Synthesise into a batch: `image` (B, 1, X, Y, Z) float in window units, `label`
        (B, 1, X, Y, Z) 0/1/2, `healthy` (B,) bool (None: every patch may be synthesised).
        Returns the new image and label (new tensors, same device and dtype) and a (B,) bool
        tensor on the CPU: which patches received a synthetic tumour."""
        batch = image.shape[0]
        received = torch.zeros(batch, dtype=torch.bool)
        if not self.config.enabled:
            return image, label, received
        labels = label[:, 0].detach().cpu().numpy()
        allowed = np.ones(batch, bool) if healthy is None else healthy.cpu().numpy().astype(bool)
        events = []
        for index in range(batch):
            # the gate first, per patch, as the public loop draws it
            if rng.random() >= self.config.difftumor.prob or not allowed[index]:
                continue
            event = self._plan(index, labels[index], rng)
            if event is not None:
                events.append(event)
        if not events:
            return image, label, received
        image, label = image.clone(), label.clone()
        for model in ("early", "late"):
            group = [e for e in events if e.model == model]
            if group:
                self._fill(image, label, group, model, rng)
        for event in events:
            received[event.index] = True
        return image, label, received

    def _plan(self, index: int, labels: np.ndarray, rng: np.random.Generator) -> _Event | None:
        """Type, generator window and mask of one patch; None when the patch cannot take a
        tumour (a real tumour already in it, too little liver, or MASK_TRIES masks that all miss the
        latent grid: see `reaches_latent`)."""
        if labels.max() > 1:
            return None
        liver = labels >= 1
        if np.count_nonzero(liver) < _MIN_LIVER_VOXELS:
            return None
        kind = draw_kind(self.config, rng)
        size = self.generator.config.patch_size
        window = patch_window(uniform_centre(liver, rng), size, liver.shape)
        part = liver[window]
        if np.count_nonzero(part) < _MIN_LIVER_VOXELS:
            return None
        factor = self.generator.config.latent_factor
        for _ in range(MASK_TRIES):
            mask = draw_mask(part, kind, self.config, rng)
            if reaches_latent(mask, factor):
                return _Event(index, window, "early" if kind == "early" else "late", mask)
        return None

    def _fill(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        events: list[_Event],
        model: str,
        rng: np.random.Generator,
    ) -> None:
        """Generate the masked regions of `events` in one generator call and paste them."""
        gen, (low, high) = self.generator, self.window
        size = gen.config.patch_size
        patches = torch.full((len(events), 1, size, size, size), low, dtype=torch.float32)
        masks = torch.zeros_like(patches)
        for row, event in enumerate(events):
            inside = tuple(slice(0, w.stop - w.start) for w in event.window)
            crop = image[event.index, 0][event.window].detach().to("cpu", torch.float32)
            patches[(row, 0, *inside)] = crop * (high - low) + low  # window units -> HU
            masks[(row, 0, *inside)] = torch.from_numpy(event.mask.astype(np.float32))
        noise = torch.Generator(device=gen.device).manual_seed(int(rng.integers(2**62)))
        filled = gen.inpaint(
            patches,
            masks,
            model,
            ddim_steps=self.config.difftumor.ddim_steps,
            eta=self.config.difftumor.ddim_eta,
            generator=noise,
        )
        filled = ((filled - low) / (high - low)).clamp(0.0, 1.0)
        difftumor = self.config.difftumor
        for row, event in enumerate(events):
            inside = tuple(slice(0, w.stop - w.start) for w in event.window)
            sigma = float(rng.uniform(difftumor.blur.low, difftumor.blur.high))
            weight = event.mask.astype(np.float32)
            if sigma > 0:
                weight = gaussian_filter(weight, sigma, mode="reflect")
            touched = torch.from_numpy(weight > 0).to(image.device)
            w = torch.from_numpy(weight).to(image.device, image.dtype)
            region = image[event.index, 0][event.window]
            generated = filled[(row, 0, *inside)].to(image.device, image.dtype)
            blended = (1 - w) * region + w * generated
            region[touched] = blended[touched]
            label_region = label[event.index, 0][event.window]
            label_region[torch.from_numpy(event.mask).to(label.device)] = 2
