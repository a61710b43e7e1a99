"""The pure-PyTorch selective scan and causal conv against a direct step-by-step recurrence."""

import pytest
import torch
import torch.nn.functional as F

from tumorsweep.errors import TumorsweepError
from tumorsweep.models import selective_scan as scan_module
from tumorsweep.models.selective_scan import causal_conv1d, selective_scan, selective_scan_chunked


def recurrence(u, delta, A, B, C, D, delta_bias):
    """Mamba's S6 recurrence, one token at a time (the definition the fallback must match)."""
    delta = F.softplus(delta + delta_bias[:, None])
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1)


def scan_inputs(length, seed=0, batch=2, channels=3, states=4):
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "u": torch.randn(batch, channels, length, generator=g),
        "delta": torch.randn(batch, channels, length, generator=g),
        "A": -torch.exp(torch.randn(channels, states, generator=g)),
        "B": torch.randn(batch, states, length, generator=g),
        "C": torch.randn(batch, states, length, generator=g),
        "D": torch.randn(channels, generator=g),
        "delta_bias": torch.randn(channels, generator=g),
    }
    return {k: v.double().requires_grad_() for k, v in tensors.items()}


def outputs_and_grads(fn, inputs):
    out = fn(**inputs)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), list(inputs.values()))
    return out, dict(zip(inputs, grads, strict=True))


@pytest.mark.parametrize(
    ("length", "segment_length"),
    [(1, None), (37, None), (37, 5), (64, 16), (50, 64)],
)
def test_fallback_matches_recurrence_outputs_and_grads(length, segment_length):
    inputs = scan_inputs(length)
    expected, expected_grads = outputs_and_grads(recurrence, inputs)

    def fallback(**kw):
        return selective_scan_chunked(**kw, segment_length=segment_length)

    got, got_grads = outputs_and_grads(fallback, inputs)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-9, atol=1e-9, msg=name)


def test_fallback_float32_close_to_float64_recurrence_with_strong_decay():
    inputs = scan_inputs(300, seed=3)
    with torch.no_grad():
        inputs["delta"].mul_(4)  # softplus up to ~10: decays far below float32's range
        expected = recurrence(**inputs)
        got = selective_scan_chunked(**{k: v.float() for k, v in inputs.items()})
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_segments_bound_memory_and_checkpoint(monkeypatch):
    """Several segments give the same result as one and run under checkpointing."""
    calls = []
    real = scan_module.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_module, "checkpoint", counting_checkpoint)
    inputs = scan_inputs(40, seed=5)
    whole, _ = outputs_and_grads(lambda **kw: selective_scan_chunked(**kw), inputs)
    assert len(calls) == 1
    pieces, _ = outputs_and_grads(
        lambda **kw: selective_scan_chunked(**kw, segment_length=8), inputs
    )
    assert len(calls) == 1 + 5
    torch.testing.assert_close(pieces, whole, rtol=1e-12, atol=1e-12)


def test_dispatch_uses_fallback_on_cpu():
    inputs = {k: v.detach() for k, v in scan_inputs(20, seed=7).items()}
    torch.testing.assert_close(selective_scan(**inputs), recurrence(**inputs))
    with pytest.raises(TumorsweepError, match="scan_backend 'kernel' needs mamba_ssm"):
        selective_scan(**inputs, backend="kernel")


def test_causal_conv_matches_direct_sum():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 5, 9, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 4, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    expected = torch.empty_like(x)
    for t in range(9):
        acc = bias.expand(2, 5).clone()
        for k in range(4):  # tap k sees token t - (3 - k); earlier than 0 is zero padding
            if t - 3 + k >= 0:
                acc = acc + weight[:, k] * x[:, :, t - 3 + k]
        expected[:, :, t] = F.silu(acc)
    torch.testing.assert_close(causal_conv1d(x, weight, bias), expected)
