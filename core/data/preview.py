"""PNG slice montage of CT cases (axial, coronal, sagittal; CT window; label outlines).

Used by `tumorsweep phantom --preview` so a person can see at a glance that the data look like
an abdominal CT and that labels sit where they should.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

WINDOW_HU = (-160.0, 240.0)  # abdominal soft-tissue window
LABEL_COLOURS = {1: "lime", 2: "red"}


def _views(image: np.ndarray, label: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Radiological views of a RAS-ordered volume through the tumour (else liver) centre."""
    focus = np.argwhere(label == 2) if (label == 2).any() else np.argwhere(label >= 1)
    i, j, k = np.round(focus.mean(axis=0)).astype(int) if len(focus) else np.array(image.shape) // 2
    # Patient's right on the image's left, anterior / superior at the top.
    return [
        ("axial", image[::-1, ::-1, k].T, label[::-1, ::-1, k].T),
        ("coronal", image[::-1, j, ::-1].T, label[::-1, j, ::-1].T),
        ("sagittal", image[i, ::-1, ::-1].T, label[i, ::-1, ::-1].T),
    ]


def write_preview(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: str | Path,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """Write one row per (name, RAS image in HU, label) case: axial, coronal, sagittal views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sx, sy, sz = (float(s) for s in spacing)
    aspects = {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}
    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases)), squeeze=False)
    for row, (name, image, label) in zip(axes, cases, strict=True):
        for ax, (view, img, lab) in zip(row, _views(image, label), strict=True):
            ax.imshow(
                img,
                cmap="gray",
                vmin=WINDOW_HU[0],
                vmax=WINDOW_HU[1],
                aspect=aspects[view],
                interpolation="nearest",
            )
            for value, colour in LABEL_COLOURS.items():
                if (lab == value).any():
                    ax.contour(lab == value, levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_title(f"{name} {view}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
