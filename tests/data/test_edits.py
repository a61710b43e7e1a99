"""`VolumeEdit`: a synthesis event kept beside a cache and written into patches. Written into
any patch, it gives that patch of the edited volume; the reference is a dense volume built
stroke by stroke with plain numpy indexing."""

from __future__ import annotations

import numpy as np
import pytest

from tumorsweep.data.edits import LazyStroke, Stroke, VolumeEdit

SHAPE = (20, 18, 16)


def _lazy(values: np.ndarray, mask: np.ndarray):
    """A `LazyStroke` function serving the parts of fixed arrays."""

    def compute(a, b):
        box = tuple(slice(x, y) for x, y in zip(a, b, strict=True))
        return values[box].copy(), mask[box].copy()

    return compute


def _edit(rng: np.random.Generator) -> VolumeEdit:
    """Overlapping strokes: arrays with masks, a scalar with a mask, an array without one,
    one computed when written, one reaching past the volume's low corner in coordinates
    shifted later."""
    image = [
        Stroke((2, 3, 1), (9, 8, 7), rng.normal(size=(9, 8, 7)).astype(np.float32),
               rng.random((9, 8, 7)) < 0.6),
        Stroke((6, 5, 4), (10, 10, 10), rng.normal(5, 1, (10, 10, 10)).astype(np.float32)),
        LazyStroke((8, 1, 6), (7, 9, 8), _lazy(rng.normal(-3, 1, (7, 9, 8)).astype(np.float32),
                                               rng.random((7, 9, 8)) < 0.7)),
        Stroke((0, 0, 0), (4, 4, 4), -7.5, rng.random((4, 4, 4)) < 0.5),
    ]  # fmt: skip
    label = [Stroke((3, 3, 3), (12, 9, 8), 2, rng.random((12, 9, 8)) < 0.3)]
    return VolumeEdit(image, label, added=5)


def _dense(edit: VolumeEdit, image: np.ndarray, label: np.ndarray) -> None:
    """The reference: each stroke as a full-volume array and mask, applied in order."""
    for strokes, target in ((edit.image, image), (edit.label, label)):
        for s in strokes:
            values = np.zeros(target.shape, dtype=np.float64)
            where = np.zeros(target.shape, dtype=bool)
            box = tuple(slice(a, a + n) for a, n in zip(s.lo, s.shape, strict=True))
            held, mask = (s.compute((0, 0, 0), s.shape) if isinstance(s, LazyStroke)
                          else (s.values, s.mask))  # fmt: skip
            values[box] = held
            where[box] = True if mask is None else mask
            target[where] = values[where]


def test_patches_of_an_edit_are_the_edited_volume_s_patches() -> None:
    rng = np.random.default_rng(0)
    edit = _edit(rng)
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    label = (rng.random(SHAPE) < 0.5).astype(np.uint8)
    want_image, want_label = image.copy(), label.copy()
    _dense(edit, want_image, want_label)
    whole_image, whole_label = image.copy(), label.copy()
    edit.apply(whole_image, whole_label)
    np.testing.assert_array_equal(whole_image, want_image)
    np.testing.assert_array_equal(whole_label, want_label)
    assert (whole_label != label).sum() > 50 and (whole_image != image).sum() > 500
    for _ in range(40):
        size = rng.integers(1, 12, size=3)
        start = tuple(int(rng.integers(0, n - s + 1)) for n, s in zip(SHAPE, size, strict=True))
        window = tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))
        patch_image, patch_label = image[window].copy(), label[window].copy()
        edit.apply(patch_image, patch_label, start)
        np.testing.assert_array_equal(patch_image, want_image[window])
        np.testing.assert_array_equal(patch_label, want_label[window])


