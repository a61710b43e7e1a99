"""Validated settings of a DiffTumor generator: architecture, intensity window, patch and latent
size, noise schedules and training, with a `demo` and a `paper` preset.

The architecture follows Chen et al. (CVPR 2024, MrGiovanni/DiffTumor) with MONAI's own parts:
an autoencoder compresses a `patch_size`^3 CT patch (HU `window` scaled to [-1, 1]) 4x per axis
(three levels) to `latent_channels` channels; a diffusion UNet denoises that latent
conditioned on the latent of the CT with the tumour blanked and the downsampled tumour mask
(2 * latent + 1 input channels). Two diffusion models: "early" tumours (equivalent radius <=
`early_radius_mm`) with a short schedule, "late" (mid/late) ones with a long schedule sampled
by DDIM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from tumorsweep.defaults import DIFFTUMOR_HU_WINDOW
from tumorsweep.errors import TumorsweepError
from tumorsweep.strict import StrictModel

Triple = tuple[float, float, float]
FORMAT = "tumorsweep.difftumor/2"  # of the saved folder; a change here refuses older folders
# /2: the mask reaches the latent by nearest interpolation (/1: the covered fraction)
AUTO = "auto"  # synthesis.generator value: the sweep driver trains (or reuses) the generator


_Strict = StrictModel  # tumorsweep.strict: the one strict base


class AutoencoderSpec(_Strict):
    """The autoencoder: MONAI `AutoencoderKL` (kind kl) or MONAI `VQVAE` trained as a VQ-GAN
    (kind vqgan); one level per channel entry (2 ** (levels - 1) downsampling)."""

    kind: Literal["kl", "vqgan"] = Field(
        "kl",
        description="kl: MONAI AutoencoderKL, L1 + KL loss; vqgan: MONAI VQVAE (EMA codebook) "
        "with L1 + commitment + adversarial loss (MONAI PatchDiscriminator, hinge "
        "PatchAdversarialLoss) + optional LPIPS perceptual loss from a local file, like Chen et "
        "al.'s VQ-GAN (which adds a 2-D slice discriminator and feature matching)",
    )
    num_embeddings: int = Field(
        16384,
        ge=2,
        description="codebook size of the vqgan kind (Chen et al.: n_codes 16384); unused by kl",
    )

    channels: tuple[int, ...] = Field(
        (16, 32, 64),
        description="feature channels per level, one entry per level (levels - 1 halvings "
        "per axis; Chen et al.'s VQ-GAN: 16 hidden channels doubled per 2x downsampling, 4x "
        "in all, so 3 levels)",
    )
    latent_channels: int = Field(
        8, ge=1, description="channels of the latent (Chen et al.: embedding_dim 8)"
    )
    num_res_blocks: int = Field(2, ge=1, description="residual blocks per level (>= 1)")
    norm_groups: int = Field(
        16, ge=1, description="GroupNorm groups; every channels entry must be a multiple"
    )


class DenoiserSpec(_Strict):
    """MONAI `DiffusionModelUNet` on the latent grid."""

    channels: tuple[int, ...] = Field(
        (32, 64, 128, 256),
        description="feature channels per UNet level (Chen et al.'s Unet3D: 24 x (1, 2, 4, 8))",
    )
    attention_levels: tuple[bool, ...] = Field(
        (False, False, True, True),
        description="self-attention per level, one entry per channels entry (Chen et al.: "
        "linear spatial and full temporal attention on every level)",
    )
    num_res_blocks: int = Field(2, ge=1, description="residual blocks per level (Chen et al.: 2)")
    norm_groups: int = Field(
        32, ge=1, description="GroupNorm groups; every channels entry must be a multiple"
    )
    num_head_channels: int = Field(
        32, ge=1, description="channels per attention head (Chen et al.: 32, 8 heads)"
    )

    @model_validator(mode="after")
    def _levels(self) -> DenoiserSpec:
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(
                f"attention_levels ({len(self.attention_levels)}) needs one entry per "
                f"channels entry ({len(self.channels)})"
            )
        return self


class ScheduleSpec(_Strict):
    """A noise schedule of MONAI's schedulers (Chen et al.: cosine)."""

    timesteps: int = Field(
        ge=1,
        le=2000,
        description="diffusion steps the model is trained with, 1-2000 (Chen et al.: 4 early, "
        "200 mid/late)",
    )
    schedule: Literal["cosine", "linear_beta", "scaled_linear_beta", "sigmoid_beta"] = Field(
        "cosine", description="noise schedule of MONAI's schedulers (Chen et al.: cosine)"
    )


