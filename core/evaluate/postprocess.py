"""Post-processing of a predicted 0/1/2 label map: keep the liver, drop tumours far from it.

Liver = the largest 3-D connected component of the liver prediction; which labels form that
prediction (`liver`: "ge1" = liver and tumour together, "eq1" = label 1 only, Hu et al.'s liver
channel) and the connectivity (26 or 6, scipy's default) are protocol choices
(`tumorsweep.evaluate.protocol`). Tumour = tumour prediction within `dilation_iters` dilations of
the kept liver by the 6-neighbour cross (Hu et al.'s validation.py). Both steps work on bounding
boxes: the components on the liver prediction's box, the gate on the kept liver's box grown by
the dilation reach. Iterating the cross k times reaches exactly the voxels within city-block
(L1) distance k, so the gate is one taxicab distance transform instead of k dilations
(identical result).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from tumorsweep.data.io import as_labels
from tumorsweep.errors import TumorsweepError

CONNECTIVITY = {6: ndimage.generate_binary_structure(3, 1), 26: np.ones((3, 3, 3), bool)}
LIVER_LABELS = ("ge1", "eq1")


def postprocess(
    labels: np.ndarray,
    dilation_iters: int = 30,
    *,
    liver: Literal["ge1", "eq1"] = "ge1",
    connectivity: Literal[6, 26] = 26,
) -> np.ndarray:
    """Keep the largest liver component and only tumours near it; returns a new uint8 map.

    `labels` must hold only 0, 1 and 2 (anything else is an error, not silently mapped).
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 3:
        raise TumorsweepError(f"postprocess: expected a 3-D label volume, got {labels!r:.80}")
    if dilation_iters < 0:
        raise TumorsweepError(f"postprocess: dilation_iters must be >= 0, got {dilation_iters}")
    if liver not in LIVER_LABELS:
        raise TumorsweepError(f"postprocess: liver must be one of {LIVER_LABELS}, got {liver!r}")
    if connectivity not in CONNECTIVITY:
        raise TumorsweepError(f"postprocess: connectivity must be 6 or 26, got {connectivity!r}")
    labels = as_labels("postprocess labels", labels)
    result = np.zeros(labels.shape, np.uint8)
    liver_box = _box(labels >= 1 if liver == "ge1" else labels == 1, grow=0)
    if liver_box is None:
        return result
    crop = labels[liver_box]
    candidates = crop >= 1 if liver == "ge1" else crop == 1
    components, count = ndimage.label(candidates, structure=CONNECTIVITY[connectivity])
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    kept = np.zeros(labels.shape, bool)
    kept[liver_box] = components == int(np.argmax(sizes))
    result[kept] = 1
    gate_box = _box(kept, grow=dilation_iters)
    tumour = labels[gate_box] == 2
    if tumour.any():
        reach = ndimage.distance_transform_cdt(~kept[gate_box], metric="taxicab")
        result[gate_box][tumour & (reach <= dilation_iters)] = 2
    return result


def _box(mask: np.ndarray, grow: int) -> tuple[slice, ...] | None:
    """Bounding box of a mask grown by `grow` voxels per side (clipped), or None if empty."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(max(present[0] - grow, 0), min(present[-1] + 1 + grow, mask.shape[axis])))
    return tuple(box)
