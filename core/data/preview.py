"""PNG slice montage of CT cases (axial, coronal, sagittal; liver window; label outlines).

Used by `tumorsweep phantom --preview` so a person can see at a glance that the data look like
an abdominal CT and that labels sit where they should.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tumorsweep.preview import LABEL_COLOURS, LIVER_WINDOW, draw, radiological_views


def write_preview(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: str | Path,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    window: tuple[float, float] = LIVER_WINDOW,
) -> Path:
    """Write one row per (name, RAS image in HU, label) case: axial, coronal, sagittal views
    through the tumours (else the liver), radiological convention, axes in mm."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8 * len(cases)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cases), 3, squeeze=False)
    for row, (name, image, label) in zip(axes, cases, strict=True):
        for ax, view in zip(row, radiological_views(image, label, spacing), strict=True):
            draw(ax, view, window, LABEL_COLOURS, f"{name}: {view.title}")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    return out
