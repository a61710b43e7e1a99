"""SegMamba (Xing et al. 2024, ge-xing/SegMamba) written by us: V0 (Jan 2024), V1 (Mar 2024)
and the current tri-orientated variant (ToM), as published.

The public model needs a patched `mamba_ssm` fork that cannot be imported without CUDA; here
every scan goes through `tumorsweep.models.selective_scan`, which uses the official kernels on CUDA
when present and an exact PyTorch fallback otherwise.

Inter-slice scan: the flattened (depth-major) tokens are cut into `nslices` chunks and
interleaved, so the scan walks along the depth axis. Upstream hard-codes nslices 64,32,16,8,
right only for 128^3 patches; here each stage uses its own token depth (96^3: 48,24,12,6)
unless `nslices` is given, and `model.nslices` records what was used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrUpBlock
from torch import nn

from tumorsweep.errors import TumorsweepError
from tumorsweep.models.selective_scan import (
    SCAN_BACKENDS,
    ScanBackend,
    causal_conv1d,
    selective_scan,
)

FORWARD, REVERSE, INTER_SLICE = "forward", "reverse", "inter_slice"
STAGE_STRIDE = 2  # stem and each downsampling halve every side


@dataclass(frozen=True)
class Variant:
    """What distinguishes the published SegMamba versions (January 2024, March 2024, current)."""

    directions: tuple[str, ...]
    layer_norm_downsampling: bool  # V0: LayerNorm after the stem and before each downsampling
    gsc: bool  # gated spatial convolution block before each stage's Mamba layers
    stage_norm: str  # "layer" or "instance", before the stage-output MLP
    mlp_ratio: int
    residual: bool  # residual connection around each Mamba layer


VARIANTS: dict[str, Variant] = {
    "v0": Variant((FORWARD, REVERSE), True, False, "layer", 4, False),
    "v1": Variant((FORWARD, REVERSE), False, True, "instance", 2, False),
    "tom": Variant((FORWARD, REVERSE, INTER_SLICE), False, True, "instance", 2, True),
}


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, D, H, W) volume."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def _to_scan_order(x: torch.Tensor, direction: str, nslices: int | None) -> torch.Tensor:
    """Reorder (B, C, L) tokens for one scan direction."""
    if direction == FORWARD:
        return x
    if direction == REVERSE:
        return x.flip(-1)
    batch, channels, length = x.shape
    return x.reshape(batch, channels, nslices, length // nslices).transpose(-1, -2).flatten(-2)


def _from_scan_order(y: torch.Tensor, direction: str, nslices: int | None) -> torch.Tensor:
    """Undo `_to_scan_order`."""
    if direction == FORWARD:
        return y
    if direction == REVERSE:
        return y.flip(-1)
    batch, channels, length = y.shape
    return y.reshape(batch, channels, length // nslices, nslices).transpose(-1, -2).flatten(-2)


class DirectionalSSM(nn.Module):
    """One scan direction's parameters: causal conv, x/dt projections, A, D."""

    def __init__(self, inner: int, dt_rank: int, d_state: int, d_conv: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.dt_rank, self.d_state = dt_rank, d_state
        self._init_dt(dt_min=1e-3, dt_max=0.1, floor=1e-4)

    @torch.no_grad()
    def _init_dt(self, dt_min: float, dt_max: float, floor: float) -> None:
        """Mamba's init: softplus(dt bias) log-uniform in [dt_min, dt_max] so early steps
        neither forget everything nor nothing."""
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_dt = torch.rand(self.dt_proj.bias.shape) * math.log(dt_max / dt_min)
        dt = torch.exp(log_dt + math.log(dt_min)).clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x: torch.Tensor, backend: ScanBackend) -> torch.Tensor:
        """x: (B, inner, L) in scan order -> (B, inner, L), before the gate."""
        x = causal_conv1d(x.contiguous(), self.conv.weight[:, 0], self.conv.bias, backend)
        projected = self.x_proj(x.transpose(1, 2))
        dt, B, C = projected.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)
        A = -torch.exp(self.A_log.float())
        return selective_scan(
            x,
            delta,
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D,
            delta_bias=self.dt_proj.bias,
            backend=backend,
        )


