"""One typed configuration per trial: data + synthesis + model + schedule + eval.

`TrialConfig` is validated at the edge (CLI, search space, sweep) so a bad field fails before any
Ray worker starts, with a message naming the dotted field and the value. Search spaces and
`--set` are overrides of dotted names (`synthesis.sphere_ratio=0.1`), so a new knob needs no new
code in the sweeper. Presets: `paper` (Hu et al. as the paper text states it), `hu2023-commands`
(as the public README's commands ran it), `chen2024` (DiffTumor) and `pixel2cancer`
(Pixel2Cancer's cellular-automaton tumours, as its liver command trains), each value with its
source in core/reference/presets/<name>.yaml, and `demo` (minutes on a laptop, same code path).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tumorsweep.data.config import DataConfig
from tumorsweep.defaults import SW_BATCH_SIZE, SW_OVERLAP
from tumorsweep.errors import TumorsweepError
from tumorsweep.strict import StrictModel, legacy_range_key
from tumorsweep.synthesis.config import SynthesisConfig

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


_Strict = StrictModel  # tumorsweep.strict: the one strict base


class ModelConfig(_Strict):
    """Backbone from the registry, with optional local pretrained encoder weights."""

    name: str = Field(
        "unet",
        description="backbone from the registry (tumorsweep.models.BACKBONES), e.g. unet, "
        "swin_unetr_base",
    )
    pretrained: str | None = Field(None, description="local model_swinvit.pt (Swin-UNETR only)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="constructor overrides, e.g. SegMamba widths"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from tumorsweep.models import BACKBONES

        if value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; valid: {', '.join(BACKBONES)}")
        return value


class ScheduleConfig(_Strict):
    """Optimisation: AdamW, linear warm-up then cosine annealing, stepped per epoch (the public
    code's LinearWarmupCosineAnnealingLR; see tumorsweep.optim)."""

    epochs: int = Field(
        4000, ge=1, description="training epochs of one crop per training volume (Hu et al.: 4000)"
    )
    warmup_epochs: int = Field(
        100, ge=0, description="linear warm-up epochs before the cosine (Hu et al.: 100)"
    )
    lr: float = Field(
        2e-4,
        gt=0,
        le=1,
        description="base learning rate of AdamW (Hu et al.'s paper text: 2e-4; public commands: "
        "4e-4)",
    )
    warmup_start_lr: float = Field(0.0, ge=0, description="lr of the first warm-up epoch")
    min_lr: float = Field(0.0, ge=0, description="lr the cosine anneals to at `epochs`")
    weight_decay: float = Field(
        1e-5, ge=0, description="AdamW weight decay (Hu et al. main.py: 1e-5)"
    )
    batch_size: int = Field(2, ge=1, description="patches per worker per step")
    patch_size: IntTriple = Field(
        (96, 96, 96),
        description="voxels; random training crop, sides multiples of 32 (Hu et al.: 96^3)",
    )
    crops_per_volume: int = Field(1, ge=1, description="patches cut per synthesised volume")
    val_every: int = Field(100, ge=1, description="validate and checkpoint every k epochs")
    amp: bool = Field(True, description="mixed precision on GPU (ignored on CPU)")
    amp_dtype: Literal["auto", "float16", "bfloat16"] = Field(
        "auto", description="AMP precision: auto = bfloat16 where the GPU supports it (no loss "
        "scaling), else float16 with a GradScaler (the public code's torch.cuda.amp)",
    )  # fmt: skip

    @field_validator("patch_size")
    @classmethod
    def _multiple_of_32(cls, value: IntTriple) -> IntTriple:
        if any(side <= 0 or side % 32 for side in value):
            raise ValueError(f"patch_size sides must be positive multiples of 32, got {value}")
        return value

    @model_validator(mode="after")
    def _warmup(self) -> ScheduleConfig:
        if self.batch_size % self.crops_per_volume:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of crops_per_volume "
                f"({self.crops_per_volume}): a step takes whole volumes' crops"
            )
        if self.warmup_epochs >= self.epochs and self.epochs > 1:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})"
            )
        return self


class LossConfig(_Strict):
    """Dice + cross-entropy on the softmax; defaults are Hu et al.'s `main.py`."""

    squared_pred: bool = Field(
        True, description="square the predictions in the Dice denominator (Hu et al. main.py: true)"
    )
    smooth_nr: float = Field(
        0.0, ge=0, description="Dice numerator smoothing (Hu et al. main.py: 0)"
    )
    smooth_dr: float = Field(
        1e-6, ge=0, description="Dice denominator smoothing (Hu et al. main.py: 1e-6)"
    )
    lambda_dice: float = Field(
        1.0, ge=0, description="weight of the Dice term (MONAI DiceCELoss default: 1)"
    )
    lambda_ce: float = Field(
        1.0, ge=0, description="weight of the cross-entropy term (MONAI DiceCELoss default: 1)"
    )


