"""Selective scan (Mamba's S6 recurrence) and the depthwise causal conv that precedes it.

Each op calls the official CUDA kernel (`mamba_ssm`, `causal_conv1d`) when it imports and the
tensor is on CUDA; otherwise a pure-PyTorch version that is exact (the same recurrence, only
associated differently) and memory-bounded, so CPU smoke tests and machines without the
kernels still train. The recurrence, per channel d and state n:

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    y_t = <C_t, h_t> + D * u_t
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tumorsweep.errors import TumorsweepError

try:  # the `gpu` extra; a source build that fails to import on CPU-only machines
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _kernel_scan
except Exception:  # ImportError, or OSError/RuntimeError from a broken CUDA build
    _kernel_scan = None

try:
    from causal_conv1d import causal_conv1d_fn as _kernel_conv
except Exception:
    _kernel_conv = None

ScanBackend = Literal["auto", "kernel", "fallback"]
SCAN_BACKENDS: tuple[str, ...] = ("auto", "kernel", "fallback")

# Elements (batch x channels x tokens x states) of one fallback segment: bounds the memory
# of one segment's scan and, through checkpointing, of what backward keeps alive.
SEGMENT_ELEMENTS = 1 << 23


def kernel_available() -> bool:
    """True when the official `mamba_ssm` selective-scan kernel imported."""
    return _kernel_scan is not None


def _use_kernel(kernel: object, tensor: torch.Tensor, backend: ScanBackend) -> bool:
    if backend == "fallback":
        return False
    available = kernel is not None and tensor.is_cuda
    if backend == "kernel" and not available:
        raise TumorsweepError(
            "scan_backend 'kernel' needs mamba_ssm and causal_conv1d installed and a CUDA tensor"
        )
    return available


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, backend: ScanBackend = "auto"
) -> torch.Tensor:
    """Depthwise causal conv over the sequence, then SiLU. x: (batch, channels, length),
    weight: (channels, kernel)."""
    if _use_kernel(_kernel_conv, x, backend):
        return _kernel_conv(x, weight, bias, activation="silu")
    length = x.shape[-1]
    kernel_size = weight.shape[-1]
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=kernel_size - 1, groups=x.shape[1])
    return F.silu(out[..., :length])


def _scan_segment(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan one segment as K chunks of T tokens (K, T ~ sqrt(length)): a step-by-step
    recurrence over T run for all chunks at once from a zero state, then a recurrence over the
    K chunk ends that carries the true start state into each chunk. Python steps: T + K.

    u, delta: (b, d, L); A: (d, n); B, C: (b, n, L); h0: (b, d, n). Returns y (b, d, L) without
    the D skip, and the state after the last token.
    """
    batch, channels, length = u.shape
    steps = max(1, math.isqrt(length))
    chunks = -(-length // steps)
    pad = chunks * steps - length  # delta = 0 pads: decay 1, input 0, state unchanged

    def chunked(t: torch.Tensor) -> torch.Tensor:  # (b, c, L) -> (b, c, K, T)
        return F.pad(t, (0, pad)).unflatten(-1, (chunks, steps))

    log_decay = chunked(delta).unsqueeze(-1) * A[:, None, None, :]  # (b, d, K, T, n)
    inputs = (chunked(delta * u)).unsqueeze(-1) * chunked(B).movedim(1, -1).unsqueeze(1)
    decay = torch.exp(log_decay)
    h = h0.new_zeros(batch, channels, chunks, A.shape[1])
    local_states = []
    # unbind, not indexing: indexing's backward writes a full-size zero tensor per step
    for decay_t, input_t in zip(decay.unbind(3), inputs.unbind(3), strict=True):
        h = decay_t * h + input_t
        local_states.append(h)
    decay_since_chunk_start = torch.exp(torch.cumsum(log_decay, dim=3))
    chunk_decay = decay_since_chunk_start[:, :, :, -1]
    starts = []
    carried = h0
    for decay_k, end_k in zip(chunk_decay.unbind(2), h.unbind(2), strict=True):
        starts.append(carried)
        carried = decay_k * carried + end_k
    states = torch.stack(local_states, dim=3) + decay_since_chunk_start * torch.stack(
        starts, dim=2
    ).unsqueeze(3)
    y = torch.einsum("bdktn,bktn->bdkt", states, chunked(C).movedim(1, -1))
    return y.flatten(2)[..., :length], carried


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    segment_length: int | None = None,
) -> torch.Tensor:
    """Pure-PyTorch selective scan with the signature of `mamba_ssm`'s `selective_scan_fn`
    (without z). u, delta: (b, d, L); A: (d, n); B, C: (b, n, L); D, delta_bias: (d,).

    The sequence is cut into segments, each scanned chunk-wise and checkpointed under
    autograd, so memory grows with one segment, not with L x n. Computes in float32 (float64
    if given) and returns u's dtype.
    """
    out_dtype = u.dtype
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C, D = (t.to(dtype) for t in (u, delta, A, B, C, D))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, channels, length = u.shape
    states = A.shape[1]
    if segment_length is None:
        segment_length = max(1, SEGMENT_ELEMENTS // (batch * channels * states))
    h = u.new_zeros(batch, channels, states)
    keep_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
    outputs = []
    for start in range(0, length, segment_length):
        part = slice(start, start + segment_length)
        args = (u[..., part], delta[..., part], A, B[..., part], C[..., part], h)
        if keep_graph:
            y, h = checkpoint(_scan_segment, *args, use_reentrant=False)
        else:
            y, h = _scan_segment(*args)
        outputs.append(y)
    y = torch.cat(outputs, dim=-1) + D[:, None] * u
    return y.to(out_dtype)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor | None = None,
    backend: ScanBackend = "auto",
) -> torch.Tensor:
    """Selective scan with softplus(delta + delta_bias): the `mamba_ssm` kernel on CUDA when it
    imports (or when `backend="kernel"`), else `selective_scan_chunked`."""
    if _use_kernel(_kernel_scan, u, backend):
        return _kernel_scan(
            u.contiguous(),
            delta.contiguous(),
            A.float(),
            B.contiguous(),
            C.contiguous(),
            D.float(),
            z=None,
            delta_bias=None if delta_bias is None else delta_bias.float(),
            delta_softplus=True,
        )
    return selective_scan_chunked(u, delta, A, B, C, D, delta_bias, delta_softplus=True)
