"""One synthesis event on a CT in HU: draw blobs, place them, union with the liver, texture
and blend (Hu et al. 2023, or the Zhang et al. variant). Pure: new arrays out, rng in.

All work happens inside the liver's bounding box (shrunk as Hu slices it: one voxel at the low
end of each axis, two at the high end) and, for texture and blending, only on the blobs' own
boxes widened by the edge-blur support. `synthesize_tumors` copies the two volumes once
(keeping their memory layout); `synthesize_tumors_inplace` copies nothing; `plan_tumors`
writes nothing: it returns the event as a `VolumeEdit` (new values on the regions it touches;
a Hu blend computed as it is written, on the target's part of each region only), which the
training chain pastes into patches of a cache it must not write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy.ndimage import gaussian_filter

from tumorsweep.data.edits import LazyStroke, Stroke, VolumeEdit
from tumorsweep.errors import TumorsweepError
from tumorsweep.synthesis import kernels
from tumorsweep.synthesis.config import BLOB_TYPES, TUMOR_TYPES, SynthesisConfig
from tumorsweep.synthesis.location import LocationModel, uniform_centre
from tumorsweep.synthesis.shapes import Blob, deformed_ellipsoid, rotated_noisy_ellipsoid
from tumorsweep.synthesis.texture import (
    HuTexture,
    TextureNodes,
    contract,
    draw_hu_texture,
    gaussian_kernel,
)

Box = tuple[tuple[int, ...], tuple[int, ...]]
_MIN_LIVER_VOXELS = 100
# Two regions merge when their union costs at most this many voxels more than the pair: about
# the per-region fixed cost (matrices, calls) of small regions.
_MERGE_SLACK = 40_000
# Edge blur support in sigmas (Hu: scipy's default 4; the normalised kernel's mass beyond 3
# sigma is 0.3% per axis, so the drop differs by < 0.5 HU, and regions are smaller).
_BLUR_TRUNCATE = 3.0
_LABEL_SCAN = "tumorsweep.synthesis.label_scan"  # `plan_tumors`'s key in a caller's memo


def _check_inputs(image: np.ndarray, label: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.floating):
        raise TumorsweepError(
            f"image dtype {getattr(image, 'dtype', type(image))}: expected a float array in HU"
        )
    if not isinstance(label, np.ndarray) or not (
        np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.floating)
    ):
        raise TumorsweepError(
            f"label dtype {getattr(label, 'dtype', type(label))}: expected integer or float "
            "labels 0/1/2 (tumours are written as 2)"
        )
    if image.ndim != 3 or image.shape != label.shape:
        raise TumorsweepError(
            f"image shape {image.shape} and label shape {label.shape} must be the same 3-D shape"
        )


@dataclass(frozen=True)
class LabelScan:
    """What one read of a label gives: the liver box (Hu: the bounding box of label > 0 shrunk
    as the original slices it, [first + 1, last - 1) per axis), whether any voxel is tumour
    (2), the first and last axial slice of the box with liver, and a lower bound on the
    box's liver voxels."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    has_tumour: bool
    z_range: tuple[int, int]
    liver_lower_bound: int


def _unsigned(array: np.ndarray) -> np.ndarray:
    """The array's bits as unsigned integers of its width: for non-negative floats and ints the
    order is the numeric one, while negative values, -0.0 and NaN become larger than 2."""
    return array.view(f"u{array.dtype.itemsize}") if array.dtype != bool else array.view(np.uint8)


def _first_nonempty(rows: np.ndarray, reverse: bool) -> int | None:
    """Index of the first (or last) non-zero row (sub-array along axis 0) of an array, reading
    8 rows at a time from that end; None if every row is zero."""
    n = rows.shape[0]
    for start in range(n - 8, -8, -8) if reverse else range(0, n, 8):
        a, b = max(start, 0), min(start + 8, n)
        hit = np.flatnonzero(rows[a:b].any(axis=tuple(range(1, rows.ndim))))
        if hit.size:
            return a + int(hit[-1] if reverse else hit[0])
    return None


