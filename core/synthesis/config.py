"""Validated knobs of tumour synthesis, with Hu et al. (CVPR 2023) values as defaults.

Every field is a dotted name a search space can sweep (`synthesis.sphere_ratio`,
`synthesis.texture.hu_drop_min`, `synthesis.type_probs.tiny`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TUMOR_TYPES = ("tiny", "small", "medium", "large", "mix")
BLOB_TYPES = ("tiny", "small", "medium", "large")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _check_ranges(config: BaseModel, names: tuple[str, ...]) -> None:
    """Refuse a `<name>_min` above its `<name>_max` for each of `names`."""
    for name in names:
        lo, hi = getattr(config, f"{name}_min"), getattr(config, f"{name}_max")
        if lo > hi:
            raise ValueError(f"{name}_min ({lo}) must be <= {name}_max ({hi})")


class TypeProbs(_Strict):
    """Probability of each tumour type per synthesis event (normalised when drawn)."""

    tiny: float = Field(0.2, ge=0)
    small: float = Field(0.2, ge=0)
    medium: float = Field(0.2, ge=0)
    large: float = Field(0.2, ge=0)
    mix: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _some_positive(self) -> TypeProbs:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one tumour type probability must be > 0")
        return self


class TextureConfig(_Strict):
    """Texture and blending: smoothing sets, the scale and base of the probability map, mean
    intensity u0, HU drop and edge blur ranges (defaults: the public code)."""

    sigma_a: list[float] = Field(default_factory=lambda: [3.0, 6.0, 9.0, 12.0, 15.0], min_length=1)
    sigma_b: list[float] = Field(default_factory=lambda: [4.0, 7.0], min_length=1)
    scale_min: float = Field(0.19, gt=0, le=1, description="s of p = s * A + b")
    scale_max: float = Field(0.21, gt=0, le=1)
    base_min: float = Field(0.04, ge=0, le=1, description="b of p = s * A + b")
    base_max: float = Field(0.06, ge=0, le=1)
    u0_min: float = Field(0.5, gt=0, le=1)
    u0_max: float = Field(0.55, gt=0, le=1)
    hu_drop_min: float = Field(65.0, ge=0, le=1000)
    hu_drop_max: float = Field(145.0, ge=0, le=1000)
    edge_blur_min: float = Field(1.0, ge=0, le=20)
    edge_blur_max: float = Field(2.0, ge=0, le=20)

    @model_validator(mode="after")
    def _ranges(self) -> TextureConfig:
        _check_ranges(self, ("scale", "base", "u0", "hu_drop", "edge_blur"))
        if any(s <= 0 for s in self.sigma_a + self.sigma_b):
            raise ValueError("sigma_a and sigma_b values must be > 0")
        return self


class ZhangConfig(_Strict):
    """Zhang et al. (Sim2Real, JBHI 2023) style, as implemented here.

    Shape: a unit sphere whose radius along each direction u is displaced by 3-D gradient
    noise (Perlin's improved noise, the family of the paper's simplex noise) sampled at
    `surface_frequency` * u, its std over directions `surface_noise`; scaled to the blob's
    semi-axes (Hu's per-type radii) and randomly rotated. Texture: the CT itself on the
    tumour, Gaussian-blurred (sigma in [texture_blur_min, texture_blur_max]) and shifted so
    its mean is the liver mean divided by a factor in [mean_factor_min, mean_factor_max]
    (hypodense); alpha-blended, alpha in [alpha_min, alpha_max], through the edge-blurred
    mask. Not implemented: the paper's elastic "deformed region" step of the texture
    source, and its polyhedron mesh (we displace the implicit surface voxel by voxel).
    """

    surface_noise: float = Field(0.15, ge=0, le=0.5, description="relative radius perturbation")
    surface_frequency: float = Field(2.0, gt=0, le=16, description="noise cells per radius")
    alpha_min: float = Field(0.2, ge=0, le=1)
    alpha_max: float = Field(0.8, ge=0, le=1)
    mean_factor_min: float = Field(1.0, ge=1, le=10)
    mean_factor_max: float = Field(3.0, ge=1, le=10)
    texture_blur_min: float = Field(1.0, ge=0, le=10)
    texture_blur_max: float = Field(2.0, ge=0, le=10)

    @model_validator(mode="after")
    def _ranges(self) -> ZhangConfig:
        _check_ranges(self, ("alpha", "mean_factor", "texture_blur"))
        return self


class DiffTumorConfig(_Strict):
    """DiffTumor (Chen et al. CVPR 2024) style: a tumour mask is drawn (early = 1-3 tiny or
    small blobs, medium = one, large = one with semi-axes up to 2x the large radius), and a
    latent diffusion generator (`synthesis.generator`) fills it in; the result is pasted
    with a Gaussian-blurred mask whose sigma is drawn from [blur_min, blur_max] voxels.
    Radii and elastic deformation come from `synthesis.radius` and `synthesis.elastic_sigma`.
    """

    prob: float = Field(0.5, ge=0, le=1, description="probability a healthy sample gets a tumour")
    early: float = Field(0.8, ge=0, description="probability of an early (tiny/small) tumour")
    medium: float = Field(0.1, ge=0)
    large: float = Field(0.1, ge=0)
    ddim_steps: int = Field(50, ge=1, le=1000, description="DDIM steps of the mid/late model")
    ddim_eta: float = Field(0.0, ge=0, le=1, description="DDIM noise (0 = deterministic)")
    blur_min: float = Field(0.0, ge=0, le=20)
    blur_max: float = Field(4.0, ge=0, le=20)

    @model_validator(mode="after")
    def _valid(self) -> DiffTumorConfig:
        if self.early + self.medium + self.large <= 0:
            raise ValueError("at least one of early, medium, large must be > 0")
        _check_ranges(self, ("blur",))
        return self


def _default_counts() -> dict[str, tuple[int, int]]:
    return {"tiny": (3, 10), "small": (3, 10), "medium": (2, 5), "large": (1, 3)}


def _default_mix_counts() -> dict[str, tuple[int, int]]:
    return {"tiny": (3, 10), "small": (5, 10), "medium": (2, 5), "large": (1, 3)}


def _default_radius() -> dict[str, float]:
    return {"tiny": 4.0, "small": 8.0, "medium": 16.0, "large": 32.0}


def _default_elastic() -> dict[str, tuple[float, float]]:
    return {"tiny": (0.5, 1.0), "small": (1.0, 2.0), "medium": (3.0, 6.0), "large": (5.0, 10.0)}


class SynthesisConfig(_Strict):
    """All synthesis knobs; defaults reproduce Hu et al."""

    enabled: bool = True
    prob: float = Field(0.9, ge=0, le=1, description="probability a training sample gets tumours")
    style: Literal["hu", "zhang", "difftumor"] = "hu"
    type_probs: TypeProbs = Field(default_factory=TypeProbs)
    radius: dict[str, float] = Field(default_factory=_default_radius)
    counts: dict[str, tuple[int, int]] = Field(default_factory=_default_counts)
    mix_counts: dict[str, tuple[int, int]] = Field(default_factory=_default_mix_counts)
    elastic_sigma: dict[str, tuple[float, float]] = Field(default_factory=_default_elastic)
    sphere_ratio: float = Field(0.0, ge=0, le=1, description="per-blob probability of a sphere")
    location: Literal["uniform", "gmm"] = "uniform"
    location_model: str | None = Field(None, description="JSON from `tumorsweep fit-location`")
    gmm_components: int = Field(2, ge=1, le=16)
    gmm_covariance: Literal["full", "diag", "tied"] = "full"
    gmm_max_tries: int = Field(600, ge=1)
    texture: TextureConfig = Field(default_factory=TextureConfig)
    zhang: ZhangConfig = Field(default_factory=ZhangConfig)
    generator: str | None = Field(
        None, description="DiffTumor generator folder (tumorsweep train-generator) or 'auto'"
    )
    difftumor: DiffTumorConfig = Field(default_factory=DiffTumorConfig)

    @model_validator(mode="after")
    def _generator_for_difftumor(self) -> SynthesisConfig:
        if self.style == "difftumor" and not self.generator:
            raise ValueError(
                "generator: required when style is 'difftumor' (a folder from tumorsweep "
                "train-generator, or 'auto' in a sweep)"
            )
        return self

    @model_validator(mode="after")
    def _per_type_tables(self) -> SynthesisConfig:
        for table in ("radius", "counts", "mix_counts", "elastic_sigma"):
            keys = set(getattr(self, table))
            if keys != set(BLOB_TYPES):
                raise ValueError(f"{table} must have exactly the keys {list(BLOB_TYPES)}")
        for table in ("counts", "mix_counts", "elastic_sigma"):
            for key, (lo, hi) in getattr(self, table).items():
                if lo > hi or lo < 0:
                    raise ValueError(f"{table}.{key} must be a range [lo, hi] with 0 <= lo <= hi")
        for key, radius in self.radius.items():
            if not 1 <= radius <= 200:
                raise ValueError(f"radius.{key} must be in [1, 200] voxels, got {radius}")
        return self