class TrainingSpec(_Strict):
    """Optimisation of both stages; an epoch is `crops_per_epoch` random tumour-centred crops."""

    autoencoder_epochs: int = Field(
        160,
        ge=1,
        description="autoencoder epochs of crops_per_epoch crops (paper size: about 80k steps "
        "of batch 2, Chen et al.'s max_steps 80000)",
    )
    diffusion_epochs: int = Field(
        240,
        ge=1,
        description="epochs per diffusion model (Chen et al.: 60000 steps, batch 2 x 2 "
        "accumulated)",
    )
    crops_per_epoch: int = Field(
        1000, ge=1, description="random tumour-centred crops that make one epoch"
    )
    autoencoder_batch: int = Field(
        2, ge=1, description="crops per autoencoder step (Chen et al.: batch_size 2)"
    )
    diffusion_batch: int = Field(
        4, ge=1, description="crops per diffusion step (Chen et al.: 2, accumulated over 2)"
    )
    autoencoder_lr: float = Field(
        3e-4, gt=0, le=1, description="Adam learning rate of the autoencoder (Chen et al.: 3e-4)"
    )
    diffusion_lr: float = Field(
        1e-4, gt=0, le=1, description="Adam learning rate of the denoisers (Chen et al.: 1e-4)"
    )
    kl_weight: float = Field(
        1e-6, ge=0, description="weight of the KL term of the KL autoencoder's loss (>= 0)"
    )
    ema_decay: float = Field(
        0.995, ge=0, lt=1, description="EMA decay of the diffusion weights (Chen et al.: 0.995)"
    )
    latent_reuse: int = Field(
        1, ge=1, description="epochs that reuse one set of encoded crops (1: fresh every epoch)"
    )
    adversarial_weight: float = Field(
        0.25,
        ge=0,
        description="vqgan: weight of the generator's adversarial loss relative to L1 (Chen et "
        "al.: 1.0 against l1_weight 4.0, so 0.25); 0 trains no discriminator",
    )
    adversarial_start: float = Field(
        0.125,
        ge=0,
        le=1,
        description="vqgan: fraction of the autoencoder epochs before the adversarial loss "
        "starts (Chen et al.: discriminator_iter_start 10000 of max_steps 80000)",
    )
    discriminator_channels: int = Field(
        64, ge=1, description="vqgan: channels of the patch discriminator's first layer (64)"
    )
    perceptual_weight: float = Field(
        0.0,
        ge=0,
        description="vqgan: weight of the LPIPS perceptual loss on three orthogonal slices "
        "relative to L1 (Chen et al.: 4.0 against l1_weight 4.0, so 1.0); > 0 needs "
        "perceptual_weights (tumorsweep never downloads weights)",
    )
    perceptual_weights: str | None = Field(
        None,
        description="vqgan: local LPIPS file in Chen et al.'s layout (VGG16 `net.slice1..5`, "
        "`lin0..4`, `scaling_layer`; e.g. the `perceptual_model.*` tensors of their "
        "AutoencoderModel.ckpt, prefix removed); required when perceptual_weight > 0",
    )
    checkpoint_every: int = Field(10, ge=1, description="epochs between resumable checkpoints")
    seed: int = Field(0, description="seed of the crops, the noise and the initial weights")