class MultiScanMamba(nn.Module):
    """Mamba mixer with one selective scan per direction, directions summed before the gate."""

    def __init__(
        self,
        dim: int,
        directions: Sequence[str],
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_backend: ScanBackend = "auto",
    ) -> None:
        super().__init__()
        inner = expand * dim
        self.directions = tuple(directions)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.scans = nn.ModuleList(
            DirectionalSSM(inner, math.ceil(dim / 16), d_state, d_conv) for _ in self.directions
        )
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, tokens: torch.Tensor, nslices: int | None = None) -> torch.Tensor:
        """tokens: (B, L, dim) -> (B, L, dim)."""
        x, z = self.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)
        y = torch.zeros_like(x)
        for direction, scan in zip(self.directions, self.scans, strict=True):
            ordered = _to_scan_order(x, direction, nslices)
            y = y + _from_scan_order(scan(ordered, self.scan_backend), direction, nslices)
        return self.out_proj((y * F.silu(z)).transpose(1, 2))


class MambaLayer(nn.Module):
    """LayerNorm + multi-scan Mamba over the flattened volume, optionally residual."""

    def __init__(self, dim: int, variant: Variant, **mixer_options: object) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = MultiScanMamba(dim, variant.directions, **mixer_options)
        self.residual = variant.residual

    def forward(self, x: torch.Tensor, nslices: int | None) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        out = self.mamba(self.norm(tokens), nslices).transpose(1, 2).reshape(x.shape)
        return out + x if self.residual else out


