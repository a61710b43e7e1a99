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

from tumorsweep.errors import TumorsweepError
from tumorsweep.strict import StrictModel

Triple = tuple[float, float, float]
FORMAT = "tumorsweep.difftumor/1"  # of the saved folder; a change here refuses older folders
AUTO = "auto"  # synthesis.generator value: the sweep driver trains (or reuses) the generator


_Strict = StrictModel  # tumorsweep.strict: the one strict base


class AutoencoderSpec(_Strict):
    """MONAI `AutoencoderKL`: one level per channel entry (2 ** (levels - 1) downsampling)."""

    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = Field(8, ge=1)
    num_res_blocks: int = Field(2, ge=1)
    norm_groups: int = Field(16, ge=1)


class DenoiserSpec(_Strict):
    """MONAI `DiffusionModelUNet` on the latent grid."""

    channels: tuple[int, ...] = (32, 64, 128, 256)
    attention_levels: tuple[bool, ...] = (False, False, True, True)
    num_res_blocks: int = Field(2, ge=1)
    norm_groups: int = Field(32, ge=1)
    num_head_channels: int = Field(32, ge=1)

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

    timesteps: int = Field(ge=1, le=2000)
    schedule: Literal["cosine", "linear_beta", "scaled_linear_beta", "sigmoid_beta"] = "cosine"


class TrainingSpec(_Strict):
    """Optimisation of both stages; an epoch is `crops_per_epoch` random tumour-centred crops."""

    autoencoder_epochs: int = Field(160, ge=1)
    diffusion_epochs: int = Field(240, ge=1, description="per diffusion model")
    crops_per_epoch: int = Field(1000, ge=1)
    autoencoder_batch: int = Field(2, ge=1)
    diffusion_batch: int = Field(4, ge=1)
    autoencoder_lr: float = Field(3e-4, gt=0, le=1)
    diffusion_lr: float = Field(1e-4, gt=0, le=1)
    kl_weight: float = Field(1e-6, ge=0, description="KL term of the autoencoder loss")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA of the diffusion weights")
    latent_reuse: int = Field(
        1, ge=1, description="epochs that reuse one set of encoded crops (1: fresh every epoch)"
    )
    checkpoint_every: int = Field(10, ge=1, description="epochs between resumable checkpoints")
    seed: int = 0


class GeneratorConfig(_Strict):
    """Everything that defines a generator; the saved folder records it in full."""

    patch_size: int = Field(96, ge=8, description="side of the cubic CT patch, voxels")
    spacing: Triple = (1.0, 1.0, 1.0)
    window: tuple[float, float] = (-175.0, 250.0)
    early_radius_mm: float = Field(10.0, gt=0)
    prediction_type: Literal["sample", "epsilon"] = Field(
        "sample", description="what the denoiser predicts (Chen et al.: x0)"
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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise TumorsweepError(f"generator config: {problems}") from None


def _merge(tree: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping):
            _merge(tree[key], value)
        else:
            tree[key] = value