def _bad_values(label: np.ndarray) -> str | None:
    """Why a label is not made of 0, 1 and 2 (NaN, negative or larger values), or None."""
    if label.dtype.kind == "f" and np.isnan(label).any():
        return "label has NaN voxels"
    if label.dtype.kind in "if" and float(label.min()) < 0:
        return f"label has negative values (min {float(label.min())})"
    if float(label.max()) > 2:
        return f"label values must be 0, 1 or 2 (found {float(label.max())})"
    return None


def _span(nonzero: np.ndarray) -> tuple[int, int] | None:
    seen = np.flatnonzero(nonzero)
    return (int(seen[0]), int(seen[-1]) + 1) if seen.size else None


def _slab_view(label: np.ndarray) -> tuple[np.ndarray, list[int], list[bool]]:
    """The label as a view with its slowest axis first and rows (its last axis) contiguous:
    no copy for C, Fortran or flipped layouts nor for a box cut out of one (the training
    cache's liver box); a copy otherwise. Also the caller's axis of each view axis, and which
    of the caller's axes the view flips."""
    flips = [s < 0 for s in label.strides]
    view = label[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    order = [int(a) for a in np.argsort([-s for s in view.strides], kind="stable")]
    view = view.transpose(order)
    if not (view.flags.c_contiguous or _nested_rows(view)):
        view, order, flips = np.ascontiguousarray(label), [0, 1, 2], [False] * 3
    return view, order, flips


def _nested_rows(view: np.ndarray) -> bool:
    """Whether a 3-D view is a box of a C-ordered array: contiguous rows, each axis's step
    spanning the whole extent of the next."""
    s0, s1, s2 = view.strides
    return s2 == view.itemsize and s1 >= view.shape[2] * s2 and s0 >= view.shape[1] * s1


def _to_caller(start: int, stop: int, axis: int, flips: list[bool], shape) -> tuple[int, int]:
    """A view span [start, stop) on one axis in the caller's coordinates (and back)."""
    return (shape[axis] - stop, shape[axis] - start) if flips[axis] else (start, stop)


def _z_levels(
    box: tuple, order: list[int], flips: list[bool], box_top: np.ndarray, inside: np.ndarray
) -> tuple[int, int]:
    """First and last axial level of the liver box with liver: from the box's projection when
    z is a projection axis, else (Fortran order: z is the slab axis) reading its z-slabs from
    each end."""
    lo, hi, window = box
    if 2 in order[1:]:
        k = order.index(2) - 1
        levels = _span(box_top.any(axis=1 - k)) or (0, 0)
        z0, z1 = levels[0], levels[1] - 1
    else:
        z_slabs = inside[(slice(None), *window)]
        z0, z1 = _first_nonempty(z_slabs, False) or 0, _first_nonempty(z_slabs, True) or 0
    if flips[2]:
        n = hi[2] - lo[2]
        z0, z1 = n - 1 - z1, n - 1 - z0
    return z0, z1


def scan_label(label: np.ndarray) -> LabelScan:
    """Check the label's values (no NaN, none negative, none above 2) and find the liver box
    reading it about once: the empty end slabs along its slowest axis, then one max
    projection of the slabs between. Works on C, Fortran and flipped layouts alike."""
    view, order, flips = _slab_view(label)
    bits = _unsigned(view)
    rows = bits  # a box of a larger array: its slabs are read in place
    if bits.flags.c_contiguous:
        rows = bits.reshape(bits.shape[0], -1)
        if rows.shape[1] * rows.itemsize % 8 == 0:
            rows = rows.view(np.uint64)  # OR-ing words keeps each element's non-zero-ness
    first = _first_nonempty(rows, reverse=False)
    if first is None:
        raise TumorsweepError("label has no liver (no voxel > 0): cannot place tumours")
    last = _first_nonempty(rows[first:], reverse=True) + first
    # The box's slabs along the view's axis 0: [first + 1, last - 1) in the caller's order.
    box0 = (first + 2, last) if flips[order[0]] else (first + 1, last - 1)
    # bit patterns of 1 and 2 (a boolean label holds no 2: its bytes are 0 or 1)
    one = _unsigned(np.array(1, dtype=label.dtype))[()]
    two = np.uint8(2) if label.dtype == bool else _unsigned(np.array(2, dtype=label.dtype))[()]
    inside = bits[box0[0] : max(box0)]
    outside = bits[[i for i in range(first, last + 1) if not box0[0] <= i < box0[1]]]
    in_box = np.maximum.reduce(inside, axis=0) if len(inside) else None
    projection = np.maximum.reduce(outside, axis=0)
    if in_box is not None:
        np.maximum(projection, in_box, out=projection)
    if projection.max() > two:
        problem = _bad_values(label)
        if problem:
            raise TumorsweepError(problem)
        return scan_label(label + 0)  # valid values, other bit patterns (-0.0 + 0 is 0.0)
    spans = [(first, last + 1), _span(projection.any(axis=1)), _span(projection.any(axis=0))]
    lo, hi = [0, 0, 0], [0, 0, 0]
    for (start, stop), axis in zip(spans, order, strict=True):
        start, stop = _to_caller(start, stop, axis, flips, label.shape)
        lo[axis], hi[axis] = start + 1, stop - 2
    # view coordinates of the box on the projection's two axes
    window = []
    for k in (1, 2):
        a, b = _to_caller(lo[order[k]], hi[order[k]], order[k], flips, label.shape)
        window.append(slice(a, max(a, b)))
    box_top = in_box[tuple(window)] >= one if in_box is not None else np.zeros((0, 0), bool)
    z_range = _z_levels((lo, hi, window), order, flips, box_top, inside)
    has_tumour = bool(projection.max() == two)
    return LabelScan(tuple(lo), tuple(hi), has_tumour, z_range, int(np.count_nonzero(box_top)))


def _sigma(kind: str, bounds: tuple[float, float], rng: np.random.Generator) -> float:
    """Hu: the elastic sigma of a tiny blob is continuous, of the others an integer."""
    if kind == "tiny":
        return float(rng.uniform(*bounds))
    return float(rng.integers(int(bounds[0]), int(bounds[1]) + 1))


def _draw_blobs(
    config: SynthesisConfig, rng: np.random.Generator, place: Callable[[str], tuple[int, int, int]]
) -> list[Blob]:
    """Tumour type for this event, then per blob: semi-axes, sphere or not, deformation, centre
    (`place(kind)`: a centre for a blob of that type). `synthesis.sphere_mode` reads
    sphere_ratio N: replace = each blob a sphere with probability N; add = after the n blobs
    of a type, Binomial(n, N) extra spheres of that type (see SPHERE_MODES)."""
    probs = np.array([getattr(config.type_probs, t) for t in TUMOR_TYPES], dtype=np.float64)
    tumor_type = TUMOR_TYPES[int(rng.choice(len(TUMOR_TYPES), p=probs / probs.sum()))]
    table = config.mix_counts if tumor_type == "mix" else config.counts
    kinds = BLOB_TYPES if tumor_type == "mix" else (tumor_type,)
    replace = config.sphere_mode == "replace"
    blobs = []
    for kind in kinds:
        lo_count, hi_count = table[kind]
        r0 = config.radius[kind]
        lo_axis, hi_axis = max(1, int(0.75 * r0)), max(1, int(1.25 * r0))
        sigma_range = config.elastic_sigma[kind]
        count = int(rng.integers(lo_count, hi_count + 1))
        for _ in range(count):
            axes = tuple(int(a) for a in rng.integers(lo_axis, hi_axis + 1, size=3))
            if replace and rng.uniform() < config.sphere_ratio:
                axes = (axes[int(rng.integers(3))],) * 3
            drawn = _sigma(kind, sigma_range, rng)  # (before the centre: Hu's order of draws)
            blobs.append(Blob(centre=place(kind), semi_axes=axes, elastic_sigma=drawn))
        if not replace and config.sphere_ratio > 0:
            for _ in range(int(rng.binomial(count, config.sphere_ratio))):
                radius = int(rng.integers(lo_axis, hi_axis + 1))
                drawn = _sigma(kind, sigma_range, rng)
                blobs.append(Blob(centre=place(kind), semi_axes=(radius,) * 3, elastic_sigma=drawn))
    return blobs


def _tight_box(mask: np.ndarray, origin: tuple[int, ...]) -> Box:
    """Bounding box of a non-empty blob mask, in the coordinates `origin` refers to."""
    yz = mask.any(axis=0)
    spans = [
        np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)),
        np.flatnonzero(yz.any(axis=1)),
        np.flatnonzero(yz.any(axis=0)),
    ]
    lo = tuple(o + int(s[0]) for o, s in zip(origin, spans, strict=True))
    hi = tuple(o + int(s[-1]) + 1 for o, s in zip(origin, spans, strict=True))
    return lo, hi