class GatedSpatialConv(nn.Module):
    """GSC block: (conv3-IN-ReLU x2) + (conv1-IN-ReLU), summed, conv1-IN-ReLU, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()

        def conv_norm_relu(kernel: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(channels, channels, kernel, padding=kernel // 2),
                nn.InstanceNorm3d(channels),
                nn.ReLU(),
            )

        self.wide = nn.Sequential(conv_norm_relu(3), conv_norm_relu(3))
        self.narrow = conv_norm_relu(1)
        self.merge = conv_norm_relu(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.wide(x) + self.narrow(x)) + x


class ChannelMlp(nn.Module):
    """Per-voxel MLP (1x1x1 convs) applied to each stage's output."""

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(channels, ratio * channels, 1)
        self.fc2 = nn.Conv3d(ratio * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MambaEncoder(nn.Module):
    """Stem conv k7 s2, then four stages (GSC, Mamba layers) with k2 s2 downsampling between;
    returns each stage's normalised, MLP-projected output."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        depths: Sequence[int],
        variant: Variant,
        **mixer_options: object,
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = [nn.Conv3d(in_channels, widths[0], 7, STAGE_STRIDE, padding=3)]
        if variant.layer_norm_downsampling:
            stem.append(ChannelsFirstLayerNorm(widths[0]))
        self.downsample = nn.ModuleList([nn.Sequential(*stem)])
        for before, after in zip(widths[:-1], widths[1:], strict=True):
            norm = (
                ChannelsFirstLayerNorm(before)
                if variant.layer_norm_downsampling
                else nn.InstanceNorm3d(before)
            )
            conv = nn.Conv3d(before, after, STAGE_STRIDE, STAGE_STRIDE)
            self.downsample.append(nn.Sequential(norm, conv))
        self.gscs = nn.ModuleList(
            GatedSpatialConv(w) if variant.gsc else nn.Identity() for w in widths
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(MambaLayer(w, variant, **mixer_options) for _ in range(depth))
            for w, depth in zip(widths, depths, strict=True)
        )
        self.out_norms = nn.ModuleList(
            ChannelsFirstLayerNorm(w) if variant.stage_norm == "layer" else nn.InstanceNorm3d(w)
            for w in widths
        )
        self.out_mlps = nn.ModuleList(ChannelMlp(w, variant.mlp_ratio) for w in widths)

    def forward(self, x: torch.Tensor, nslices: Sequence[int | None]) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = self.gscs[i](self.downsample[i](x))
            for layer in stage:
                x = layer(x, nslices[i])
            outs.append(self.out_mlps[i](self.out_norms[i](x)))
        return tuple(outs)


def _as_sides(patch_size: int | Sequence[int]) -> tuple[int, ...]:
    return (patch_size,) * 3 if isinstance(patch_size, int) else tuple(patch_size)


def _check_arguments(
    version: str, widths: Sequence[int], depths: Sequence[int], scan_backend: str
) -> None:
    if version not in VARIANTS:
        raise TumorsweepError(f"unknown SegMamba version {version!r}; valid: {', '.join(VARIANTS)}")
    if len(widths) != 4 or len(depths) != 4:
        raise TumorsweepError(f"SegMamba widths {widths} and depths {depths} need 4 stages")
    if scan_backend not in SCAN_BACKENDS:
        raise TumorsweepError(
            f"scan_backend {scan_backend!r} unknown; valid: {', '.join(SCAN_BACKENDS)}"
        )


def _basic(cin: int, cout: int) -> UnetrBasicBlock:
    return UnetrBasicBlock(3, cin, cout, 3, 1, norm_name="instance", res_block=True)


def _up(cin: int, cout: int) -> UnetrUpBlock:
    return UnetrUpBlock(3, cin, cout, 3, 2, norm_name="instance", res_block=True)


class SegMamba(nn.Module):
    """SegMamba `version` ("v0", "v1", "tom"): Mamba encoder + UNETR-style decoder.

    `patch_size` lets `nslices` be known before the first forward; `nslices` fixes the
    inter-slice chunk counts per stage (e.g. upstream's (64, 32, 16, 8)) instead of deriving
    them from each stage's token depth.
    """

    def __init__(
        self,
        version: str,
        in_channels: int = 1,
        out_channels: int = 3,
        widths: Sequence[int] = (48, 96, 192, 384),
        depths: Sequence[int] = (2, 2, 2, 2),
        hidden_size: int = 768,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        patch_size: int | Sequence[int] | None = None,
        nslices: Sequence[int] | None = None,
        scan_backend: ScanBackend = "auto",
    ) -> None:
        super().__init__()
        _check_arguments(version, widths, depths, scan_backend)
        self.variant = VARIANTS[version]
        self.inter_slice = INTER_SLICE in self.variant.directions
        if nslices is not None and (not self.inter_slice or len(nslices) != 4):
            raise TumorsweepError(
                f"nslices {nslices} needs segmamba_tom and one value per stage (4)"
            )
        self.fixed_nslices = None if nslices is None else tuple(nslices)
        self.nslices: tuple[int, ...] | None = None
        if patch_size is not None:
            self.nslices = self._choose_nslices(_as_sides(patch_size))

        self.encoder = MambaEncoder(
            in_channels, widths, depths, self.variant,
            d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend,
        )  # fmt: skip
        # UNETR-style decoder: a skip block per encoder level, up blocks back to full size
        self.skips = nn.ModuleList(
            _basic(cin, cout)
            for cin, cout in zip((in_channels, *widths), (*widths, hidden_size), strict=True)
        )
        self.ups = nn.ModuleList(
            _up(cin, cout)
            for cin, cout in zip((hidden_size, *widths[:0:-1]), widths[::-1], strict=True)
        )
        self.refine = _basic(widths[0], widths[0])
        self.head = UnetOutBlock(3, widths[0], out_channels)

    def _choose_nslices(self, sides: Sequence[int]) -> tuple[int, ...] | None:
        """Inter-slice chunk count per stage: the stage's token depth unless fixed."""
        if any(side % STAGE_STRIDE**4 for side in sides):
            raise TumorsweepError(
                f"SegMamba input sides {tuple(sides)} must be multiples of {STAGE_STRIDE**4}"
            )
        if not self.inter_slice:
            return None
        grids = [[side // STAGE_STRIDE ** (i + 1) for side in sides] for i in range(4)]
        chosen = self.fixed_nslices or tuple(grid[0] for grid in grids)
        for grid, count in zip(grids, chosen, strict=True):
            tokens = math.prod(grid)
            if count <= 0 or tokens % count:
                raise TumorsweepError(
                    f"nslices {chosen}: {count} does not divide the {tokens} tokens of a "
                    f"{tuple(grid)} stage (input {tuple(sides)})"
                )
        return chosen

    def set_scan_backend(self, backend: ScanBackend) -> None:
        """Switch every Mamba mixer between "auto", "kernel" and "fallback" (for comparisons)."""
        if backend not in SCAN_BACKENDS:
            raise TumorsweepError(f"scan_backend {backend!r} unknown; valid: {SCAN_BACKENDS}")
        for module in self.modules():
            if isinstance(module, MultiScanMamba):
                module.scan_backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.nslices = self._choose_nslices(x.shape[2:])
        stage_outs = self.encoder(x, self.nslices or (None,) * 4)
        skips = [skip(feature) for skip, feature in zip(self.skips, (x, *stage_outs), strict=True)]
        y = skips[-1]
        for up, skip in zip(self.ups, skips[-2::-1], strict=True):
            y = up(y, skip)
        return self.head(self.refine(y))
