"""Radiological slice views of a CT with label outlines, shared by every PNG preview.

One convention everywhere (the radiological one): the patient's right on the image's left,
anterior and superior at the top. Volumes are read in RAS index order (what MONAI's
`Orientationd("RAS")` gives); pass the NIfTI affine of a volume in any other order and it is
reoriented first. Axes are in mm from the volume's corner, titles give the slice index and its
position in mm, and the default display window is the standard liver window (W150 L60), with
the training window as an option. Drawn on a Figure with its own Agg canvas: no pyplot, so the
caller's matplotlib backend is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LIVER_WINDOW = (60.0 - 75.0, 60.0 + 75.0)  # W150 L60: liver parenchyma and lesions
TRAINING_WINDOW = (-21.0, 189.0)  # Hu et al.'s training window
LABEL_COLOURS = {1: "lime", 2: "red"}


@dataclass(frozen=True)
class View:
    """One displayed slice: the image and label as shown (rows top to bottom), the mm extent
    for imshow, axis labels and a title with the slice position."""

    name: str
    image: np.ndarray
    label: np.ndarray
    extent: tuple[float, float, float, float]
    xlabel: str
    ylabel: str
    title: str


def to_ras(array: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """The array in RAS index order (unchanged when `affine` is None: already RAS)."""
    if affine is None:
        return np.asarray(array)
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    return apply_orientation(np.asarray(array), transform)


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the R, A and S axes of the array `to_ras` returns."""
    from nibabel.orientations import io_orientation

    zooms = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    spacing = [0.0, 0.0, 0.0]
    for axis, (ras_axis, _) in enumerate(io_orientation(affine)):
        spacing[int(ras_axis)] = float(zooms[axis])
    return (spacing[0], spacing[1], spacing[2])


def focus_index(label: np.ndarray) -> np.ndarray:
    """Centre of the tumours (label 2), else of the liver, else of the volume (voxels)."""
    for target in (label == 2, label >= 1):
        if target.any():
            return np.argwhere(target).mean(axis=0).round().astype(int)
    return np.array(label.shape) // 2


def radiological_views(
    image: np.ndarray,
    label: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    centre: Sequence[int] | None = None,
) -> list[View]:
    """Axial, coronal and sagittal views of RAS-ordered arrays through `centre` (default: the
    tumours' centre, else the liver's)."""
    i, j, k = focus_index(label) if centre is None else centre
    sx, sy, sz = (float(s) for s in spacing)
    nx, ny, nz = image.shape
    lr, ap, si = "mm, patient right → left", "mm, anterior → posterior", "mm, superior → inferior"
    return [
        View("axial", image[::-1, ::-1, k].T, label[::-1, ::-1, k].T,
             (0, nx * sx, ny * sy, 0), lr, ap, f"axial, slice {k} (z {k * sz:.0f} mm)"),
        View("coronal", image[::-1, j, ::-1].T, label[::-1, j, ::-1].T,
             (0, nx * sx, nz * sz, 0), lr, si, f"coronal, slice {j} (y {j * sy:.0f} mm)"),
        View("sagittal", image[i, ::-1, ::-1].T, label[i, ::-1, ::-1].T,
             (0, ny * sy, nz * sz, 0), "mm, anterior → posterior", si,
             f"sagittal, slice {i} (x {i * sx:.0f} mm)"),
    ]  # fmt: skip


def draw(
    axis,  # noqa: ANN001 (a matplotlib Axes)
    view: View,
    window: tuple[float, float] = LIVER_WINDOW,
    outline: dict[int, str] | None = None,
    title: str | None = None,
) -> None:
    """Draw `view` on `axis` in the HU `window`, with the labels in `outline` (value ->
    colour) drawn as thin contours."""
    axis.imshow(
        view.image, cmap="gray", vmin=window[0], vmax=window[1], extent=view.extent,
        interpolation="nearest",
    )  # fmt: skip
    for value, colour in (outline or {}).items():
        mask = view.label == value if value == 2 else view.label >= value
        if mask.any() and not mask.all():
            axis.contour(
                mask.astype(float), levels=[0.5], colors=colour, linewidths=0.7,
                extent=view.extent, origin="upper",
            )  # fmt: skip
    axis.set_title(title or view.title, fontsize=9)
    axis.set_xlabel(view.xlabel, fontsize=7)
    axis.set_ylabel(view.ylabel, fontsize=7)
    axis.tick_params(labelsize=6)
