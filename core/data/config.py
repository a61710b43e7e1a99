"""Validated data fields of a trial: where the CTs come from, how they are resampled, windowed
and cached, and the built-in phantom's size when no dataset is given."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from tumorsweep.defaults import HU_WINDOW
from tumorsweep.strict import StrictModel

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]
Workers = Annotated[int, Field(ge=0)] | Literal["auto"]
# the old spelling of real_fraction 1 / 0, still read from configs logged before the merge
LEGACY_REAL_TUMORS = "real_tumors"


_Strict = StrictModel  # tumorsweep.strict: the one strict base


Layout = Literal["auto", "msd", "lits", "nnunet", "folds"]
SOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class DataSource(_Strict):
    """One more dataset the training pool draws from, besides `data.root` (which alone gives
    the validation and test lists). SyntheticTumors' `datafolds/healthy.json` is one source:
    `{path: datafolds/healthy.json, base_dir: /data/SyntheticTumors, role: healthy}`."""

    path: str = Field(
        ..., description="dataset folder or description .json of this source: MSD, LiTS, "
        "nnU-Net v2 raw, or a folds JSON such as SyntheticTumors' datafolds/healthy.json",
    )  # fmt: skip
    name: str | None = Field(
        None, pattern=SOURCE_NAME, description="short name of the source: its cases are "
        "`name/case` (distinct from every other source's), and MLflow params and the report "
        "count its cases under it; None = the description file's stem, else the folder's name",
    )  # fmt: skip
    layout: Layout = Field("auto", description="dataset layout; auto = detected from the path")
    base_dir: str | None = Field(
        None, description="folder the JSON's relative image/label paths start from, as "
        "MONAI's load_decathlon_datalist(base_dir=...) and SyntheticTumors' --train_dir; "
        "None = the JSON's own folder (or its 'data_root' key); JSON layouts only",
    )  # fmt: skip
    role: Literal["healthy", "train"] = Field(
        "healthy", description="healthy = its training cases join the synthetic arm's pool "
        "and must hold no tumour (labels 0/1; a case with label 2 is refused); train = its "
        "training cases join training as data.root's do (tumour-free ones the synthetic arm, "
        "tumour ones the real-tumour arm). Its validation/test lists are never used",
    )  # fmt: skip


class DataConfig(_Strict):
    """Where the CTs come from and how they are resampled and windowed."""

    root: str | None = Field(None, description="dataset path; None = built-in phantom CTs")
    format: Layout = Field(
        "auto",
        description="dataset layout of data.root: auto-detected, or msd, lits, nnunet, folds "
        "(SyntheticTumors JSON)",
    )
    base_dir: str | None = Field(
        None, description="folder data.root's JSON description takes its relative paths from "
        "(MONAI's base_dir; SyntheticTumors' --train_dir/--val_dir for datafolds/lits.json); "
        "None = the JSON's own folder (or its 'data_root' key); JSON layouts only",
    )  # fmt: skip
    sources: list[DataSource] = Field(
        default_factory=list, description="more datasets the training pool draws from (each "
        "its own layout and role); [] = data.root alone. The published synthetic arm trained "
        "on datafolds/healthy.json's 116 healthy CTs (47 BTCV, 38 TCIA Pancreas-CT, 20 CHAOS, "
        "11 tumour-free LiTS)",
    )  # fmt: skip
    root_healthy: bool = Field(
        True, description="whether data.root's own tumour-free training cases join the "
        "synthetic arm's pool; false with a healthy source leaves that pool to the sources "
        "(the published one: healthy.json alone, which holds its own copies of 11 tumour-free "
        "LiTS cases)",
    )  # fmt: skip
    split: str | None = Field(None, description="named evaluation set used as the test list")
    val_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="share of the training cases drawn as validation when the layout lists none",
    )
    split_seed: int = Field(0, description="seed of the validation draw when none is listed")
    folds: int | None = Field(None, ge=2, description="cross-validation folds (None: no CV)")
    fold: int | None = Field(None, ge=0, description="this trial's fold (set by --folds)")
    folds_file: str | None = Field(
        None, description="held-out cases per fold, a path with {fold}: JSON or case list"
    )
    healthy_root: str | None = Field(
        None, description="folder the healthy CTs of DiffTumor's fold lists live under (their "
        "--healthy_data_root); with folds_file = .../real_tumor_val_{fold}.txt the sibling "
        "real_tumor_train_{fold}.txt becomes the training list",
    )  # fmt: skip
    spacing: Triple = Field(
        (1.0, 1.0, 1.0),
        description="mm; the grid every CT is resampled to (Hu et al. main.py: 1 x 1 x 1)",
    )
    window: tuple[float, float] = Field(
        HU_WINDOW,
        description="HU range mapped to [0, 1] and clipped (Hu et al.: [-21, 189]; DiffTumor: "
        "[-175, 250])",
    )
    real_fraction: float = Field(
        0.0, ge=0, le=1, description="share of training samples drawn from real-tumour cases "
        "(their own labels, no synthesis), the rest from healthy cases with synthesis: 0 = "
        "synthetic tumours only (Hu et al.'s synthetic arm, default), 1 = real tumours only "
        "(the control), between = a mix per epoch (the public FAQ's real:synthetic ratios). "
        "Replaces data.real_tumors (true = 1, false = 0)",
    )  # fmt: skip
    semi_supervised: bool = Field(
        False, description="Chen et al.'s semi-supervised DiffTumor arm: real-tumour and "
        "healthy training cases in one list, each case once an epoch, real ones with their own "
        "labels, synthesis only on healthy samples (STEP3 main.py, real_tumor_train_k.txt: 95 "
        "real + 116 healthy in fold 0); needs data.real_fraction 0",
    )  # fmt: skip
    healthy_crop_organ_mm: float | None = Field(
        None, gt=0, description="healthy training crops are redrawn until they hold more organ "
        "(label > 0) than a sphere of this radius in mm, relaxed by 5 mm every 5 draws (not "
        "below 5 mm), the 31st draw kept whatever it holds (Chen et al.'s "
        "RandCropByPosNegLabeld_select, fg_thresh 30 for liver at 1 mm); None = one draw",
    )  # fmt: skip
    allow_overlap: bool = Field(
        False, description="override: let training, validation and test lists share cases"
    )
    cache_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of the training cases cached in memory (MONAI CacheDataset; 1 = all)",
    )
    pipeline: Literal["fast", "public"] = Field(
        "fast",
        description="training chain: public = the public code's as written (cached float32 "
        "volumes deep-copied per sample, crop indices found per sample); fast = the same "
        "patches (with float32 storage: labels bit for bit, images to float32 rounding) from "
        "volumes cached only where patch "
        "windows reach, with cached crop indices, synthesis planned on the cached liver box "
        "and written into each patch, per-patch window",
    )
    cache_dtype: Literal["float32", "int16"] = Field(
        "float32", description="HU storage of cached images (fast pipeline); int16 rounds the "
        "resampled HU to integers (at most 0.5 HU)",
    )  # fmt: skip
    cache: Literal["memory", "disk"] = Field(
        "memory", description="where the fast pipeline caches: memory, or memory-mapped files "
        "on local disk (data.cache_dir; resident memory bounded, reused across trials)",
    )  # fmt: skip
    cache_dir: str | None = Field(
        None, description="local folder of data.cache=disk; None = .tumorsweep/train-cache"
    )
    cache_partition: Literal["replicate", "rank"] = Field(
        "replicate", description="replicate = every DDP worker caches every training case (the "
        "public code); rank = each caches its own share and samples only from it",
    )  # fmt: skip
    cache_memory_gb: float | None = Field(
        None, gt=0, description="memory the training cache of one DDP worker may use; None = "
        "what the machine has available, shared by the workers on the node",
    )  # fmt: skip
    loader_workers: Workers = Field(
        "auto", description="DataLoader worker processes per trainer; auto = its CPUs - 1"
    )
    phantom_cases: int = Field(
        12, ge=4, description="built-in phantom CTs written when data.root is None"
    )
    phantom_tumor_cases: int = Field(
        6,
        ge=3,
        description="phantom CTs that hold independently made 'real' tumours; the rest are healthy",
    )
    phantom_partition: IntTriple | None = Field(
        None, description="(train, validation, test) tumour cases; None = half test, 1/6 val"
    )
    phantom_shape: IntTriple = Field(
        (128, 128, 96), description="voxels per axis of each phantom CT"
    )
    phantom_spacing: Triple = Field((1.0, 1.0, 1.0), description="mm per voxel of the phantom CTs")
    phantom_seed: int = Field(
        0, description="seed of the phantom CTs (the same seed writes the same files)"
    )

    @field_validator("spacing", "phantom_spacing")
    @classmethod
    def _positive(cls, value: Triple) -> Triple:
        if min(value) <= 0:
            raise ValueError(f"spacing must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _folds(self) -> DataConfig:
        if self.folds is None and (self.fold is not None or self.folds_file):
            raise ValueError("fold / folds_file need data.folds (the number of folds)")
        if self.folds is not None:
            if self.split is not None:
                raise ValueError(
                    f"data.folds with data.split={self.split!r}: in cross-validation each "
                    "fold's held-out cases are its test list; drop one of them"
                )
            if self.fold is not None and self.fold >= self.folds:
                raise ValueError(f"fold {self.fold} must be < folds {self.folds}")
            if self.folds_file and "{fold}" not in self.folds_file:
                raise ValueError(f"folds_file {self.folds_file!r} needs a {{fold}} placeholder")
        return self

    @field_validator("window")
    @classmethod
    def _window(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] >= value[1]:
            raise ValueError(f"window must be (low, high) with low < high, got {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _legacy_real_tumors(cls, data: Any) -> Any:
        """`real_tumors` (configs of trials logged before it became `real_fraction`): true is
        real_fraction 1, false 0; both given and disagreeing is refused."""
        if not isinstance(data, dict) or LEGACY_REAL_TUMORS not in data:
            return data
        data = dict(data)
        share = 1.0 if data.pop(LEGACY_REAL_TUMORS) else 0.0
        given = data.get("real_fraction")
        if given is not None and float(given) != share:
            raise ValueError(
                f"data.real_tumors is data.real_fraction {share:g}, but data.real_fraction is "
                f"{given}; set only data.real_fraction"
            )
        data["real_fraction"] = share
        return data

    @model_validator(mode="after")
    def _real_share(self) -> DataConfig:
        if self.semi_supervised and self.real_fraction != 0:
            raise ValueError(
                "data.semi_supervised trains on every real-tumour and healthy case in one list; "
                f"drop data.real_fraction ({self.real_fraction:g})"
            )
        return self

    def real_share(self) -> float:
        """The share of training samples from real-tumour cases (0: synthetic, 1: real)."""
        return float(self.real_fraction)

    @model_validator(mode="after")
    def _distinct_sources(self) -> DataConfig:
        names = [s.name for s in self.sources if s.name]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"data.sources: name {repeated[0]!r} given to two sources")
        return self

    @model_validator(mode="after")
    def _disk_cache_is_fast(self) -> DataConfig:
        if self.cache == "disk" and self.pipeline != "fast":
            raise ValueError("data.cache = disk needs data.pipeline = fast")
        return self
