"""The generator's networks, built from its config with MONAI's generative components; the
intensity window that maps HU to the networks' [-1, 1]; and the conditioning of a denoiser."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import VQVAE, AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from tumorsweep.generative.config import GeneratorConfig, ScheduleSpec

MODEL_NAMES = ("autoencoder", "early", "late")  # the weights a generator folder holds


class VQAutoencoder(torch.nn.Module):
    """MONAI `VQVAE` with `AutoencoderKL`'s calling convention: `encode(x)[0]` is the latent
    before quantisation (what Chen et al. condition on), `decode(z)` quantises to the codebook
    first (their `decode(quantize=True)`), `forward(x)` = (reconstruction, commitment loss)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        spec = config.autoencoder
        widths = spec.channels[1:]  # one stride-2 stage per entry after the first
        self.vqvae = VQVAE(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=widths,
            num_res_layers=spec.num_res_blocks,
            num_res_channels=widths,
            downsample_parameters=((2, 4, 1, 1),) * len(widths),
            upsample_parameters=((2, 4, 1, 1, 0),) * len(widths),
            num_embeddings=spec.num_embeddings,
            embedding_dim=spec.latent_channels,
            decay=0.99,  # Chen et al.'s codebook EMA
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.vqvae.encode(x),)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        quantized, _ = self.vqvae.quantize(z)
        return self.vqvae.decode(quantized)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vqvae(x)


def build_autoencoder(config: GeneratorConfig) -> AutoencoderKL | VQAutoencoder:
    """CT patch (1 channel, [-1, 1]) <-> latent (`latent_channels`, `latent_factor`x smaller)."""
    spec = config.autoencoder
    if spec.kind == "vqgan":
        return VQAutoencoder(config)
    levels = len(spec.channels)
    return AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=spec.channels,
        latent_channels=spec.latent_channels,
        num_res_blocks=spec.num_res_blocks,
        attention_levels=(False,) * levels,
        norm_num_groups=spec.norm_groups,
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )


def build_denoiser(config: GeneratorConfig) -> DiffusionModelUNet:
    """Input: noisy latent + latent of the blanked CT + mask (2 * latent + 1 channels)."""
    spec, latent = config.denoiser, config.autoencoder.latent_channels
    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=2 * latent + 1,
        out_channels=latent,
        channels=spec.channels,
        attention_levels=spec.attention_levels,
        num_res_blocks=spec.num_res_blocks,
        norm_num_groups=spec.norm_groups,
        num_head_channels=spec.num_head_channels,
    )


def build_model(config: GeneratorConfig, name: str) -> torch.nn.Module:
    """One of `MODEL_NAMES`."""
    return build_autoencoder(config) if name == "autoencoder" else build_denoiser(config)


def training_scheduler(spec: ScheduleSpec, prediction_type: str) -> DDPMScheduler:
    """The DDPM scheduler a denoiser is trained with (and early tumours are sampled with).
    Latents are scaled to unit spread, not to [-1, 1], so predictions are not clipped."""
    return DDPMScheduler(
        num_train_timesteps=spec.timesteps,
        schedule=spec.schedule,
        clip_sample=False,
        prediction_type=prediction_type,
    )


def ddim_scheduler(spec: ScheduleSpec, prediction_type: str) -> DDIMScheduler:
    """The DDIM scheduler mid/late tumours are sampled with (fewer steps than trained)."""
    return DDIMScheduler(
        num_train_timesteps=spec.timesteps,
        schedule=spec.schedule,
        clip_sample=False,
        prediction_type=prediction_type,
    )


def to_unit(hu: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """HU -> [-1, 1] over the window, clipped."""
    low, high = window
    return ((hu - low) / (high - low)).clamp(0.0, 1.0) * 2.0 - 1.0


def to_hu(unit: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """[-1, 1] -> HU over the window."""
    low, high = window
    return (unit.clamp(-1.0, 1.0) + 1.0) * 0.5 * (high - low) + low


def condition(
    autoencoder: AutoencoderKL, image: torch.Tensor, mask: torch.Tensor, scale: float, factor: int
) -> torch.Tensor:
    """Conditioning of the denoiser: the scaled latent (posterior mean) of the image with the
    tumour blanked (0 in [-1, 1]) and the mask as -1/1 brought to the latent grid by nearest
    interpolation, as Chen et al. (`F.interpolate(mask, size=...)`, torch's default mode:
    latent voxel i takes mask voxel `factor * i`, so a tumour that misses every sampled voxel
    is absent from the condition, as in theirs). `factor`: the autoencoder's downsampling."""
    blanked = image * (1.0 - mask)
    latent = autoencoder.encode(blanked)[0] * scale
    size = tuple(side // factor for side in mask.shape[-3:])
    grid = F.interpolate(mask * 2.0 - 1.0, size=size, mode="nearest")
    return torch.cat([latent, grid], dim=1)