def _volume(box: Box) -> int:
    (a0, a1, a2), (b0, b1, b2) = box
    return (b0 - a0) * (b1 - a1) * (b2 - a2)


def _regions(boxes: list[Box], margin: int, shape: tuple[int, ...]) -> list[Box]:
    """Blob boxes widened by `margin`; two are merged while their union costs no more work than
    the pair (overlapping boxes of one lesion, nested small blobs)."""
    grown = [
        (
            tuple(max(0, a - margin) for a in lo),
            tuple(min(n, b + margin) for b, n in zip(hi, shape, strict=True)),
        )
        for lo, hi in boxes
    ]
    volumes = [_volume(g) for g in grown]
    merged = True
    while merged:
        merged = False
        for i in range(len(grown)):
            j = i + 1
            while j < len(grown):
                union = (
                    tuple(map(min, grown[i][0], grown[j][0])),
                    tuple(map(max, grown[i][1], grown[j][1])),
                )
                volume = _volume(union)
                if volume <= volumes[i] + volumes[j] + _MERGE_SLACK:
                    grown[i], volumes[i] = union, volume
                    del grown[j], volumes[j]
                    merged = True
                else:
                    j += 1
            if i + 1 >= len(grown):
                break
    return grown


def _blur_matrix(out: tuple[int, int], src: tuple[int, int], n: int, sigma: float) -> np.ndarray:
    """One axis of the edge blur from voxels [src) to voxels [out) of a box of n voxels, with
    scipy's reflecting border at the box's faces (as the original blurs its liver box)."""
    # the edge blur's sigma is drawn per event: its matrices are not worth keeping
    kernel = gaussian_kernel(float(sigma), _BLUR_TRUNCATE)
    return kernels.reflected_band(out[0], out[1], src[0], src[1], n, kernel)


