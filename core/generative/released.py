"""Chen et al.'s released DiffTumor generator (MrGiovanni/DiffTumor, STEP3
`TumorGeneration/model_weight/`): `AutoencoderModel.ckpt` (their 3-D VQ-GAN, a PyTorch Lightning
checkpoint), `liver_early.pt` and `liver_noearly.pt` (their video-diffusion `Unet3D` inside a
`GaussianDiffusion`, the EMA weights under `ema`), loaded from local files into our own
re-implementation of their architectures, every tensor checked by name and shape.

The architectures are written here from their model definitions (`vq_gan_3d/model/vqgan.py`,
`codebook.py`, `lpips.py`, `ddpm/diffusion.py`) and configs (`vq_gan_3d.yaml`: 16 hidden
channels, 4x downsampling, 8-dim codes, 16384 codes, 32 norm groups, replicate padding;
`ddpm.yaml`: Unet3D dim 24, dim_mults (1, 2, 4, 8), 17 input and 8 output channels; 4 and 200
cosine steps). Module and buffer names follow theirs so the released state dicts load with
`strict=True`; the discriminators and the LPIPS network are built only so that their tensors are
accounted for (training-time parts; inference never runs them).

Inference follows their `synthesize_*_tumor`: HU window -> [-1, 1], the tumour blanked, the
volume permuted to (z, x, y) frames, the VQ-GAN encoding *without* quantisation scaled to
[-1, 1] by the codebook's min and max, the {-1, 1} mask brought to the latent grid by nearest
interpolation; early tumours by ancestral DDPM over the 4 steps (the network predicts noise, x0
clipped to [-1, 1]), mid/late ones by DDIM over `ddim_steps` of the 200 (uniform, their +1
offset); the sample un-scaled, quantised to the codebook and decoded.

These weights were trained by the publishers on cases outside any study's control: a study that
uses them records it (`RELEASED_TAG`), and its leakage guard cannot check them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import GeneratorConfig
from tumorsweep.generative.models import to_hu, to_unit
from tumorsweep.weights import load_checkpoint_entry

AUTOENCODER_FILE = "AutoencoderModel.ckpt"
EARLY_FILE = "liver_early.pt"
LATE_FILE = "liver_noearly.pt"
RELEASED_FILES = (AUTOENCODER_FILE, EARLY_FILE, LATE_FILE)
# MLflow param/tag of a trial whose generator is the released one (trained outside the study).
RELEASED_TAG = "tumorsweep.generator_released"
RELEASED_NOTE = (
    "generator: Chen et al.'s released weights, trained on cases outside this study's control"
)


@dataclass(frozen=True)
class ReleasedSpec:
    """Sizes of the released generator (their `vq_gan_3d.yaml` and `ddpm.yaml`)."""

    n_hiddens: int = 16
    downsample: int = 4
    embedding_dim: int = 8
    n_codes: int = 16384
    num_groups: int = 32
    disc_channels: int = 64
    disc_layers: int = 3
    unet_dim: int = 24
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    early_steps: int = 4
    late_steps: int = 200
    patch_size: int = 96
    window: tuple[float, float] = (-175.0, 250.0)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


# ---------------------------------------------------------------- the VQ-GAN (vqgan.py)


def _same_pad(kernel: int, stride: int) -> tuple[int, ...]:
    total = kernel - stride
    return (total // 2 + total % 2, total // 2) * 3


class _PadConv(nn.Module):
    """Conv3d on an input padded (replicate) so that stride s gives size / s."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = _same_pad(kernel, stride)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class _PadConvT(nn.Module):
    """ConvTranspose3d that doubles the size (replicate pre-padding, padding kernel - 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.pad = _same_pad(kernel, stride)
        self.convt = nn.ConvTranspose3d(cin, cout, kernel, stride=stride, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convt(F.pad(x, self.pad, mode="replicate"))


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class _VQResBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(channels, groups)
        self.conv1 = _PadConv(channels, channels, 3)
        self.norm2 = _group_norm(channels, groups)
        self.conv2 = _PadConv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class _VQEncoder(nn.Module):
    def __init__(self, spec: ReleasedSpec) -> None:
        super().__init__()
        levels = int(math.log2(spec.downsample))
        self.conv_blocks = nn.ModuleList()
        for i in range(levels):
            block = nn.Module()
            cin, cout = spec.n_hiddens * 2**i, spec.n_hiddens * 2 ** (i + 1)
            block.down = _PadConv(cin, cout, 4, stride=2)
            block.res = _VQResBlock(cout, spec.num_groups)
            self.conv_blocks.append(block)
        self.conv_first = _PadConv(1, spec.n_hiddens, 3)
        self.final_block = nn.Sequential(_group_norm(cout, spec.num_groups), nn.SiLU())
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_first(x)
        for block in self.conv_blocks:
            h = block.res(block.down(h))
        return self.final_block(h)


class _VQDecoder(nn.Module):
    def __init__(self, spec: ReleasedSpec) -> None:
        super().__init__()
        levels = int(math.log2(spec.downsample))
        cin = spec.n_hiddens * 2**levels
        self.final_block = nn.Sequential(_group_norm(cin, spec.num_groups), nn.SiLU())
        self.conv_blocks = nn.ModuleList()
        for i in range(levels):
            block = nn.Module()
            cin = cin if i == 0 else spec.n_hiddens * 2 ** (levels - i + 1)
            cout = spec.n_hiddens * 2 ** (levels - i)
            block.up = _PadConvT(cin, cout, 4, stride=2)
            block.res1 = _VQResBlock(cout, spec.num_groups)
            block.res2 = _VQResBlock(cout, spec.num_groups)
            self.conv_blocks.append(block)
        self.conv_last = _PadConv(cout, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.final_block(x)
        for block in self.conv_blocks:
            h = block.res2(block.res1(block.up(h)))
        return self.conv_last(h)


class _Codebook(nn.Module):
    """The EMA codebook's buffers; inference only looks codes up."""

    def __init__(self, n_codes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(n_codes, dim))
        self.register_buffer("N", torch.zeros(n_codes))
        self.register_buffer("z_avg", torch.zeros(n_codes, dim))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Each latent vector (channel axis 1) replaced by its nearest code."""
        flat = z.movedim(1, -1).reshape(-1, z.shape[1])
        codes = self.embeddings
        distance = (flat**2).sum(1, keepdim=True) - 2 * flat @ codes.t() + (codes**2).sum(1)
        nearest = distance.argmin(1).view(z.shape[0], *z.shape[2:])
        return F.embedding(nearest, codes).movedim(-1, 1)


def _discriminator(
    conv: type[nn.Module], norm: type[nn.Module], ndf: int, layers: int
) -> nn.Module:
    """The pix2pixHD `NLayerDiscriminator` (2-D or 3-D) with intermediate features: children
    `model0` ... `model{layers + 1}`."""
    stages: list[list[nn.Module]] = [[conv(1, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2)]]
    channels = ndf
    for _ in range(1, layers):
        prev, channels = channels, min(channels * 2, 512)
        stages.append(
            [conv(prev, channels, 4, stride=2, padding=2), norm(channels), nn.LeakyReLU(0.2)]
        )
    prev, channels = channels, min(channels * 2, 512)
    stages.append([conv(prev, channels, 4, stride=1, padding=2), norm(channels), nn.LeakyReLU(0.2)])
    stages.append([conv(channels, 1, 4, stride=1, padding=2)])
    module = nn.Module()
    for index, stage in enumerate(stages):
        setattr(module, f"model{index}", nn.Sequential(*stage))
    return module


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_LPIPS_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


def _lpips() -> nn.Module:
    """The LPIPS network's tensors (VGG16 features in five slices, five 1x1 heads, the scaling
    layer), named as theirs; never run here (a training-time loss)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
            channels = int(item)
    layers.append(nn.MaxPool2d(2, 2))
    model = nn.Module()
    scaling = nn.Module()
    scaling.register_buffer("shift", torch.zeros(1, 3, 1, 1))
    scaling.register_buffer("scale", torch.zeros(1, 3, 1, 1))
    model.scaling_layer = scaling
    model.net = nn.Module()
    for index, (start, stop) in enumerate(_LPIPS_SLICES, start=1):
        part = nn.Sequential()
        for k in range(start, stop):
            part.add_module(str(k), layers[k])
        setattr(model.net, f"slice{index}", part)
    for index, width in enumerate((64, 128, 256, 512, 512)):
        setattr(model, f"lin{index}", nn.Module())
        getattr(model, f"lin{index}").model = nn.Sequential(
            nn.Dropout(), nn.Conv2d(width, 1, 1, bias=False)
        )
    return model


