"""postprocess: spurious liver pieces dropped, far tumours dropped, near tumours kept; the hu2023
protocol's variant against Hu et al.'s `denoise_pred` written out from their script."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import PROTOCOLS, postprocess


def _case() -> np.ndarray:
    labels = np.zeros((40, 30, 30), np.uint8)
    labels[5:20, 5:20, 5:20] = 1  # the liver
    labels[8:11, 8:11, 8:11] = 2  # tumour inside the liver
    labels[30:33, 25:28, 25:28] = 1  # a spurious liver piece, far away
    labels[22, 10, 10] = 2  # tumour 3 voxels (L1) beyond the liver surface
    labels[36, 5, 5] = 2  # tumour far from the liver
    return labels


def test_keeps_largest_liver_and_near_tumours_only():
    out = postprocess(_case(), dilation_iters=5)
    assert out.dtype == np.uint8
    assert np.count_nonzero(out[30:33, 25:28, 25:28]) == 0  # spurious piece removed
    assert np.count_nonzero(out == 2) == 27 + 1  # inside tumour and the near one
    assert out[22, 10, 10] == 2 and out[36, 5, 5] == 0
    assert np.count_nonzero(out == 1) == 15**3 - 27


def test_dilation_reach_is_exact():
    labels = _case()
    assert postprocess(labels, dilation_iters=3)[22, 10, 10] == 2  # at L1 distance 3
    assert postprocess(labels, dilation_iters=2)[22, 10, 10] == 0


def test_gate_equals_iterated_cross_dilation():
    rng = np.random.default_rng(0)
    labels = (ndimage.gaussian_filter(rng.random((24, 22, 20)), 2) > 0.5).astype(np.uint8)
    labels[rng.random(labels.shape) > 0.9] = 2
    out = postprocess(labels, dilation_iters=4)
    components, _ = ndimage.label(labels >= 1, structure=np.ones((3, 3, 3)))
    largest = components == np.argmax(np.bincount(components.ravel())[1:]) + 1
    gate = ndimage.binary_dilation(largest, ndimage.generate_binary_structure(3, 1), 4)
    expected = largest.astype(np.uint8)
    expected[(labels == 2) & gate] = 2
    np.testing.assert_array_equal(out, expected)


def _denoise_pred(labels: np.ndarray) -> np.ndarray:
    """Hu et al.'s `denoise_pred` on the one-hot of a label map, back to labels (their order:
    largest component of the liver channel with scipy's default structure, tumour channel
    kept inside 30 binary dilations of it)."""
    onehot = np.stack([labels == c for c in range(3)]).astype(np.float32)
    components, count = ndimage.label(onehot[1])
    sizes = [np.sum(components == index) for index in range(1, count + 1)]
    liver = components == (int(np.argmax(sizes)) + 1) if count else np.zeros_like(labels, bool)
    gate = ndimage.binary_dilation(liver, iterations=30)
    tumour = onehot[2].astype(bool) * gate
    return liver.astype(np.uint8) + 2 * tumour.astype(np.uint8)


@pytest.mark.parametrize("seed", range(3))
def test_hu2023_equals_their_denoise_pred(seed):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((70, 40, 36)), 1.2)
    labels = (field > np.quantile(field, 0.6)).astype(np.uint8)  # many pieces, diagonal contacts
    labels[(field > np.quantile(field, 0.9)) | (rng.random(labels.shape) > 0.995)] = 2
    labels[30:62] = 0
    far = labels[62:]
    far[far == 1] = 0  # tumours alone, >= 33 voxels from any liver: beyond the gate
    expected = _denoise_pred(labels)
    hu = PROTOCOLS["hu2023"].postprocess(labels)
    np.testing.assert_array_equal(hu, expected)
    assert (expected[62:] == 0).all() and (labels[62:] == 2).any()
    assert (expected == 2).any() and (expected == 1).sum() < (labels == 1).sum()
    # Connectivity and the liver definition each matter on this map.
    six_ge1 = postprocess(labels, liver="ge1", connectivity=6)
    assert not np.array_equal(postprocess(labels, liver="eq1", connectivity=26), hu)
    assert not np.array_equal(PROTOCOLS["tumorsweep"].postprocess(labels), six_ge1)


def test_empty_prediction_and_bad_input():
    assert not postprocess(np.zeros((4, 4, 4), np.uint8)).any()
    with pytest.raises(TumorsweepError, match="dilation_iters"):
        postprocess(_case(), dilation_iters=-1)
    with pytest.raises(TumorsweepError, match="3-D"):
        postprocess(np.zeros((4, 4), np.uint8))
    with pytest.raises(TumorsweepError, match="connectivity"):
        postprocess(_case(), connectivity=18)
    with pytest.raises(TumorsweepError, match="liver must be"):
        postprocess(_case(), liver="gt0")
    probabilities = _case().astype(np.float32) * 0.4
    with pytest.raises(TumorsweepError, match="postprocess labels: label holds non-integer"):
        postprocess(probabilities)
