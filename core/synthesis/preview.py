"""PNG preview of a synthesised case: axial, coronal and sagittal slices through the tumours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_WINDOW = (-21.0, 189.0)  # Hu et al.'s training window, in HU


def save_preview(image_hu: np.ndarray, label: np.ndarray, path: str | Path) -> Path:
    """Write three orthogonal slices through the tumours' centre (else the liver's) with the
    CT window and the tumour outline; returns the path."""
    target = label == 2 if np.any(label == 2) else label >= 1
    centre = (
        np.argwhere(target).mean(axis=0).round().astype(int)
        if target.any()
        else np.array(image_hu.shape) // 2
    )
    views = [
        ("axial", image_hu[:, :, centre[2]], label[:, :, centre[2]]),
        ("coronal", image_hu[:, centre[1], :], label[:, centre[1], :]),
        ("sagittal", image_hu[centre[0], :, :], label[centre[0], :, :]),
    ]
    # A Figure with its own Agg canvas: no pyplot, so the caller's backend is left alone.
    fig = Figure(figsize=(12, 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (name, img, lab) in zip(axes, views, strict=True):
        ax.imshow(img.T, cmap="gray", vmin=_WINDOW[0], vmax=_WINDOW[1], origin="lower")
        if np.any(lab == 2):
            ax.contour((lab == 2).T.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{name} {tuple(int(c) for c in centre)}")
        ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=80, format="png")
    return out