class ChenVQGAN(nn.Module):
    """Their `VQGAN` (STEP1), same names and shapes; `encode` / `decode` as STEP3 calls them."""

    def __init__(self, spec: ReleasedSpec = ReleasedSpec()) -> None:
        super().__init__()
        self.encoder = _VQEncoder(spec)
        self.decoder = _VQDecoder(spec)
        width = self.encoder.out_channels
        self.pre_vq_conv = _PadConv(width, spec.embedding_dim, 1)
        self.post_vq_conv = _PadConv(spec.embedding_dim, width, 1)
        self.codebook = _Codebook(spec.n_codes, spec.embedding_dim)
        ndf, layers = spec.disc_channels, spec.disc_layers
        self.image_discriminator = _discriminator(nn.Conv2d, nn.BatchNorm2d, ndf, layers)
        self.video_discriminator = _discriminator(nn.Conv3d, nn.BatchNorm3d, ndf, layers)
        self.perceptual_model = _lpips()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous latent (`encode(quantize=False)` in their code)."""
        return self.pre_vq_conv(self.encoder(x))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Quantise to the codebook, then decode (`decode(quantize=True)`)."""
        return self.decoder(self.post_vq_conv(self.codebook.quantize(latent)))


# ---------------------------------------------------------- the diffusion UNet (diffusion.py)