class LesionConfig(_Strict):
    """Lesion-level detection metrics (`tumorsweep.evaluate.lesions`, docs/lesion-metrics.md)."""

    connectivity: Literal[6, 18, 26] = Field(
        26,
        description="neighbours (6, 18 or 26) joining tumour voxels into one lesion (connected "
        "component); 26 is what BraTS 2023 and panoptica's connected components use",
    )
    match_iou: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="a true lesion is detected when the predicted lesions touching it cover it "
        "with IoU > this (unitless, 0 <= x < 1); 0 = any overlap, the BraTS 2023 lesion-wise "
        "rule; 0.5 = panoptica's default matching threshold",
    )
    size_edges_mm: tuple[float, ...] = Field(
        (10.0, 20.0),
        min_length=1,
        description="ascending edges (mm) of the equivalent-diameter buckets of lesion "
        "sensitivity, diameter = (6 V / pi)^(1/3) on the native grid; (10, 20) gives < 10, "
        "10-20 and >= 20 mm (the papers single out tumours under 1 and 2 cm); changes the "
        "metric names (tumor_lesion_sensitivity_lt10mm, ...)",
    )
    case_min_volume_mm3: float = Field(
        0.0,
        ge=0,
        description="a case is called tumour-positive (case sensitivity / specificity) when a "
        "predicted lesion is larger than this volume (mm^3); 0 = any predicted tumour voxel "
        "after post-processing",
    )

    @field_validator("size_edges_mm")
    @classmethod
    def _ascending(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(e <= 0 for e in value) or any(
            b <= a for a, b in zip(value, value[1:], strict=False)
        ):
            raise ValueError(f"size edges must be positive and ascending, got {value}")
        return value

    def params(self) -> Any:
        """These settings as the evaluation layer's `LesionParams`."""
        from tumorsweep.evaluate.lesions import LesionParams

        return LesionParams(
            self.connectivity, self.match_iou, self.size_edges_mm, self.case_min_volume_mm3
        )


class EvalConfig(_Strict):
    """Sliding-window inference, post-processing, metrics and checkpoint selection."""

    @field_validator("roi")
    @classmethod
    def _roi(cls, value: IntTriple | None) -> IntTriple | None:
        if value is not None and any(side <= 0 or side % 32 for side in value):
            raise ValueError(f"roi sides must be positive multiples of 32, got {value}")
        return value

    roi: IntTriple | None = Field(None, description="sliding-window size; None = patch size")
    overlap: float = Field(
        SW_OVERLAP,
        ge=0,
        lt=1,
        description="sliding-window overlap of the final test evaluation, fraction of the "
        "window in [0, 1); Hu et al.'s validation.py commands: 0.75",
    )
    val_overlap: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="sliding-window overlap of the validations during training (checkpoint "
        "selection), in [0, 1); None = eval.overlap. The public training commands "
        "(SyntheticTumors README, main.py --val_overlap) use 0.5; larger overlaps cost more "
        "windows per validation",
    )
    sw_batch_size: int = Field(
        SW_BATCH_SIZE, ge=1, description="windows per forward pass of the sliding-window inference"
    )
    tolerance_mm: float = Field(2.0, gt=0, description="mm; NSD tolerance (Hu et al.: 2)")
    protocol: Literal["tumorsweep", "hu2023", "chen2024"] = Field(
        "tumorsweep",
        description="evaluation protocol (tumorsweep.evaluate.PROTOCOLS): ours, Hu "
        "et al.'s validation.py (logits inverted linearly, liver = largest 6-connected "
        "component of label 1, scored as label == 1), or Chen et al.'s DiffTumor validation.py "
        "(logits inverted linearly, the liver is an external organ mask, eval.organ_masks, "
        "tumours kept only inside it)",
    )
    organ_masks: str | None = Field(
        None,
        description="chen2024: folder of organ masks, one per case named as its label file "
        "(DiffTumor's organ_pseudo_swin_new/liver/); 'truth' = the case's own label (phantoms "
        "and tests only: it flatters every score); read by chen2024 only",
    )
    postprocess: bool = Field(
        True,
        description="keep the largest liver component and tumours near it (Hu et al.'s "
        "validation.py)",
    )
    lesions: LesionConfig = Field(
        default_factory=LesionConfig,
        description="lesion-level detection metrics: connectivity, match rule, diameter "
        "buckets, case-level threshold",
    )
    select_metric: str = Field(
        "val_mean_dice",
        description="validation metric of the best checkpoint (Hu et al.: the "
        "mean of liver and tumour Dice); lesion metrics too, e.g. "
        "val_tumor_lesion_sensitivity_lt10mm (still on validation cases only)",
    )
    select_on: Literal["validation", "test", "last"] = Field(
        "validation", description="list to select checkpoints on; last = no selection"
    )
    allow_test_selection: bool = Field(False, description="override: select on the test list")
    log_best_model: bool = Field(
        True,
        description="log the selected weights (state dict) and config with the trial, for "
        "`tumorsweep predict` and the model registry; false saves space in huge sweeps",
    )

    @field_validator("select_metric")
    @classmethod
    def _selectable(cls, value: str, info: ValidationInfo) -> str:
        lesions = info.data.get("lesions")  # validated before: declared above select_metric
        valid = selectable_metrics(lesions.size_edges_mm if lesions else None)
        if value not in valid:
            raise ValueError(f"unknown selection metric {value!r}; valid: {', '.join(valid)}")
        return value


