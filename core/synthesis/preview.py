"""PNG preview of a synthesised case: axial, coronal and sagittal slices through the tumours,
before and after synthesis and with the tumour outlined (radiological convention, liver
window, axes in mm; `tumorsweep.preview`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tumorsweep.preview import (
    LIVER_WINDOW,
    draw,
    focus_index,
    radiological_views,
    ras_spacing,
    to_ras,
)


def save_preview(
    image_hu: np.ndarray,
    label: np.ndarray,
    path: str | Path,
    *,
    before: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    affine: np.ndarray | None = None,
    window: tuple[float, float] = LIVER_WINDOW,
) -> Path:
    """Write a preview of a synthesised CT; returns the path.

    Rows: axial, coronal, sagittal slices through the tumours' centre (else the liver's).
    Columns: the CT before synthesis (when `before` is given), after it, and after it with
    the tumour (red) and liver (green) outlines, so the lesion edge stays visible.

    Args:
        image_hu: the CT after synthesis, in HU.
        label: its labels (0/1/2).
        path: the PNG to write.
        before: the CT before synthesis (same grid), for the before / after comparison.
        spacing: voxel size in mm of the arrays as passed (RAS order when `affine` is None).
        affine: the NIfTI affine of arrays in another orientation; they are shown as RAS.
        window: HU range shown (default W150 L60; `tumorsweep.preview.TRAINING_WINDOW` is
            Hu et al.'s training window).
    """
    if affine is not None:
        spacing = ras_spacing(affine)
        image_hu, label = to_ras(image_hu, affine), to_ras(label, affine)
        before = None if before is None else to_ras(before, affine)
    label = np.asarray(label)
    centre = focus_index(label)
    columns = [("before", before, None)] if before is not None else []
    columns += [("after", image_hu, None), ("after, outlined", image_hu, {1: "lime", 2: "red"})]
    fig = Figure(figsize=(3.6 * len(columns), 10.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, len(columns), squeeze=False)
    for col, (name, volume, outline) in enumerate(columns):
        views = radiological_views(np.asarray(volume), label, spacing, centre)
        for row, view in enumerate(views):
            draw(axes[row, col], view, window, outline, f"{name}: {view.title}")
    fig.suptitle(f"window [{window[0]:.0f}, {window[1]:.0f}] HU", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100, format="png")
    return out