class _ChannelNorm(nn.Module):
    """Normalisation over the channel axis with a per-channel gain (their `LayerNorm`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var + 1e-5).sqrt() * self.gamma


class _PreNormResidual(nn.Module):
    """x + fn(norm(x)); the nesting (`fn.fn`, `fn.norm`) gives their key names."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = nn.Module()
        self.fn.fn = fn
        self.fn.norm = _ChannelNorm(dim)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return x + self.fn.fn(self.fn.norm(x), **kwargs)


class _Rotary(nn.Module):
    """Rotary position embedding over the frame axis (rotary-embedding-torch 0.1.5 'lang')."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("freqs", 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim))

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(t.shape[-2], device=t.device, dtype=self.freqs.dtype)
        angles = (positions[:, None] * self.freqs).repeat_interleave(2, dim=-1).to(t)
        width = angles.shape[-1]
        head, rest = t[..., :width], t[..., width:]
        pairs = head.unflatten(-1, (-1, 2))
        half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return torch.cat((head * angles.cos() + half * angles.sin(), rest), dim=-1)


class _Attention(nn.Module):
    """Softmax attention over the second-to-last axis of (..., n, dim) tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary: _Rotary | None) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        if rotary is not None:
            self.rotary_emb = rotary
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = (
            t.unflatten(-1, (self.heads, -1)).transpose(-3, -2) for t in self.to_qkv(x).chunk(3, -1)
        )
        q = q * self.scale
        if hasattr(self, "rotary_emb"):
            q, k = self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)
        sim = q @ k.transpose(-1, -2)
        if pos_bias is not None:
            sim = sim + pos_bias
        attn = (sim - sim.amax(-1, keepdim=True).detach()).softmax(-1)
        out = (attn @ v).transpose(-3, -2).flatten(-2)
        return self.to_out(out)