@pytest.mark.parametrize("layout", ["fortran", "flipped", "strided"])
def test_an_edit_writes_the_same_voxels_on_every_memory_layout(layout: str) -> None:
    rng = np.random.default_rng(1)
    edit = _edit(rng)
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    label = np.ones(SHAPE, dtype=np.uint8)
    want_image, want_label = image.copy(), label.copy()
    edit.apply(want_image, want_label)
    if layout == "fortran":
        got_image, got_label = np.asfortranarray(image), np.asfortranarray(label)
    elif layout == "flipped":  # a view with negative strides, written through to its base
        base_image, base_label = image[::-1, :, ::-1].copy(), label[::-1, :, ::-1].copy()
        got_image, got_label = base_image[::-1, :, ::-1], base_label[::-1, :, ::-1]
    else:  # every other voxel of a larger array along y
        big_image = np.zeros((SHAPE[0], 2 * SHAPE[1], SHAPE[2]), np.float32)
        big_label = np.zeros((SHAPE[0], 2 * SHAPE[1], SHAPE[2]), np.uint8)
        got_image, got_label = big_image[:, ::2], big_label[:, ::2]
        got_image[...], got_label[...] = image, label
    edit.apply(got_image, got_label)
    np.testing.assert_array_equal(got_image, want_image)
    np.testing.assert_array_equal(got_label, want_label)


def test_a_shifted_edit_lands_where_its_box_lies_in_the_volume() -> None:
    rng = np.random.default_rng(2)
    edit = _edit(rng)
    origin = (3, 5, 2)
    volume = rng.normal(size=(30, 30, 30)).astype(np.float32)
    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    box = tuple(slice(o, o + n) for o, n in zip(origin, SHAPE, strict=True))
    want_image, want_label = volume.copy(), labels.copy()
    edit.apply(want_image[box], want_label[box])  # planned on the box
    edit.shifted(origin).apply(volume, labels)
    np.testing.assert_array_equal(volume, want_image)
    np.testing.assert_array_equal(labels, want_label)
    assert edit.shifted(origin).added == 5


def test_later_strokes_win_and_a_replacing_edit_replaces_everything() -> None:
    image, label = np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8)
    first = Stroke((0, 0, 0), (4, 4, 4), 1.0)
    second = Stroke((1, 1, 1), (2, 2, 2), 3.0, np.array([[[True, False]] * 2] * 2))
    VolumeEdit([first, second]).apply(image, label)
    assert image.sum() == 64 - 4 + 4 * 3.0 and image[1, 1, 1] == 3.0 and image[1, 1, 2] == 1.0
    new_image, new_label = np.full((4, 4, 4), 7.0, np.float32), np.full((4, 4, 4), 2, np.uint8)
    VolumeEdit.replacing(new_image, new_label, added=64).apply(image, label)
    assert (image == 7.0).all() and (label == 2).all()


def test_a_lazy_stroke_computes_only_the_part_a_patch_holds() -> None:
    """A `LazyStroke` writes what the same `Stroke` would, and asks its function for the
    box's part inside the target only (nothing for a target it misses)."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(9, 8, 7)).astype(np.float32)
    mask = rng.random((9, 8, 7)) < 0.6
    calls = []

    def compute(a, b):
        calls.append((a, b))
        box = tuple(slice(x, y) for x, y in zip(a, b, strict=True))
        return values[box].copy(), mask[box].copy()

    eager = VolumeEdit([Stroke((2, 3, 1), (9, 8, 7), values, mask)])
    lazy = VolumeEdit([LazyStroke((2, 3, 1), (9, 8, 7), compute)]).shifted((1, 0, 2))
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    want = image.copy()
    eager.shifted((1, 0, 2)).apply(want, np.zeros(SHAPE, np.uint8))
    got = image.copy()
    lazy.apply(got, np.zeros(SHAPE, np.uint8))
    np.testing.assert_array_equal(got, want)
    assert calls == [((0, 0, 0), (9, 8, 7))]
    calls.clear()
    patch = image[4:8, 0:5, 6:20].copy()  # meets the stroke's box [3, 12) x [3, 11) x [3, 10)
    lazy.apply(patch, np.zeros(patch.shape, np.uint8), (4, 0, 6))
    np.testing.assert_array_equal(patch, want[4:8, 0:5, 6:20])
    assert calls == [((1, 0, 3), (5, 2, 7))]  # the box's own voxels [1, 5) x [0, 2) x [3, 7)
    calls.clear()
    lazy.apply(image[12:, :, :].copy(), np.zeros((8, 18, 16), np.uint8), (12, 0, 0))
    assert calls == []
