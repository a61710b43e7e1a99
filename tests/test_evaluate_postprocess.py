"""postprocess: spurious liver pieces dropped, far tumours dropped, near tumours kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from core.errors import TumorsweepError
from core.evaluate import postprocess


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


def test_empty_prediction_and_bad_input():
    assert not postprocess(np.zeros((4, 4, 4), np.uint8)).any()
    with pytest.raises(TumorsweepError, match="dilation_iters"):
        postprocess(_case(), dilation_iters=-1)
    with pytest.raises(TumorsweepError, match="3-D"):
        postprocess(np.zeros((4, 4), np.uint8))