class _TemporalAttention(nn.Module):
    """Attention across frames, per (h, w) position (their 'b c f h w -> b (h w) f c')."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary: _Rotary) -> None:
        super().__init__()
        self.fn = _Attention(dim, heads, dim_head, rotary)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, c, f, h, w = x.shape
        tokens = x.permute(0, 3, 4, 2, 1).reshape(b, h * w, f, c)
        out = self.fn(tokens, pos_bias=pos_bias)
        return out.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)


class _SpatialAttention(nn.Module):
    """Attention across (h, w) positions, per frame (their 'b c f h w -> b f (h w) c')."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.fn = _Attention(dim, heads, 32, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        out = self.fn(x.permute(0, 2, 3, 4, 1).reshape(b, f, h * w, c))
        return out.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)


class _SpatialLinearAttention(nn.Module):
    """Linear attention over (h, w) per frame, 1x1 convolutions (their
    `SpatialLinearAttention`)."""

    def __init__(self, dim: int, heads: int, dim_head: int = 32) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_qkv = nn.Conv2d(dim, heads * dim_head * 3, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        q, k, v = (t.reshape(b * f, self.heads, -1, h * w) for t in self.to_qkv(frames).chunk(3, 1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = k @ v.transpose(-1, -2)  # (bf, heads, d, e)
        out = (context.transpose(-1, -2) @ q).reshape(b * f, -1, h, w)
        return self.to_out(out).reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int = 8) -> None:
        super().__init__()
        self.proj = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        self.norm = nn.GroupNorm(groups, cout)

    def forward(self, x: torch.Tensor, scale_shift: tuple | None = None) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            x = x * (scale_shift[0] + 1) + scale_shift[1]
        return F.silu(x)


class _ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, time_dim: int | None) -> None:
        super().__init__()
        if time_dim is not None:
            self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, cout * 2))
        self.block1 = _Block(cin, cout)
        self.block2 = _Block(cout, cout)
        self.res_conv = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        scale_shift = None
        if hasattr(self, "mlp") and time is not None:
            scale_shift = self.mlp(time)[:, :, None, None, None].chunk(2, dim=1)
        return self.block2(self.block1(x, scale_shift)) + self.res_conv(x)


def _relative_bucket(
    relative: torch.Tensor, buckets: int = 32, max_distance: int = 32
) -> torch.Tensor:
    """T5's bucketed relative positions, as their `RelativePositionBias`."""
    n = -relative
    half = buckets // 2
    ret = (n < 0).long() * half
    n = n.abs()
    exact = half // 2
    large = (
        exact
        + (
            torch.log(n.float().clamp(min=1) / exact)
            / math.log(max_distance / exact)
            * (half - exact)
        ).long()
    )
    large = large.clamp(max=half - 1)
    return ret + torch.where(n < exact, n, large)