def selectable_metrics(size_edges_mm: tuple[float, ...] | None = None) -> dict[str, bool]:
    """Validation summaries a checkpoint can be selected on (and Tune can search on as
    `best_<name>`), each with whether higher is better: per-case means of every registry
    metric per class (lesion metrics with the diameter buckets of `size_edges_mm`, default
    10 and 20 mm), pooled values where a metric has them, and the mean of liver and tumour
    Dice (Hu et al.'s selection metric)."""
    from tumorsweep.evaluate.lesions import DEFAULT_SIZE_EDGES_MM
    from tumorsweep.evaluate.registry import CLASSES, metrics

    names: dict[str, bool] = {}
    for metric in metrics(tuple(size_edges_mm or DEFAULT_SIZE_EDGES_MM)):
        for cls in CLASSES:
            if cls not in metric.classes:
                continue
            names[f"val_{metric.key(cls)}"] = metric.higher_is_better
            if metric.pooled is not None:
                names[f"val_{metric.key(cls)}_global"] = metric.higher_is_better
    names["val_mean_dice"] = True
    return names


class TrialConfig(_Strict):
    """Everything one trial needs; flattened to dotted MLflow params."""

    data: DataConfig = Field(default_factory=DataConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    seed: int = Field(0, description="trial seed: synthesis draws, crops, network initialisation")


# The demo preset: same code path, sized for a 2-core laptop on the phantom CTs. The phantom is
# made at 2 mm, so synthesis radii (in voxels at the training spacing) are halved too.
_DEMO: dict[str, Any] = {
    "data.spacing": (2.0, 2.0, 2.0),
    "data.phantom_shape": (96, 96, 64),
    "data.phantom_spacing": (2.0, 2.0, 2.0),
    "data.phantom_cases": 18,
    "data.phantom_tumor_cases": 12,
    "data.phantom_partition": (2, 4, 6),  # real-tumour train, validation, test
    "data.loader_workers": 0,  # one core per trial: a loader process would compete for it
    "synthesis.radius": {"tiny": 2.0, "small": 4.0, "medium": 8.0, "large": 16.0},
    "synthesis.type_probs": {"tiny": 0.25, "small": 0.4, "medium": 0.35, "large": 0.0, "mix": 0.0},
    "synthesis.elastic_sigma": {
        "tiny": (0.25, 0.5),
        "small": (0.5, 1.0),
        "medium": (1.5, 3.0),
        "large": (2.5, 5.0),
    },
    # DiffTumor on the phantom: blur halved for 2 mm; like Hu's demo mix, sized to the phantom's
    # 4-15 mm tumours (no large class); its published 0.8 early share (1-3 tumours of 4-8 mm
    # here) left the 32-epoch demo UNet at tumour Dice ~0.01 on the phantom's tumours. The
    # published probability 0.5: made on the training crop, every synthesised tumour reaches
    # the patch (0.9 was for per-volume synthesis, whose tumours the crop often missed).
    "synthesis.difftumor.prob": 0.5,
    "synthesis.difftumor.early": 0.2,
    "synthesis.difftumor.medium": 0.8,
    "synthesis.difftumor.large": 0.0,
    "synthesis.difftumor.blur.high": 2.0,
    "synthesis.difftumor.ddim_steps": 20,  # the loader's synthesis bounds the demo trial's speed
    "schedule.epochs": 64,
    "schedule.warmup_epochs": 2,
    "schedule.lr": 3e-3,
    "schedule.batch_size": 4,
    "schedule.patch_size": (32, 32, 32),
    "schedule.crops_per_volume": 4,
    "schedule.val_every": 16,
    "eval.roi": (96, 96, 64),  # the whole 2 mm phantom in one window
    "eval.overlap": 0.25,
}


# The published presets: one YAML file each (core/reference/presets/<name>.yaml), every value
# with its source (paper text, a public command line, a public code default, or a deliberate
# tumorsweep choice with its reason); docs/presets.md is generated from them.
PRESET_DIR = "reference/presets"
PRESET_KINDS = ("paper", "command", "code-default", "tumorsweep")


def load_preset_documents() -> dict[str, dict[str, Any]]:
    """Every preset file shipped with the package, by name: `{name, description, values:
    {dotted.field: {value, source, kind}}}`, checked for form (a malformed file is a packaging
    error, reported with the file's name)."""
    from importlib import resources

    documents: dict[str, dict[str, Any]] = {}
    folder = resources.files("tumorsweep").joinpath(PRESET_DIR)
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".yaml"):
            continue
        where = f"{PRESET_DIR}/{entry.name}"
        document = yaml.safe_load(entry.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or set(document) != {"name", "description", "values"}:
            raise TumorsweepError(f"{where}: expected the keys name, description, values")
        if f"{document['name']}.yaml" != entry.name:
            raise TumorsweepError(f"{where}: name {document['name']!r} is not the file's name")
        for field, row in document["values"].items():
            if not isinstance(row, dict) or set(row) != {"value", "source", "kind"}:
                raise TumorsweepError(f"{where}: {field}: expected the keys value, source, kind")
            if row["kind"] not in PRESET_KINDS or not str(row["source"]).strip():
                raise TumorsweepError(
                    f"{where}: {field}: kind must be one of {', '.join(PRESET_KINDS)} and the "
                    f"source given, got kind {row['kind']!r}"
                )
        documents[document["name"]] = document
    return documents


PRESET_DOCUMENTS = load_preset_documents()
PRESETS: dict[str, dict[str, Any]] = {
    **{
        name: {field: row["value"] for field, row in document["values"].items()}
        for name, document in PRESET_DOCUMENTS.items()
    },
    "demo": _DEMO,
}


def make_config(preset: str = "paper", overrides: Mapping[str, Any] | None = None) -> TrialConfig:
    """Build a validated TrialConfig from a preset plus dotted-name overrides."""
    if preset not in PRESETS:
        raise TumorsweepError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    merged = {**PRESETS[preset], **dict(overrides or {})}
    return apply_overrides(TrialConfig(), merged)


# Fields merged into another: naming one in an override or search space is refused with how to
# say it now (config files logged before the merge are still read: see DataConfig). The old
# `<range>_min` / `<range>_max` pairs are refused the same way (tumorsweep.strict.legacy_range_key)
# and read from logged configs by StrictModel.
RENAMED_FIELDS = {
    "data.real_tumors": "set data.real_fraction instead (1 = real tumours, the control; "
    "0 = synthetic tumours; between = a mix)",
}


def apply_overrides(
    config: TrialConfig, overrides: Mapping[str, Any], source: str = "override"
) -> TrialConfig:
    """Return a new config with dotted-name values set; unknown names and bad values fail."""
    tree = config.model_dump()
    for dotted, value in overrides.items():
        if dotted in RENAMED_FIELDS:
            raise TumorsweepError(f"{source}: {dotted} is gone: {RENAMED_FIELDS[dotted]}")
        if (renamed := legacy_range_key(TrialConfig, dotted)) is not None:
            raise TumorsweepError(
                f"{source}: {dotted} is now {renamed} (a range is one field: "
                f"{renamed.rsplit('.', 1)[0]}=[low, high], or its .low / .high)"
            )
        node = tree
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = ", ".join(sorted(flatten_dict(tree)))
                where = ".".join(parts[: depth + 1])
                raise TumorsweepError(
                    f"{source}: unknown config field {dotted!r} (no {where!r}); known: {known}"
                )
            if depth == len(parts) - 1:
                node[part] = copy.deepcopy(value)
            else:
                node = node[part]
    try:
        return TrialConfig.model_validate(tree)
    except ValidationError as exc:
        raise TumorsweepError(f"{source}: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `dotted.field = value: reason`."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        problems.append(f"{field}{shown}: {err['msg']}")
    return "; ".join(problems)


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {dotted.name: leaf}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def flatten(config: TrialConfig) -> dict[str, Any]:
    """The config as dotted names (the MLflow params of a trial)."""
    return flatten_dict(config.model_dump(mode="json"))


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse a `--set field=value` flag; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise TumorsweepError(f"--set expects field=value, got {text!r}")
    name, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return name.strip(), value


def to_yaml(config: TrialConfig) -> str:
    """The resolved config as YAML (an MLflow artifact and a checkpoint companion)."""
    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)
