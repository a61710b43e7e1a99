"""Our SegMamba V0 / V1 / ToM: parameter counts, forward+backward, scan orders, nslices policy."""

import pytest
import torch

from tumorsweep.errors import TumorsweepError
from tumorsweep.models import build, count_parameters
from tumorsweep.models.segmamba import (
    FORWARD,
    INTER_SLICE,
    REVERSE,
    MultiScanMamba,
    _from_scan_order,
    _to_scan_order,
)

SMALL = {"widths": (8, 16, 32, 64), "hidden_size": 64}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("segmamba_v0", 56_923_491), ("segmamba_v1", 67_106_403), ("segmamba_tom", 67_362_723)],
)
def test_full_size_parameter_counts(name, expected):
    """Xing et al. (SegMamba): 56.9 M, 67.1 M, 67.4 M for 1 input channel and 3 classes."""
    assert count_parameters(build(name)) == expected


@pytest.mark.parametrize("name", ["segmamba_v0", "segmamba_v1", "segmamba_tom"])
def test_forward_backward_at_32(name):
    torch.manual_seed(0)
    model = build(name, **SMALL)
    x = torch.randn(1, 1, 32, 32, 32)
    out = model(x)
    assert out.shape == (1, 3, 32, 32, 32)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    scan_grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.endswith("A_log")]
    directions = 3 if name == "segmamba_tom" else 2
    assert len(scan_grads) == 4 * 2 * directions  # 4 stages x 2 layers x directions
    assert all(g > 0 for g in scan_grads)


def test_inter_slice_order_walks_along_depth():
    depth, height, width = 4, 2, 3
    positions = torch.arange(depth * height * width).reshape(1, 1, depth, height, width)
    ordered = _to_scan_order(positions.flatten(2), INTER_SLICE, nslices=depth)
    along_depth = positions.permute(0, 1, 3, 4, 2).flatten(2)  # (h, w) outer, depth inner
    assert torch.equal(ordered, along_depth)
    for direction in (FORWARD, REVERSE, INTER_SLICE):
        back = _from_scan_order(
            _to_scan_order(positions.flatten(2), direction, depth), direction, depth
        )
        assert torch.equal(back, positions.flatten(2))


def test_reverse_direction_is_forward_scan_of_flipped_sequence():
    torch.manual_seed(0)
    forward = MultiScanMamba(8, (FORWARD,))
    reverse = MultiScanMamba(8, (REVERSE,))
    reverse.load_state_dict(forward.state_dict())
    tokens = torch.randn(2, 20, 8)
    expected = forward(tokens.flip(1)).flip(1)
    torch.testing.assert_close(reverse(tokens), expected)
    assert not torch.allclose(forward(tokens), expected, atol=1e-3)


def test_nslices_follow_stage_depth():
    assert build("segmamba_tom", patch_size=96, **SMALL).nslices == (48, 24, 12, 6)
    assert build("segmamba_tom", patch_size=(128, 128, 64), **SMALL).nslices == (64, 32, 16, 8)
    assert build("segmamba_v1", patch_size=96, **SMALL).nslices is None
    model = build("segmamba_tom", **SMALL)
    assert model.nslices is None
    with torch.no_grad():
        model(torch.randn(1, 1, 32, 64, 32))
    assert model.nslices == (16, 8, 4, 2)


def test_upstream_nslices_can_be_fixed():
    model = build("segmamba_tom", patch_size=96, nslices=(64, 32, 16, 8), **SMALL)
    assert model.nslices == (64, 32, 16, 8)
    with pytest.raises(TumorsweepError, match="nslices .* 7 does not divide"):
        build("segmamba_tom", patch_size=96, nslices=(7, 32, 16, 8))
    with pytest.raises(TumorsweepError, match="needs segmamba_tom"):
        build("segmamba_v1", nslices=(64, 32, 16, 8))


def test_bad_input_and_options_are_named():
    model = build("segmamba_v0", **SMALL)
    with pytest.raises(TumorsweepError, match=r"\(32, 32, 40\) must be multiples of 16"):
        model(torch.randn(1, 1, 32, 32, 40))
    with pytest.raises(TumorsweepError, match=r"\(96, 96, 40\) must be multiples of 16"):
        build("segmamba_v1", patch_size=(96, 96, 40))
    with pytest.raises(TumorsweepError, match="scan_backend 'cuda'"):
        build("segmamba_v1", scan_backend="cuda")
    with pytest.raises(TumorsweepError, match="'width'"):
        build("segmamba_v1", width=(8, 16, 32, 64))