class ChenUnet3D(nn.Module):
    """Their video-diffusion `Unet3D` (dim 24, dim_mults (1, 2, 4, 8), 8 heads of 32); frames are
    the first spatial axis. `forward(x, time, cond)` concatenates `cond` to `x` as channels and
    predicts the noise."""

    def __init__(self, spec: ReleasedSpec = ReleasedSpec(), in_channels: int = 17) -> None:
        super().__init__()
        dim, heads = spec.unet_dim, 8
        rotary = _Rotary(32)
        self.time_rel_pos_bias = nn.Module()
        self.time_rel_pos_bias.relative_attention_bias = nn.Embedding(32, heads)
        self.init_conv = nn.Conv3d(in_channels, dim, (1, 7, 7), padding=(0, 3, 3))
        self.init_temporal_attn = _PreNormResidual(dim, _TemporalAttention(dim, heads, 32, rotary))
        dims = [dim, *(dim * m for m in spec.dim_mults)]
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        time_dim = dim * 4
        self.time_mlp = nn.Sequential(
            nn.Identity(), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim)
        )
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for index, (cin, cout) in enumerate(pairs):
            last = index == len(pairs) - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        _ResnetBlock(cin, cout, time_dim),
                        _ResnetBlock(cout, cout, time_dim),
                        _PreNormResidual(cout, _SpatialLinearAttention(cout, heads)),
                        _PreNormResidual(cout, _TemporalAttention(cout, heads, 32, rotary)),
                        nn.Identity()
                        if last
                        else nn.Conv3d(cout, cout, (1, 4, 4), (1, 2, 2), (0, 1, 1)),
                    ]
                )
            )
        mid = dims[-1]
        self.mid_block1 = _ResnetBlock(mid, mid, time_dim)
        self.mid_spatial_attn = _PreNormResidual(mid, _SpatialAttention(mid, heads))
        self.mid_temporal_attn = _PreNormResidual(mid, _TemporalAttention(mid, heads, 32, rotary))
        self.mid_block2 = _ResnetBlock(mid, mid, time_dim)
        for index, (cin, cout) in enumerate(reversed(pairs)):
            last = index == len(pairs) - 1
            self.ups.append(
                nn.ModuleList(
                    [
                        _ResnetBlock(cout * 2, cin, time_dim),
                        _ResnetBlock(cin, cin, time_dim),
                        _PreNormResidual(cin, _SpatialLinearAttention(cin, heads)),
                        _PreNormResidual(cin, _TemporalAttention(cin, heads, 32, rotary)),
                        nn.Identity()
                        if last
                        else nn.ConvTranspose3d(cin, cin, (1, 4, 4), (1, 2, 2), (0, 1, 1)),
                    ]
                )
            )
        self.final_conv = nn.Sequential(_ResnetBlock(dim * 2, dim, None), nn.Conv3d(dim, 8, 1))
        self.dim = dim

    def _time_embedding(self, time: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=time.device) * -(math.log(10000) / (half - 1)))
        angles = time.float()[:, None] * freqs[None]
        return self.time_mlp(torch.cat((angles.sin(), angles.cos()), dim=-1))

    def _pos_bias(self, frames: int, device: torch.device) -> torch.Tensor:
        position = torch.arange(frames, device=device)
        buckets = _relative_bucket(position[None, :] - position[:, None])
        return self.time_rel_pos_bias.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, cond], dim=1)
        bias = self._pos_bias(x.shape[2], x.device)
        x = self.init_conv(x)
        skip0 = x.clone()
        x = self.init_temporal_attn(x, pos_bias=bias)
        t = self._time_embedding(time)
        skips = []
        for block1, block2, spatial, temporal, down in self.downs:
            x = temporal(spatial(block2(block1(x, t), t)), pos_bias=bias)
            skips.append(x)
            x = down(x)
        x = self.mid_block1(x, t)
        x = self.mid_temporal_attn(self.mid_spatial_attn(x), pos_bias=bias)
        x = self.mid_block2(x, t)
        for block1, block2, spatial, temporal, up in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = up(temporal(spatial(block2(block1(x, t), t)), pos_bias=bias))
        return self.final_conv(torch.cat((x, skip0), dim=1))


_SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


class ChenDiffusion(nn.Module):
    """Their `GaussianDiffusion` as saved under `ema`: the schedule's buffers (`timesteps` long),
    the denoiser (`denoise_fn`) and the VQ-GAN it was trained with (`vqgan`)."""

    def __init__(self, timesteps: int, spec: ReleasedSpec = ReleasedSpec()) -> None:
        super().__init__()
        for name in _SCHEDULE_BUFFERS:
            self.register_buffer(name, torch.zeros(timesteps))
        self.denoise_fn = ChenUnet3D(spec)
        self.vqgan = ChenVQGAN(spec)


# ------------------------------------------------------------------ loading, strictly