class GeneratorConfig(_Strict):
    """Everything that defines a generator; the saved folder records it in full."""

    patch_size: int = Field(96, ge=8, description="side of the cubic CT patch, voxels")
    spacing: Triple = Field(
        (1.0, 1.0, 1.0),
        description="voxel spacing (mm) the generator works at; set from the study's "
        "data.spacing (Chen et al.: 1 mm)",
    )
    window: tuple[float, float] = Field(
        DIFFTUMOR_HU_WINDOW,
        description="HU window mapped to [-1, 1] (Chen et al.: a_min -175, a_max 250)",
    )
    early_radius_mm: float = Field(
        10.0,
        gt=0,
        description="tumours up to this equivalent radius (mm) train the early model, larger "
        "ones the late model",
    )
    prediction_type: Literal["sample", "epsilon"] = Field(
        "sample",
        description="what the denoiser predicts: sample (x0) or epsilon (noise). Chen et al.'s "
        "ddpm.yaml says pred_x0, but their GaussianDiffusion ignores it: the released models "
        "predict noise (L1 loss on noise)",
    )
    autoencoder: AutoencoderSpec = Field(default_factory=AutoencoderSpec)
    denoiser: DenoiserSpec = Field(default_factory=DenoiserSpec)
    early: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(timesteps=4))
    late: ScheduleSpec = Field(default_factory=lambda: ScheduleSpec(timesteps=200))
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @property
    def latent_factor(self) -> int:
        """Downsampling of the autoencoder per axis."""
        return 2 ** (len(self.autoencoder.channels) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the latent grid."""
        return self.patch_size // self.latent_factor

    @model_validator(mode="after")
    def _shapes(self) -> GeneratorConfig:
        if self.window[0] >= self.window[1]:
            raise ValueError(f"window must be (low, high) with low < high, got {self.window}")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        unet_factor = 2 ** (len(self.denoiser.channels) - 1)
        if self.patch_size % (self.latent_factor * unet_factor):
            raise ValueError(
                f"patch_size {self.patch_size} must be a multiple of {self.latent_factor} "
                f"(autoencoder) x {unet_factor} (denoiser levels)"
            )
        training = self.training
        if training.perceptual_weight > 0 and self.autoencoder.kind != "vqgan":
            raise ValueError("training.perceptual_weight > 0 needs autoencoder.kind vqgan")
        if training.perceptual_weight > 0 and not training.perceptual_weights:
            raise ValueError(
                "training.perceptual_weight > 0 needs training.perceptual_weights, a local LPIPS "
                "weights file (tumorsweep never downloads weights); or set perceptual_weight 0"
            )
        for name, spec in (("autoencoder", self.autoencoder), ("denoiser", self.denoiser)):
            if any(c % spec.norm_groups for c in spec.channels):
                raise ValueError(
                    f"{name}.channels {spec.channels} must be multiples of "
                    f"{name}.norm_groups ({spec.norm_groups})"
                )
        return self


# Sized for minutes on a 2-core laptop (phantom CTs at 2 mm: 32^3 patches = 64 mm).
_DEMO: dict[str, Any] = {
    "patch_size": 32,
    "autoencoder": {"channels": (8, 16, 16), "num_res_blocks": 1, "norm_groups": 8},
    "denoiser": {
        "channels": (32, 64),
        "attention_levels": (False, False),
        "num_res_blocks": 1,
        "norm_groups": 16,
        "num_head_channels": 16,
    },
    "training": {
        "autoencoder_epochs": 20,
        "diffusion_epochs": 20,
        "crops_per_epoch": 64,
        "autoencoder_batch": 4,
        "diffusion_batch": 8,
        "autoencoder_lr": 2e-3,
        "diffusion_lr": 1e-3,
        "ema_decay": 0.9,
        "latent_reuse": 5,
        "checkpoint_every": 5,
    },
}
# Chen et al.'s sizes: 96^3 patches, 24^3 x 8 latent, ~80k autoencoder and ~60k diffusion steps.
PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "demo": _DEMO}


def generator_config(
    preset: str, spacing: Triple, overrides: Mapping[str, Any] | None = None
) -> GeneratorConfig:
    """The preset at the study's voxel spacing, plus dotted-name overrides
    (`training.autoencoder_epochs=5`); unknown names and bad values fail naming them."""
    if preset not in PRESETS:
        raise TumorsweepError(f"unknown generator preset {preset!r}; valid: {', '.join(PRESETS)}")
    tree = GeneratorConfig().model_dump()
    _merge(tree, PRESETS[preset])
    tree["spacing"] = tuple(float(s) for s in spacing)
    for dotted, value in (overrides or {}).items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict) or leaf not in node:
            raise TumorsweepError(f"unknown generator config field {dotted!r}")
        node[leaf] = value
    try:
        return GeneratorConfig.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise TumorsweepError(f"generator config: {problems}") from None


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error as `field.path: message` (a whole-model rule has no field path)."""
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _merge(tree: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping):
            _merge(tree[key], value)
        else:
            tree[key] = value
