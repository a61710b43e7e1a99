"""Post-processing of a predicted 0/1/2 label map as in Hu et al.'s evaluation (PROTOCOL 5).

Liver = the largest 3-D connected component (26-connectivity) of label >= 1; tumour = tumour
prediction inside that liver dilated `dilation_iters` times with the 6-neighbour cross. Both
steps work on bounding boxes: the components on the liver prediction's box, the gate on the
kept liver's box grown by the dilation reach. Iterating the cross k times reaches exactly the
voxels within city-block (L1) distance k, so the gate is one taxicab distance transform instead
of k dilations (identical result, far faster).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from core.errors import TumorsweepError

_FULL_CONNECTIVITY = np.ones((3, 3, 3), bool)


def postprocess(labels: np.ndarray, dilation_iters: int = 30) -> np.ndarray:
    """Keep the largest liver component and only tumours near it; returns a new uint8 map."""
    if not isinstance(labels, np.ndarray) or labels.ndim != 3:
        raise TumorsweepError(f"postprocess: expected a 3-D label volume, got {labels!r:.80}")
    if dilation_iters < 0:
        raise TumorsweepError(f"postprocess: dilation_iters must be >= 0, got {dilation_iters}")
    result = np.zeros(labels.shape, np.uint8)
    liver_box = _box(labels >= 1, grow=0)
    if liver_box is None:
        return result
    components, count = ndimage.label(labels[liver_box] >= 1, structure=_FULL_CONNECTIVITY)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    liver = np.zeros(labels.shape, bool)
    liver[liver_box] = components == int(np.argmax(sizes))
    result[liver] = 1
    gate_box = _box(liver, grow=dilation_iters)
    tumour = labels[gate_box] == 2
    if tumour.any():
        reach = ndimage.distance_transform_cdt(~liver[gate_box], metric="taxicab")
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