def _check_state(path: Path, entry: str, state: Any, model: nn.Module) -> None:
    """Exactly the tensors `model` has, each of its shape; the first difference, in one line."""
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise TumorsweepError(f"{path}: {entry} is not a state dict of tensors")
    wanted = model.state_dict()
    for key, tensor in wanted.items():
        if key not in state:
            raise TumorsweepError(
                f"{path}: {entry} lacks {key} (not the released {path.name} architecture)"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise TumorsweepError(
                f"{path}: {entry} {key} has shape {tuple(state[key].shape)}, the released "
                f"architecture needs {tuple(tensor.shape)}"
            )
    for key in state:
        if key not in wanted:
            raise TumorsweepError(
                f"{path}: {entry} has unexpected tensor {key} (not the released "
                f"{path.name} architecture)"
            )


def load_released_vqgan(path: str | Path, spec: ReleasedSpec = ReleasedSpec()) -> ChenVQGAN:
    """`AutoencoderModel.ckpt` (a Lightning checkpoint: its `state_dict`; a bare state dict is
    taken too) into `ChenVQGAN`, strictly."""
    file = Path(path)
    model = ChenVQGAN(spec)
    state = load_checkpoint_entry(file, ("state_dict", None))
    _check_state(file, "state_dict", state, model)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def load_released_diffusion(
    path: str | Path, timesteps: int, spec: ReleasedSpec = ReleasedSpec()
) -> ChenDiffusion:
    """`liver_early.pt` / `liver_noearly.pt` (their trainer's save: the EMA weights under `ema`)
    into `ChenDiffusion`, strictly."""
    file = Path(path)
    model = ChenDiffusion(timesteps, spec)
    state = load_checkpoint_entry(file, ("ema",))
    _check_state(file, "ema", state, model)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def is_released_folder(folder: str | Path) -> bool:
    """A folder holding the three released files (and no tumorsweep `generator.json`)."""
    root = Path(folder)
    return (
        root.is_dir()
        and all((root / name).is_file() for name in RELEASED_FILES)
        and not (root / "generator.json").exists()
    )


def released_config(spec: ReleasedSpec = ReleasedSpec()) -> GeneratorConfig:
    """The generator settings a trial reads of a released generator: patch side, spacing,
    window and the two schedules' lengths."""
    return GeneratorConfig(
        patch_size=spec.patch_size,
        spacing=spec.spacing,
        window=spec.window,
        prediction_type="epsilon",
        early={"timesteps": spec.early_steps},
        late={"timesteps": spec.late_steps},
    )


@dataclass
class ReleasedGenerator:
    """The released VQ-GAN and the two diffusion models, with `inpaint` as `Generator`'s."""

    config: GeneratorConfig
    vqgan: ChenVQGAN
    denoisers: dict[str, ChenDiffusion]
    path: str = ""
    trained_on: list[dict] = field(default_factory=list)
    released = True

    @property
    def device(self) -> torch.device:
        return next(self.vqgan.parameters()).device

    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.vqgan.codebook.embeddings
        return codes.min(), codes.max()

    @torch.no_grad()
    def inpaint(
        self,
        image_hu: torch.Tensor,
        mask: torch.Tensor,
        kind: str,
        ddim_steps: int = 50,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """New CT patches in HU, (B, 1, P, P, P), the `mask` region generated (see the module
        docstring for the steps); the whole patch is decoded, callers paste the masked part."""
        device = self.device
        unit = to_unit(image_hu.to(device, torch.float32), self.config.window)
        mask = mask.to(device, torch.float32)
        frames = (0, 1, 4, 2, 3)  # (x, y, z) -> (z, x, y): their frames are axial slices
        blanked = (unit * (1.0 - mask)).permute(frames)
        low, high = self._scale()
        feat = (self.vqgan.encode(blanked) - low) / (high - low) * 2.0 - 1.0
        mask_latent = F.interpolate(
            (mask * 2.0 - 1.0).permute(frames), size=feat.shape[-3:], mode="nearest"
        )
        cond = torch.cat([feat, mask_latent], dim=1)
        model = self.denoisers[kind]
        x = torch.randn(feat.shape, generator=generator, device=device)
        if kind == "early":
            x = _ddpm(model, x, cond, generator)
        else:
            x = _ddim(model, x, cond, ddim_steps, eta, generator)
        # the early model's own VQ-GAN decodes its samples (their `GaussianDiffusion.sample`),
        # the separately loaded one the DDIM samples (their `synthesize_medium_tumor`)
        decoder = model.vqgan if kind == "early" else self.vqgan
        codes = decoder.codebook.embeddings
        low, high = codes.min(), codes.max()
        latent = (x + 1.0) / 2.0 * (high - low) + low
        sample = decoder.decode(latent).permute(0, 1, 3, 4, 2)
        return to_hu(sample, self.config.window)


def _ddpm(
    model: ChenDiffusion, x: torch.Tensor, cond: torch.Tensor, generator: Any
) -> torch.Tensor:
    """Their `p_sample_loop`: the network predicts noise; x0 clipped to [-1, 1]."""
    for step in reversed(range(len(model.betas))):
        t = torch.full((len(x),), step, device=x.device, dtype=torch.long)
        eps = model.denoise_fn(x, t, cond)
        x0 = (
            model.sqrt_recip_alphas_cumprod[step] * x
            - model.sqrt_recipm1_alphas_cumprod[step] * eps
        )
        x0 = x0.clamp(-1.0, 1.0)
        mean = model.posterior_mean_coef1[step] * x0 + model.posterior_mean_coef2[step] * x
        if step > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            x = mean + (0.5 * model.posterior_log_variance_clipped[step]).exp() * noise
        else:
            x = mean
    return x


def ddim_timesteps(train_steps: int, steps: int) -> np.ndarray:
    """Their `make_ddim_timesteps('uniform')`: every c-th step from 0, plus one when c > 1."""
    if not 1 <= steps <= train_steps:
        raise TumorsweepError(
            f"synthesis.difftumor.ddim_steps {steps}: must be in [1, {train_steps}] (the "
            "released late model's steps)"
        )
    stride = train_steps // steps
    chosen = np.arange(0, train_steps, stride)
    return chosen + 1 if stride != 1 else chosen


def _ddim(
    model: ChenDiffusion,
    x: torch.Tensor,
    cond: torch.Tensor,
    steps: int,
    eta: float,
    generator: Any,
) -> torch.Tensor:
    """Their `DDIMSampler.ddim_sampling` (no x0 clipping)."""
    cumprod = model.alphas_cumprod
    chosen = ddim_timesteps(len(cumprod), steps)
    alphas = cumprod[torch.as_tensor(chosen, device=cumprod.device)]
    previous = torch.cat([cumprod[:1], alphas[:-1]])
    sigmas = eta * ((1 - previous) / (1 - alphas) * (1 - alphas / previous)).sqrt()
    for index in reversed(range(len(chosen))):
        t = torch.full((len(x),), int(chosen[index]), device=x.device, dtype=torch.long)
        eps = model.denoise_fn(x, t, cond)
        a, a_prev, sigma = alphas[index], previous[index], sigmas[index]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
    return x


def load_released_generator(
    folder: str | Path, device: str | torch.device = "cpu"
) -> ReleasedGenerator:
    """The three released files of `folder` (see `RELEASED_FILES`) on `device`, each checked
    strictly against the re-implemented architectures."""
    root = Path(folder)
    for name in RELEASED_FILES:
        if not (root / name).is_file():
            raise TumorsweepError(
                f"{root / name}: file not found (a released DiffTumor folder holds "
                f"{', '.join(RELEASED_FILES)})"
            )
    spec = ReleasedSpec()
    vqgan = load_released_vqgan(root / AUTOENCODER_FILE, spec).to(device)
    early = load_released_diffusion(root / EARLY_FILE, spec.early_steps, spec).to(device)
    late = load_released_diffusion(root / LATE_FILE, spec.late_steps, spec).to(device)
    return ReleasedGenerator(
        config=released_config(spec),
        vqgan=vqgan,
        denoisers={"early": early, "late": late},
        path=str(root),
    )


def released_record(folder: str | Path) -> str:
    """What a run records of a released generator (JSON: folder, files, note)."""
    return json.dumps({"folder": str(folder), "files": list(RELEASED_FILES), "note": RELEASED_NOTE})