def _blurred(
    mask: np.ndarray,
    region: Box,
    sigma: float,
    radius: int,
    boxes: list[Box],
    scale: float = 1.0,
) -> np.ndarray:
    """Gaussian blur of `mask` (the liver box's tumour mask, reflected at the box's faces) on
    `region`, times `scale`, as three small matrix products (float32; the scale rides on one
    axis's matrix, not a pass over the region). It reads the mask within `radius` of the
    region, and there only the bounding box of the blob `boxes` it meets (zero beyond)."""
    lo, hi = region
    ext_lo = [max(0, a - radius) for a in lo]
    ext_hi = [min(n, b + radius) for b, n in zip(hi, mask.shape, strict=True)]
    # the blobs whose tight box meets the window (reflected taps land inside it too)
    meets = [
        b for b in boxes if all(b0 < e1 and b1 > e0 for b0, b1, e0, e1 in
                                zip(b[0], b[1], ext_lo, ext_hi, strict=True))
    ]  # fmt: skip
    if meets:
        for axis in range(3):
            ext_lo[axis] = max(ext_lo[axis], min(b[0][axis] for b in meets))
            ext_hi[axis] = min(ext_hi[axis], max(b[1][axis] for b in meets))
    if not meets or any(a >= b for a, b in zip(ext_lo, ext_hi, strict=True)):
        return np.zeros(tuple(b - a for a, b in zip(lo, hi, strict=True)), dtype=np.float32)
    ext = mask[tuple(slice(a, b) for a, b in zip(ext_lo, ext_hi, strict=True))]
    matrices = [
        _blur_matrix((a, b), (c, d), n, sigma)
        for a, b, c, d, n in zip(lo, hi, ext_lo, ext_hi, mask.shape, strict=True)
    ]
    if scale != 1.0:
        matrices[0] *= np.float32(scale)
    return contract(ext.astype(np.float32), matrices)


