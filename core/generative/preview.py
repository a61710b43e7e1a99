"""PNG previews of a trained generator, logged with its MLflow run: autoencoder
reconstructions of training crops, and tumours the diffusion models generate into them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from tumorsweep.generative.models import to_hu, to_unit
from tumorsweep.generative.patches import TumourCase, TumourCrops
from tumorsweep.generative.sampler import Generator

_SHOW = (-100.0, 200.0)  # HU shown (the liver and tumours in the middle of the range)


def _panel(axis, image: np.ndarray, title: str, outline: np.ndarray | None = None) -> None:
    axis.imshow(image.T, cmap="gray", vmin=_SHOW[0], vmax=_SHOW[1], origin="lower")
    if outline is not None and outline.any():
        axis.contour(outline.T.astype(float), levels=[0.5], colors="red", linewidths=0.8)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def _crops(cases: list[TumourCase], generator: Generator, kind: str, count: int):
    crops = TumourCrops(cases, generator.config, kind, count)
    images, masks = zip(*(crops[i] for i in range(count)), strict=True)
    hu = to_hu(torch.stack(images), generator.config.window)
    return hu, torch.stack(masks)


@torch.no_grad()
def save_previews(
    generator: Generator, cases: list[TumourCase], folder: Path, count: int = 3
) -> list[Path]:
    """`reconstruction.png` (real crop | autoencoder output) and `samples.png` (real crop |
    real tumour blanked | early and late model fill, mask outlined), axial middle slices."""
    window, device = generator.config.window, generator.device
    half = generator.config.patch_size // 2
    hu, masks = _crops(cases, generator, "all", count)
    unit = to_unit(hu.to(device), window)
    recon = to_hu(generator.autoencoder.decode(generator.autoencoder.encode(unit)[0]), window)
    figure = Figure(figsize=(4, 2 * count))
    axes = figure.subplots(count, 2, squeeze=False)
    for row in range(count):
        _panel(axes[row, 0], hu[row, 0, :, :, half].numpy(), "training crop")
        _panel(axes[row, 1], recon[row, 0, :, :, half].cpu().numpy(), "reconstruction")
    figure.tight_layout()
    paths = [folder / "reconstruction.png"]
    figure.savefig(paths[0], dpi=80)
    figure = Figure(figsize=(8, 2 * count))
    axes = figure.subplots(count, 4, squeeze=False)
    noise = torch.Generator(device=device).manual_seed(0)
    for row in range(count):
        image, mask = hu[row : row + 1], masks[row : row + 1]
        centre = int(np.argmax(mask[0, 0].sum(axis=(0, 1)).numpy()))
        outline = mask[0, 0, :, :, centre].numpy()
        blanked = image * (1 - mask) + mask * (window[0] + window[1]) / 2  # 0 in [-1, 1]
        _panel(axes[row, 0], image[0, 0, :, :, centre].numpy(), "real tumour", outline)
        _panel(axes[row, 1], blanked[0, 0, :, :, centre].numpy(), "blanked")
        for col, kind in ((2, "early"), (3, "late")):
            filled = generator.inpaint(image, mask, kind, generator=noise)
            _panel(axes[row, col], filled[0, 0, :, :, centre].cpu().numpy(), kind, outline)
    figure.tight_layout()
    paths.append(folder / "samples.png")
    figure.savefig(paths[1], dpi=80)
    return paths
