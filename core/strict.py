"""The one strict base of every settings model (trial, data, synthesis, generator): unknown
fields are refused, assignments validated, NaN and infinity refused. Also the one range type
(`Range`, `IntRange`): an interval a value is drawn from is one field, `name.low` / `name.high`,
never a `name_min` / `name_max` pair."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

LEGACY_RANGE_SUFFIXES = {"_min": "low", "_max": "high"}


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown fields, validates assignments and refuses
    NaN / infinity (a typo in a YAML or `--set` is an error, never a silent default).

    A config logged before ranges became one field (`hu_drop_min: 65`, `hu_drop_max: 145`)
    is still read: the two old keys are mapped onto the range field (`hu_drop`). Overrides,
    search spaces and presets refuse the old names (`tumorsweep.config.apply_overrides`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _legacy_ranges(cls, data: Any) -> Any:
        names = range_fields(cls)
        if not names or not isinstance(data, dict):
            return data
        old = {f"{name}{suffix}" for name in names for suffix in LEGACY_RANGE_SUFFIXES}
        if not old.intersection(data):
            return data
        data = dict(data)
        for name in names:
            ends = {
                end: data.pop(f"{name}{suffix}")
                for suffix, end in LEGACY_RANGE_SUFFIXES.items()
                if f"{name}{suffix}" in data
            }
            if not ends:
                continue
            if name in data:
                raise ValueError(f"{name} is given both as one range and as {name}_min/_max")
            default = cls.model_fields[name].get_default(call_default_factory=True)
            data[name] = {"low": default.low, "high": default.high, **ends}
        return data


class Range(StrictModel):
    """A closed interval [low, high] (a value is drawn from it, usually uniformly). Given as
    `{low: a, high: b}` or as a two-element list `[a, b]`; each end is its own dotted field
    (`synthesis.texture.hu_drop.low`), so a search space can sweep the ends separately."""

    low: float
    high: float

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            if len(data) != 2:
                raise ValueError(f"a range is [low, high], got {list(data)!r}")
            return {"low": data[0], "high": data[1]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must be <= high ({self.high:g})")
        return self


class IntRange(Range):
    """A closed interval of integers [low, high] (a count drawn uniformly from it)."""

    low: int  # type: ignore[assignment]
    high: int  # type: ignore[assignment]


def within(
    *, ge: float | None = None, gt: float | None = None, le: float | None = None
) -> AfterValidator:
    """Bounds on both ends of a range field: `Annotated[Range, within(ge=0, le=1000)]`."""

    def check(value: Range) -> Range:
        for end in ("low", "high"):
            number = getattr(value, end)
            if ge is not None and number < ge:
                raise ValueError(f"{end} ({number:g}) must be >= {ge:g}")
            if gt is not None and number <= gt:
                raise ValueError(f"{end} ({number:g}) must be > {gt:g}")
            if le is not None and number > le:
                raise ValueError(f"{end} ({number:g}) must be <= {le:g}")
        return value

    return AfterValidator(check)


def is_range(annotation: Any) -> bool:
    """Whether a field's annotation is a range type (a leaf for the reference, not a model)."""
    return isinstance(annotation, type) and issubclass(annotation, Range)


@cache
def range_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The names of `model`'s range fields."""
    return tuple(name for name, info in model.model_fields.items() if is_range(info.annotation))


def legacy_range_key(model: type[BaseModel], dotted: str) -> str | None:
    """The new dotted key of an old `<range>_min` / `<range>_max` name under `model`
    (`synthesis.texture.hu_drop_min` -> `synthesis.texture.hu_drop.low`), or None."""
    suffix = dotted[-4:]
    if suffix not in LEGACY_RANGE_SUFFIXES:
        return None
    node: Any = model
    *parents, leaf = dotted[:-4].split(".")
    for part in parents:
        info = node.model_fields.get(part) if _is_model(node) else None
        if info is None:
            return None
        node = info.annotation
    if not _is_model(node) or leaf not in range_fields(node):
        return None
    return f"{dotted[:-4]}.{LEGACY_RANGE_SUFFIXES[suffix]}"


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)