def synthesize_tumors(
    image_hu: np.ndarray,
    label: np.ndarray,
    config: SynthesisConfig,
    rng: np.random.Generator,
    location_model: LocationModel | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add one event of synthetic tumours to a 1 mm CT in HU; returns (new image, new label).

    The label keeps its dtype: liver voxels covered by a tumour become 2. The image changes
    only inside the liver. Blobs reaching beyond the liver are clipped by it.
    """
    _check_inputs(image_hu, label)
    new_image, new_label = image_hu.copy(order="K"), label.copy(order="K")
    synthesize_tumors_inplace(new_image, new_label, config, rng, location_model)
    return new_image, new_label


def synthesize_tumors_inplace(
    image_hu: np.ndarray,
    label: np.ndarray,
    config: SynthesisConfig,
    rng: np.random.Generator,
    location_model: LocationModel | None = None,
    healthy_only: bool = False,
) -> int:
    """`synthesize_tumors` writing into the given arrays (no volume copies, for callers that
    own them, e.g. a data-loader sample); returns the number of tumour voxels added.

    `healthy_only`: leave a label that already has tumour voxels (2) unchanged and return 0
    (Hu's rule for training samples), found in the same read of the label as its liver box.
    `style=ca` runs Pixel2Cancer's cellular automaton (`tumorsweep.synthesis.cellular`).
    """
    edit = plan_tumors(image_hu, label, config, rng, location_model, healthy_only)
    edit.apply(image_hu, label)
    return edit.added


def plan_tumors(
    image_hu: np.ndarray,
    label: np.ndarray,
    config: SynthesisConfig,
    rng: np.random.Generator,
    location_model: LocationModel | None = None,
    healthy_only: bool = False,
    memo: dict | None = None,
) -> VolumeEdit:
    """One event as a `VolumeEdit` of (image_hu, label), which are only read: the same draws
    and the same voxels as `synthesize_tumors_inplace`, which applies it. A Hu event's image
    values are computed as the edit is written (on the target's part of each region), from
    these arrays: they must not change until then (a cache never does). An empty edit when
    `healthy_only` finds a tumour or no blob lands in the liver. `memo`: a dict that belongs
    to this very label and outlives the call (a cached case's, whose label never changes):
    the label's scan is kept there and read back instead of scanning the label again."""
    _check_inputs(image_hu, label)
    if config.location == "gmm" and location_model is None:
        raise TumorsweepError("synthesis.location is 'gmm' but no location model was given")
    scan = None if memo is None else memo.get(_LABEL_SCAN)
    if scan is None:
        scan = scan_label(label)
        if memo is not None:
            memo[_LABEL_SCAN] = scan
    if healthy_only and scan.has_tumour:
        return VolumeEdit()
    if any(b - a < 3 for a, b in zip(scan.lo, scan.hi, strict=True)):
        raise TumorsweepError(
            f"liver bounding box {np.subtract(scan.hi, scan.lo) + 3} is too small for tumours"
        )
    if config.style == "ca":
        return _plan_ca(image_hu, label, scan, config, rng)
    box = tuple(slice(a, b) for a, b in zip(scan.lo, scan.hi, strict=True))
    label_box = label[box]
    if scan.liver_lower_bound < _MIN_LIVER_VOXELS:
        liver_voxels = np.count_nonzero(label_box >= 1)
        if liver_voxels < _MIN_LIVER_VOXELS:
            raise TumorsweepError(
                f"liver has {liver_voxels} voxels inside its box; need >= {_MIN_LIVER_VOXELS}"
            )
    # Values are checked to be 0, 1 or 2, so the label box itself reads as the liver mask
    # (non-zero = liver); a boolean copy of the box is made only where a caller needs one.
    liver = label_box >= 1 if config.location == "gmm" or config.style == "zhang" else None
    blobs = _draw_blobs(config, rng, _placer(label_box, liver, scan, config, rng, location_model))
    tumour, boxes, painted, added = _paint_blobs(blobs, label_box, config, rng, scan.has_tumour)
    if not boxes:
        return VolumeEdit()
    if config.style == "zhang":
        strokes = _blend_zhang(image_hu[box], liver, tumour, boxes, config, rng)
    else:
        strokes = _blend_hu(image_hu[box], label_box, tumour, boxes, config, rng)
    return VolumeEdit(strokes, painted, added).shifted(scan.lo)


def _placer(
    label_box: np.ndarray,
    liver: np.ndarray | None,
    scan: LabelScan,
    config: SynthesisConfig,
    rng: np.random.Generator,
    location_model: LocationModel | None,
) -> Callable[[str], tuple[int, int, int]]:
    """`place(kind)`: a blob centre in the liver box, from the GMM location model or Hu's
    uniform rule (candidate pixels cached per slice across the event's blobs)."""
    slice_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def place(kind: str) -> tuple[int, int, int]:
        if config.location == "gmm":
            return location_model.sample_centre(
                liver, rng, config.gmm_max_tries, scan.z_range, kind
            )
        return uniform_centre(label_box if liver is None else liver, rng, scan.z_range, slice_cache)

    return place


def _blob_mask(
    blob: Blob, shape: tuple[int, ...], config: SynthesisConfig, rng: np.random.Generator
) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray]:
    """One blob's mask on its own box of the liver box: Zhang's noisy rotated ellipsoid or
    Hu's deformed one."""
    if config.style == "zhang":
        z = config.zhang
        return rotated_noisy_ellipsoid(
            blob.centre, blob.semi_axes, z.surface_noise, shape, rng, z.surface_frequency
        )
    return deformed_ellipsoid(blob, shape, rng)


def _paint_blobs(
    blobs: list[Blob],
    label_box: np.ndarray,
    config: SynthesisConfig,
    rng: np.random.Generator,
    has_tumour: bool = True,
) -> tuple[np.ndarray, list[Box], list[Stroke], int]:
    """Each blob's mask, clipped by the liver: the event's tumour mask, the blobs' tight
    boxes, one label stroke per blob (2 where it lies) and the count of voxels newly marked
    tumour (`has_tumour`: whether the label holds any 2 to leave out of that count). Each
    blob works on its own box: the union's box can span most of the liver."""
    tumour = np.zeros(label_box.shape, dtype=bool)
    boxes: list[Box] = []
    strokes: list[Stroke] = []
    added = 0
    for blob in blobs:
        b_lo, b_hi, mask = _blob_mask(blob, label_box.shape, config, rng)
        if not mask.any():
            continue
        sl = tuple(slice(a, b) for a, b in zip(b_lo, b_hi, strict=True))
        labels = label_box[sl]
        np.logical_and(mask, labels, out=mask)  # labels are checked 0/1/2: non-zero = liver
        if mask.any():
            fresh = mask & ~tumour[sl]
            if has_tumour:
                fresh &= labels != 2
            added += int(np.count_nonzero(fresh))
            tumour[sl] |= mask
            strokes.append(Stroke(tuple(b_lo), mask.shape, 2, mask))
            boxes.append(_tight_box(mask, b_lo))
    return tumour, boxes, strokes, added


def _plan_ca(
    image_hu: np.ndarray,
    label: np.ndarray,
    scan: LabelScan,
    config: SynthesisConfig,
    rng: np.random.Generator,
) -> VolumeEdit:
    """Pixel2Cancer's cellular automaton on the organ's full bounding box (the public code
    crops to [min, max] of label >= 1, not Hu's shrunk box), seeded from `rng`; run on copies
    of the box, the edit replaces the tumour's window."""
    from tumorsweep.synthesis.cellular import synthesize_ca  # torch only for this style

    box = tuple(slice(a - 1, b + 2) for a, b in zip(scan.lo, scan.hi, strict=True))
    seed = int(rng.integers(0, 2**62))
    image_box, label_box = image_hu[box].copy(), label[box].copy()
    added, tumour = synthesize_ca(image_box, label_box, config.ca, config.texture, seed)
    if tumour is None:
        return VolumeEdit()
    lo = tuple(s.start for s in tumour.window)
    shape = image_box[tumour.window].shape
    edit = VolumeEdit(
        [Stroke(lo, shape, image_box[tumour.window])],
        [Stroke(lo, shape, label_box[tumour.window])],
        added,
    )
    return edit.shifted(tuple(s.start for s in box))


def _blend_hu(
    image: np.ndarray,
    liver: np.ndarray,
    tumour: np.ndarray,
    boxes: list[Box],
    config: SynthesisConfig,
    rng: np.random.Generator,
) -> list[LazyStroke]:
    """Hu: inside the liver (`liver`: a mask or the validated label box, >= 1 inside),
    I - T * blur(G) * delta, region by region: one image stroke per region, writing each voxel
    once (where an earlier region overlaps, it is left to that one). The draws happen here;
    the values are computed when a stroke is written, on the part of its region written."""
    tex = config.texture
    edge_sigma = rng.uniform(tex.edge_blur.low, tex.edge_blur.high)
    drop = rng.uniform(tex.hu_drop.low, tex.hu_drop.high)
    radius = int(_BLUR_TRUNCATE * edge_sigma + 0.5)
    regions = _regions(boxes, radius, liver.shape)
    union_lo = tuple(min(r[0][i] for r in regions) for i in range(3))
    union_hi = tuple(max(r[1][i] for r in regions) for i in range(3))
    texture = draw_hu_texture(rng, union_lo, union_hi, tex)
    blend = _HuBlend(image, liver, tumour, boxes, regions, edge_sigma, radius, drop, texture)
    return [
        LazyStroke(lo, tuple(b - a for a, b in zip(lo, hi, strict=True)), partial(blend, k))
        for k, (lo, hi) in enumerate(regions)
    ]


@dataclass
class _HuBlend:
    """One Hu event's blend, evaluated on demand: `blend(k, a, b)` gives region k's new image
    values on its voxels [a, b) (relative to the region) and where they are written. The
    texture on a region's coarse nodes is made once, for the whole region (its mean enters
    every voxel), so any sub-box gets the values the whole region would."""

    image: np.ndarray
    liver: np.ndarray
    tumour: np.ndarray
    boxes: list[Box]
    regions: list[Box]
    edge_sigma: float
    radius: int
    drop: float
    texture: HuTexture
    nodes: dict[int, TextureNodes] = field(default_factory=dict)

    def __call__(
        self, k: int, a: tuple[int, ...], b: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        region = self.regions[k]
        if k not in self.nodes:
            self.nodes[k] = self.texture.nodes(*region)
        lo = tuple(o + x for o, x in zip(region[0], a, strict=True))
        hi = tuple(o + x for o, x in zip(region[0], b, strict=True))
        sl = tuple(slice(x, y) for x, y in zip(lo, hi, strict=True))
        weight = _blurred(self.tumour, (lo, hi), self.edge_sigma, self.radius, self.boxes,
                          scale=self.drop)  # fmt: skip
        weight *= self.texture.interpolate(self.nodes[k], lo, hi)
        where = self.liver[sl] >= 1
        for sub in _overlaps((lo, hi), self.regions[:k]):
            where[sub] = False
        image = self.image
        if image.dtype == weight.dtype:
            return np.subtract(image[sl], weight, out=weight), where
        # in the image's precision, as an in-place subtraction would compute it
        return (image[sl] - weight).astype(image.dtype, copy=False), where


def _overlaps(region: Box, done: list[Box]):
    """The slices of `region`'s own array where each earlier region in `done` overlaps it."""
    for lo, hi in done:
        a = [max(x, y) for x, y in zip(lo, region[0], strict=True)]
        b = [min(x, y) for x, y in zip(hi, region[1], strict=True)]
        if all(x < y for x, y in zip(a, b, strict=True)):
            yield tuple(slice(x - o, y - o) for x, y, o in zip(a, b, region[0], strict=True))


def _texture_region(
    image: np.ndarray,
    liver: np.ndarray,
    shape: tuple[int, ...],
    config,
    rng: np.random.Generator,
) -> np.ndarray:
    """Zhang et al.'s texture source: a region of the scan of `shape`, centred on a uniformly
    drawn liver voxel (shifted to fit in the box), non-liver voxels replaced by the region's
    liver mean (so no body or air enters the tumour), elastically deformed by a smooth random
    displacement field (std `deform_magnitude`, correlation length `deform_smoothness`)."""
    from scipy.ndimage import map_coordinates, zoom

    inside = np.flatnonzero(liver)
    centre = np.unravel_index(inside[int(rng.integers(inside.size))], liver.shape)
    lo = [
        int(min(max(c - n // 2, 0), max(size - n, 0)))
        for c, n, size in zip(centre, shape, liver.shape, strict=True)
    ]
    sl = tuple(slice(a, a + n) for a, n in zip(lo, shape, strict=True))
    patch = image[sl].astype(np.float32)
    mask = liver[sl]
    fill = float(patch[mask].mean()) if mask.any() else float(image[liver].mean())
    patch = np.where(mask, patch, np.float32(fill))
    if patch.shape != shape:  # a liver box smaller than the region: pad with the fill
        pad = [(0, n - m) for n, m in zip(shape, patch.shape, strict=True)]
        patch = np.pad(patch, pad, constant_values=fill)
    if config.deform_magnitude <= 0:
        return patch
    # displacement: white noise on a grid of step `deform_smoothness`, linearly upsampled
    nodes = [max(2, int(np.ceil(n / config.deform_smoothness)) + 1) for n in shape]
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = []
    for axis_grid in grids:
        coarse = rng.standard_normal(nodes).astype(np.float32) * config.deform_magnitude
        factors = [n / m for n, m in zip(shape, nodes, strict=True)]
        coords.append(axis_grid + zoom(coarse, factors, order=1, grid_mode=True, mode="nearest"))
    return map_coordinates(patch, coords, order=1, mode="reflect").astype(np.float32)


def _blend_zhang(
    image: np.ndarray,
    liver: np.ndarray,
    tumour: np.ndarray,
    boxes: list[Box],
    config: SynthesisConfig,
    rng: np.random.Generator,
) -> list[Stroke]:
    """Zhang: texture = the scan region blurred and shifted to mean liver mean / U(f_min, f_max);
    I = (1 - a*M) I + a*M*texture inside the liver, M the softened tumour mask; one image
    stroke per region, each voxel written once."""
    z = config.zhang
    alpha = rng.uniform(z.alpha.low, z.alpha.high)
    factor = rng.uniform(z.mean_factor.low, z.mean_factor.high)
    tex_sigma = rng.uniform(z.texture_blur.low, z.texture_blur.high)
    edge_sigma = rng.uniform(config.texture.edge_blur.low, config.texture.edge_blur.high)
    radius = int(_BLUR_TRUNCATE * max(edge_sigma, tex_sigma) + 0.5)
    liver_mean = float(image[liver].mean())
    target = liver_mean / factor
    regions = _regions(boxes, radius, liver.shape)
    strokes = []
    for k, region in enumerate(regions):
        sl = tuple(slice(a, b) for a, b in zip(*region, strict=True))
        soft = _blurred(tumour, region, edge_sigma, radius, boxes) * liver[sl]
        scan = image[sl].astype(np.float32)  # the original scan: nothing is written
        if z.texture_source == "region":
            shape = tuple(b - a for a, b in zip(*region, strict=True))
            patch = _texture_region(image, liver, shape, z, rng)
            texture = gaussian_filter(patch, tex_sigma) - liver_mean + target
        else:
            texture = gaussian_filter(scan, tex_sigma) - liver_mean + target
        weight = np.float32(alpha) * soft
        blended = (1 - weight) * scan + weight * texture
        where = None
        for sub in _overlaps(region, regions[:k]):  # blend each voxel once
            where = np.ones(blended.shape, dtype=bool) if where is None else where
            where[sub] = False
        strokes.append(Stroke(region[0], blended.shape, blended, where))
    return strokes
