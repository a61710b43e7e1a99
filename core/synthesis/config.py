"""Validated knobs of tumour synthesis, with Hu et al. (CVPR 2023) values as defaults.

Every field is a dotted name a search space can sweep (`synthesis.sphere_ratio`,
`synthesis.texture.hu_drop.low`, `synthesis.type_probs.tiny`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tumorsweep.strict import IntRange, Range, StrictModel, within

TUMOR_TYPES = ("tiny", "small", "medium", "large", "mix")
# The two readings of the replication's "+N% Sphere" columns (no public code defines it).
SPHERE_MODES = {
    "replace": "each blob, with probability N, is a sphere (radius: one of its three drawn "
    "semi-axes, chosen at random) instead of an ellipsoid; the blob count is unchanged",
    "add": "each event keeps its ellipsoids and gains Binomial(n, N) extra spheres per blob "
    "type drawn n times (radius: one semi-axis draw of that type), i.e. N extra spheres per "
    "ellipsoid on average",
}
BLOB_TYPES = ("tiny", "small", "medium", "large")


_Strict = StrictModel  # tumorsweep.strict: the one strict base


class TypeProbs(_Strict):
    """Probability of each tumour type per synthesis event (normalised when drawn)."""

    tiny: float = Field(
        0.2,
        ge=0,
        description="weight of the tiny type per synthesis event (Hu et al.: 0.2 each, i.e. "
        "uniform)",
    )
    small: float = Field(
        0.2,
        ge=0,
        description="weight of the small type per synthesis event (Hu et al.: 0.2 each, i.e. "
        "uniform)",
    )
    medium: float = Field(
        0.2,
        ge=0,
        description="weight of the medium type per synthesis event (Hu et al.: 0.2 each, i.e. "
        "uniform)",
    )
    large: float = Field(
        0.2,
        ge=0,
        description="weight of the large type per synthesis event (Hu et al.: 0.2 each, i.e. "
        "uniform)",
    )
    mix: float = Field(
        0.2,
        ge=0,
        description="weight of the mix type per synthesis event (Hu et al.: 0.2 each, i.e. "
        "uniform)",
    )

    @model_validator(mode="after")
    def _some_positive(self) -> TypeProbs:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one tumour type probability must be > 0")
        return self


# The public code's start-up bank (MrGiovanni/SyntheticTumors@983dbeef
# TumorGenerated/TumorGenerated.py:20-36): its textures and the ranges it drew scale, base and
# u0 from, once per texture (utils.py:59, 60, 69). `draws=public_bank` is defined only for them.
PUBLISHED_SIGMA_A = (3.0, 6.0, 9.0, 12.0, 15.0)
PUBLISHED_SIGMA_B = (4.0, 7.0)
PUBLISHED_DRAW_RANGES = {"scale": (0.19, 0.21), "base": (0.04, 0.06), "u0": (0.5, 0.55)}


class TextureConfig(_Strict):
    """Texture and blending: smoothing sets, the scale and base of the probability map, mean
    intensity u0, HU drop and edge blur ranges (defaults: the public code)."""

    draws: Literal["public_bank", "per_event"] = Field(
        "public_bank",
        description="where an event's scale, base and u0 come from. public_bank (the public "
        "code): the values the public code drew once per (sigma_a, sigma_b) texture at "
        "start-up with numpy seed 0 (MrGiovanni/SyntheticTumors@983dbeef "
        "TumorGenerated/TumorGenerated.py:20-36; utils.py:59, 60, 69), which every event cut "
        "from that texture trained with; needs the published scale, base and u0 ranges and "
        "sigma_a in 3/6/9/12/15, sigma_b in 4/7 (else refused). per_event: fresh uniform draws "
        "from the scale, base and u0 ranges for every event (set it to sweep those ranges or "
        "other sigmas)",
    )

    sigma_a: list[float] = Field(
        default_factory=lambda: [3.0, 6.0, 9.0, 12.0, 15.0],
        min_length=1,
        description="voxels; smoothing of the noise before the Bernoulli step, one drawn per event "
        "(public: 3-15)",
    )
    sigma_b: list[float] = Field(
        default_factory=lambda: [4.0, 7.0],
        min_length=1,
        description="voxels; smoothing after the Bernoulli step, one drawn per event (public: 4, "
        "7)",
    )
    scale: Annotated[Range, within(gt=0, le=1)] = Field(
        Range(low=0.19, high=0.21),
        description="s of the texture's probability map p = s * A + b, drawn from [low, "
        "high] per event with draws=per_event (public_bank: the bank's value per texture); in "
        "(0, 1] (public: U(0.19, 0.21), utils.py:59)",
    )
    base: Annotated[Range, within(ge=0, le=1)] = Field(
        Range(low=0.04, high=0.06),
        description="b of the texture's probability map p = s * A + b, drawn from [low, "
        "high] per event with draws=per_event (public_bank: the bank's value per texture); in "
        "[0, 1] (public: U(0.04, 0.06), utils.py:60)",
    )
    u0: Annotated[Range, within(gt=0, le=1)] = Field(
        Range(low=0.5, high=0.55),
        description="the texture's mean intensity u0, drawn from [low, high] per event with "
        "draws=per_event (public_bank: the bank's value per texture); in (0, 1] (public: "
        "U(0.5, 0.55), utils.py:69)",
    )
    hu_drop: Annotated[Range, within(ge=0, le=1000)] = Field(
        Range(low=65.0, high=145.0),
        description="HU; the per-event intensity drop of the tumour, drawn from [low, high]; "
        "0-1000 (public: U(65, 145))",
    )
    edge_blur: Annotated[Range, within(ge=0, le=20)] = Field(
        Range(low=1.0, high=2.0),
        description="voxels; the mask's edge blur sigma, drawn per event from [low, high]; "
        "0-20 (public: U(1, 2))",
    )

    @model_validator(mode="after")
    def _ranges(self) -> TextureConfig:
        if any(s <= 0 for s in self.sigma_a + self.sigma_b):
            raise ValueError("sigma_a and sigma_b values must be > 0")
        if self.draws == "public_bank":
            self._check_public_bank()
        return self

    def _check_public_bank(self) -> None:
        """public_bank takes scale, base and u0 from the public bank's ten textures: a range
        or a sigma it does not hold would be silently ignored, so it is refused."""
        problems = [
            f"{name} = [{getattr(self, name).low:g}, {getattr(self, name).high:g}] is not the "
            f"published U({low:g}, {high:g})"
            for name, (low, high) in PUBLISHED_DRAW_RANGES.items()
            if (getattr(self, name).low, getattr(self, name).high) != (low, high)
        ]
        for name, bank in (("sigma_a", PUBLISHED_SIGMA_A), ("sigma_b", PUBLISHED_SIGMA_B)):
            outside = [s for s in getattr(self, name) if s not in bank]
            if outside:
                problems.append(
                    f"{name} {', '.join(f'{s:g}' for s in outside)} is not in the public "
                    f"bank ({', '.join(f'{s:g}' for s in bank)})"
                )
        if problems:
            raise ValueError(
                f"{'; '.join(problems)}: with draws=public_bank, scale, base and u0 are the "
                "values the public code drew once per texture of its start-up bank (sigma_a "
                "3-15 x sigma_b 4, 7, from the published ranges), so this setting would not be "
                "used; set synthesis.texture.draws=per_event to draw them per event from the "
                "ranges"
            )


class ZhangConfig(_Strict):
    """Zhang et al. (Sim2Real, JBHI 2023) style, as implemented here.

    Shape: a unit sphere whose radius along each direction u is displaced by 3-D gradient
    noise (Perlin's improved noise, the family of the paper's simplex noise) sampled at
    `surface_frequency` * u, its std over directions `surface_noise`; scaled to the blob's
    semi-axes (Hu's per-type radii) and randomly rotated. Texture: the CT itself on the
    tumour, Gaussian-blurred (sigma in `texture_blur`) and shifted so
    its mean is the liver mean divided by a factor in `mean_factor`
    (hypodense); alpha-blended, alpha in `alpha`, through the edge-blurred
    mask. Texture source (`texture_source=region`, the paper's step): a region of the scan
    of the blob region's size, centred on a random liver voxel, non-liver voxels filled with
    its liver mean, elastically deformed (a smooth random displacement field) and blurred;
    `in_place` uses the scan under the tumour instead (no deformation; the earlier
    behaviour). Not implemented: the polyhedron mesh (we displace the implicit surface voxel
    by voxel). Contrast the paper's ranges imply at a tumour's core: E[alpha] (1 - E[1/f]) =
    0.5 (1 - ln 3 / 2) = 23% of the liver mean (~25 HU on a 110 HU liver); edges less.
    """

    surface_noise: float = Field(0.15, ge=0, le=0.5, description="relative radius perturbation")
    surface_frequency: float = Field(2.0, gt=0, le=16, description="noise cells per radius")
    alpha: Annotated[Range, within(ge=0, le=1)] = Field(
        Range(low=0.2, high=0.8),
        description="the alpha-blend weight of the texture, drawn per event from [low, high]; "
        "0-1 (Zhang et al.: U(0.2, 0.8))",
    )
    mean_factor: Annotated[Range, within(ge=1, le=10)] = Field(
        Range(low=1.0, high=3.0),
        description="the tumour mean is the liver mean divided by a factor drawn from [low, "
        "high]; 1-10 (Zhang et al.: 1-3)",
    )
    texture_blur: Annotated[Range, within(ge=0, le=10)] = Field(
        Range(low=1.0, high=2.0),
        description="voxels; the Gaussian blur sigma of the texture source, drawn per event "
        "from [low, high]; 0-10 (default 1-2)",
    )
    texture_source: Literal["region", "in_place"] = Field(
        "region", description="region: a deformed, blurred region elsewhere in the liver "
        "(the paper's texture step); in_place: the scan under the tumour, blurred only",
    )  # fmt: skip
    deform_magnitude: float = Field(
        3.0, ge=0, le=50, description="std of the texture source's displacement, voxels (the "
        "paper gives no value; 0 = no deformation)",
    )  # fmt: skip
    deform_smoothness: float = Field(
        6.0, gt=0, le=100, description="correlation length of the displacement field, voxels"
    )


class DiffTumorConfig(_Strict):
    """DiffTumor (Chen et al. CVPR 2024) style: a tumour mask is drawn (early = 1-3 tiny or
    small blobs, medium = one, large = one with semi-axes up to 2x the large radius), and a
    latent diffusion generator (`synthesis.generator`) fills it in; the result is pasted
    with a Gaussian-blurred mask whose sigma is drawn from `blur` (voxels).
    Radii and elastic deformation come from `synthesis.radius` and `synthesis.elastic_sigma`.
    """

    prob: float = Field(0.5, ge=0, le=1, description="probability a healthy sample gets a tumour")
    early: float = Field(0.8, ge=0, description="probability of an early (tiny/small) tumour")
    medium: float = Field(
        0.1, ge=0, description="weight of a medium tumour per event (DiffTumor: 0.1)"
    )
    large: float = Field(
        0.1, ge=0, description="weight of a large tumour per event (DiffTumor: 0.1)"
    )
    ddim_steps: int = Field(50, ge=1, le=1000, description="DDIM steps of the mid/late model")
    ddim_eta: float = Field(0.0, ge=0, le=1, description="DDIM noise (0 = deterministic)")
    blur: Annotated[Range, within(ge=0, le=20)] = Field(
        Range(low=0.0, high=4.0),
        description="voxels; the paste mask's Gaussian blur sigma, drawn per tumour from [low, "
        "high]; 0-20 (DiffTumor: 0-4)",
    )

    @model_validator(mode="after")
    def _valid(self) -> DiffTumorConfig:
        if self.early + self.medium + self.large <= 0:
            raise ValueError("at least one of early, medium, large must be > 0")
        return self


class CellularConfig(_Strict):
    """Pixel2Cancer (Lai et al., MICCAI 2024) cellular-automaton style (`synthesis.style=ca`).

    Defaults are the public code "as coded" (MrGiovanni/Pixel2Cancer, liver; see
    docs/synthesis-styles.md); the fields marked "as intended" switch to what the code
    evidently meant. A tumour grows on the organ's quantified HU map (4 density levels, >=
    `vessel_hu` = vessel/boundary) from 1-9 foci for `steps` steps, cells 1..10 (10 = full),
    full cells push on vessels until they break; large tumours may get a necrotic core; the
    states are mapped to HU with Hu et al.'s texture (`synthesis.texture` sets it) and a 3x3
    in-plane blur.
    """

    steps: Annotated[IntRange, within(ge=1, le=1000)] = Field(
        IntRange(low=5, high=149), description="growth steps n ~ U{low..high}, 1-1000; the "
        "public loop runs n + 1 steps (kept). Public: randint(5, 150) for the liver, 80 "
        "pancreas/kidney",
    )  # fmt: skip
    seeds: Annotated[IntRange, within(ge=1, le=100)] = Field(
        IntRange(low=1, high=9),
        description="tumour foci per event ~ U{low..high}, 1-100 (public: 1-9)",
    )
    satellite_prob: float = Field(
        1 / 3,
        ge=0,
        le=1,
        description="chance a focus gets satellite seeds (public randint(0,3)==0)",
    )
    satellites: Annotated[IntRange, within(ge=0, le=100)] = Field(
        IntRange(low=3, high=9),
        description="satellite seeds per focus ~ U{low..high}, 0-100 (public: 3-9)",
    )
    satellite_offset: int = Field(
        10, ge=1, le=100, description="satellite offsets per axis ~ U{-k..k-1} voxels (public 10)"
    )
    satellite_wrap: bool = Field(
        True, description="as coded: a satellite (or necrosis point) at a negative index wraps "
        "round the organ box (numpy indexing); false (as intended): it is dropped",
    )  # fmt: skip
    neighbourhood_quirk: bool = Field(
        True, description="as coded: an invasion try picks one of 28 offsets, the 3x3x3 box "
        "(self included) plus (+2,-1,-1) with p~3.6%; false (as intended): the 27 of the box",
    )  # fmt: skip
    max_tries: int = Field(3, ge=1, le=27, description="invasion tries per cell per step (3)")
    invasion_prob: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="probability a try invades tissue of density level "
        "100/120/140 HU. As coded 1/1/1 (the draw is truncated to an int); as intended "
        "1/0.3/0.1. Vessels (>= vessel_hu) are never invaded, only pushed",
    )  # fmt: skip
    organ_hu_min: float = Field(
        100.0, ge=-1000, le=1000, description="lowest density level, HU (liver 100): levels "
        "at organ_hu_min + k (vessel_hu - organ_hu_min) / 3, k = 0, 1, 2",
    )  # fmt: skip
    vessel_hu: float = Field(
        160.0, ge=-1000, le=2000, description="HU at and above which an organ voxel is a vessel "
        "or boundary that blocks growth until pushed (liver 160; kidney 200)",
    )  # fmt: skip
    pressure_capacity: int = Field(
        2, ge=0, le=100, description="pushes a vessel voxel stores (public clamp 160 + 2); it "
        "breaks when it would exceed capacity + 1 within one step",
    )  # fmt: skip
    necrosis_prob: float = Field(0.5, ge=0, le=1, description="chance of a necrotic core (1/2)")
    necrosis_min_steps: int = Field(
        50, ge=0, le=1000, description="necrosis only when steps > this (liver 50, '2 cm')"
    )
    necrosis_points: Annotated[IntRange, within(ge=0, le=100)] = Field(
        IntRange(low=5, high=19),
        description="extra dead points per seed ~ U{low..high}, 0-100 (public: randint(5, 20))",
    )
    necrosis_steps_divisor: float = Field(
        7.0, gt=0, le=100, description="death-spread steps = floor(steps / divisor + 1) (7)"
    )
    necrotic_label: Literal[0, 2] = Field(
        2, description="label of necrotic voxels inside the organ. 2 (tumour, ours and the "
        "paper's figure); 0 is what the public code's float labels give (1 + (-1) = 0), "
        "which calls them background inside the liver",
    )  # fmt: skip
    hu_drop: Annotated[Range, within(ge=0, le=1000)] = Field(
        Range(low=65.0, high=145.0),
        description="HU; the tumour's intensity drop, drawn from [low, high]; 0-1000 (public "
        "difference_1: U(65, 145))",
    )
    necrosis_drop: Annotated[Range, within(ge=0, le=1000)] = Field(
        Range(low=90.0, high=110.0),
        description="HU; the necrotic core's extra drop, drawn from [low, high]; 0-1000 (public "
        "difference_2: U(90, 110))",
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="where the automaton runs (same tumour for the same seed on both)"
    )

    @model_validator(mode="after")
    def _ranges(self) -> CellularConfig:
        if not self.organ_hu_min < self.vessel_hu:
            raise ValueError(f"organ_hu_min ({self.organ_hu_min}) must be < vessel_hu")
        if any(not 0 <= p <= 1 for p in self.invasion_prob):
            raise ValueError(f"invasion_prob values must be in [0, 1], got {self.invasion_prob}")
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

    enabled: bool = Field(
        True,
        description="false = no synthesis (the real-tumour control, or a baseline without tumours)",
    )
    prob: float = Field(0.9, ge=0, le=1, description="probability a training sample gets tumours")
    style: Literal["hu", "zhang", "ca", "difftumor"] = Field(
        "hu", description="hu (Hu et al. CVPR 2023), zhang (Zhang et al. JBHI 2023), ca "
        "(Pixel2Cancer's cellular automaton, `synthesis.ca`), difftumor (a generator)",
    )  # fmt: skip
    healthy_only: bool = Field(
        True, description="fire only on samples whose label has no tumour (Hu: max <= 1); "
        "false also on real-tumour CTs (Pixel2Cancer: max <= 2)",
    )  # fmt: skip
    type_probs: TypeProbs = Field(default_factory=TypeProbs)
    radius: dict[str, float] = Field(
        default_factory=_default_radius,
        description="voxels at data.spacing; base radius r0 per blob type (Hu et al.: 4, 8, 16, "
        "32)",
    )
    counts: dict[str, tuple[int, int]] = Field(
        default_factory=_default_counts,
        description="[lo, hi] blobs per single-type event (Hu et al.: 3-10, 3-10, 2-5, 1-3)",
    )
    mix_counts: dict[str, tuple[int, int]] = Field(
        default_factory=_default_mix_counts,
        description="[lo, hi] blobs per type in a mix event (Hu et al.: 3-10, 5-10, 2-5, 1-3)",
    )
    elastic_sigma: dict[str, tuple[float, float]] = Field(
        default_factory=_default_elastic,
        description="voxels; [lo, hi] std of the elastic displacement grid per blob type",
    )
    sphere_ratio: float = Field(
        0.0, ge=0, le=1, description="N of the replication's '+N% Sphere' columns, read as "
        "synthesis.sphere_mode says; 0 = Hu et al. (no spheres)",
    )  # fmt: skip
    sphere_mode: Literal["replace", "add"] = Field(
        "replace", description="how sphere_ratio N is read (no public code defines '+N% "
        "Sphere'): replace = " + SPHERE_MODES["replace"] + "; add = " + SPHERE_MODES["add"],
    )  # fmt: skip
    location: Literal["uniform", "gmm"] = Field(
        "uniform",
        description="tumour centres: uniform (Hu et al.'s slice rule) or gmm "
        "(synthesis.location_model)",
    )
    location_model: str | None = Field(None, description="JSON from `tumorsweep fit-location`")
    gmm_components: int = Field(
        2, ge=1, le=16, description="components of a location mixture fitted for the trial (1-16)"
    )
    gmm_covariance: Literal["full", "diag", "tied"] = Field(
        "full",
        description="covariance of the location mixture: full, diag or tied (scikit-learn's)",
    )
    gmm_max_tries: int = Field(
        600, ge=1, description="mixture draws per blob before the uniform rule takes over"
    )
    gmm_tiny_split: bool = Field(
        False, description="location=gmm fitted by the trial: separate mixtures (each of "
        "gmm_components) for tiny tumours (equivalent-sphere radius <= gmm_tiny_radius_mm) and "
        "larger ones; tiny blobs take centres from the first, the others from the second (the "
        "replication's option); false = one mixture for every tumour",
    )  # fmt: skip
    gmm_tiny_radius_mm: float = Field(
        5.0, gt=0, le=50, description="largest equivalent-sphere radius (mm) of a real tumour "
        "fitted into the tiny mixture; 5 = the largest tiny semi-axis of Hu et al. "
        "(floor(1.25 x 4) voxels of 1 mm)",
    )  # fmt: skip
    texture: TextureConfig = Field(default_factory=TextureConfig)
    zhang: ZhangConfig = Field(default_factory=ZhangConfig)
    ca: CellularConfig = Field(default_factory=CellularConfig)
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
