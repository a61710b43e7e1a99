"""Search spaces: YAML files of dotted-field overrides, searcher, metric and seeds.

A search space is validated against `TrialConfig` before Ray starts: an unknown field or an
out-of-range value fails naming the field and the file. Forms a swept field may take:

    synthesis.sphere_ratio: {grid: [0.0, 0.05]}      # exhaustive (grid searcher)
    synthesis.texture.hu_drop.low: {uniform: [40, 90]} # Optuna: uniform, loguniform,
    schedule.lr: {loguniform: [1e-4, 1e-3]}              #   randint, choice
    configs: [{synthesis.location: uniform}, {synthesis.location: gmm, ...}]  # named rows

`demo:` holds overrides of the same keys used with the demo preset (a smaller grid, say).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tumorsweep.config import (
    TrialConfig,
    apply_overrides,
    format_validation_error,
    selectable_metrics,
)
from tumorsweep.errors import TumorsweepError

GRID_KINDS = ("grid",)
SAMPLED_KINDS = ("uniform", "loguniform", "randint", "choice")
SEARCH_SPACE_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


class SearcherSpec(BaseModel):
    """`grid` (exhaustive, Ray's default searcher) or `optuna` (TPE, seeded)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["grid", "optuna"] = "grid"
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    num_samples: int = Field(1, ge=1, description="Optuna trials (grid: repeats of the grid)")


class SchedulerSpec(BaseModel):
    """Optional ASHA early stopping on the validation metric."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["asha"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class SearchSpace(BaseModel):
    """One study: what to sweep, how to search, what to optimise, what the baseline is."""

    model_config = ConfigDict(extra="forbid")
    study: str
    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, Any] = Field(default_factory=dict)
    configs: list[dict[str, Any]] = Field(default_factory=list)
    seeds: int = Field(1, ge=1)
    searcher: SearcherSpec = Field(default_factory=SearcherSpec)
    metric: str = "best_val_tumor_dice"
    mode: Literal["max", "min"] = "max"
    baseline: dict[str, Any] = Field(default_factory=dict)
    scheduler: SchedulerSpec | None = None
    demo: dict[str, Any] = Field(default_factory=dict)

    def swept_names(self) -> list[str]:
        """Dotted fields that vary between trials (seed excluded)."""
        names = list(self.sweep)
        for row in self.configs:
            names += [name for name in row if name not in names]
        return names

    def grid_size(self) -> int:
        """Configurations in an exhaustive grid (before seeds)."""
        size = max(1, len(self.configs))
        for spec in self.sweep.values():
            size *= len(spec["grid"])
        return size


def load_search_space(path_or_study: str | Path, preset: str = "paper") -> SearchSpace:
    """Read and validate a search space; a bare study name means `search_spaces/<name>.yaml`."""
    path = Path(path_or_study)
    if not path.suffix:
        path = SEARCH_SPACE_DIR / f"{path_or_study}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SEARCH_SPACE_DIR.glob("*.yaml")))
        raise TumorsweepError(f"{path}: no such search space (shipped: {known})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TumorsweepError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise TumorsweepError(f"{path}: expected a mapping at the top level")
    if preset == "demo":
        raw = {**raw, **(raw.get("demo") or {})}
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        raise TumorsweepError(f"{path}: {format_validation_error(exc)}") from None
    validate_space(space, source=str(path))
    return space


def _forms(name: str, spec: Any, source: str) -> tuple[str, list[Any]]:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise TumorsweepError(
            f"{source}: sweep field {name!r} must be one of "
            f"{{grid|choice: [...]}} or {{uniform|loguniform|randint: [lo, hi]}}, got {spec!r}"
        )
    kind, values = next(iter(spec.items()))
    if kind not in GRID_KINDS + SAMPLED_KINDS or not isinstance(values, list) or not values:
        raise TumorsweepError(f"{source}: sweep field {name!r}: bad form {kind!r}: {values!r}")
    if kind in ("uniform", "loguniform", "randint") and (
        len(values) != 2 or values[0] >= values[1]
    ):
        raise TumorsweepError(
            f"{source}: sweep field {name!r}: {kind} needs [low, high], low < high"
        )
    return kind, values


def search_metrics() -> dict[str, bool]:
    """Metrics a search may steer by (every trial reports them): the validation summaries at
    the selected checkpoint, `best_val_*`, each with whether higher is better."""
    return {f"best_{name}": higher for name, higher in selectable_metrics().items()}


def check_metric(metric: str, mode: str, source: str) -> None:
    """The search metric must be a validation metric every trial reports, optimised in its
    own direction: a search (grid ranking, Optuna, ASHA) steered by test numbers makes the
    test list a selection list and its reported numbers optimistic (leakage)."""
    known = search_metrics()
    if metric not in known:
        if not metric.startswith(("best_val_", "val_")):
            raise TumorsweepError(
                f"{source}: metric {metric!r} is not a validation metric (best_val_*); a search "
                "steered by test numbers leaks the test list into the choice of configuration"
            )
        hint = f"; did you mean best_{metric}?" if f"best_{metric}" in known else ""
        raise TumorsweepError(
            f"{source}: unknown search metric {metric!r}{hint} (valid: {', '.join(sorted(known))})"
        )
    if (mode == "max") != known[metric]:
        better = "higher" if known[metric] else "lower"
        raise TumorsweepError(
            f"{source}: metric {metric!r} is better when {better}, but mode is {mode!r}: the "
            "search would prefer the worst trials"
        )


def validate_space(space: SearchSpace, source: str) -> None:
    """Every swept value must make a valid TrialConfig, with the fixed fields applied; the
    metric must be a validation metric (never test)."""
    check_metric(space.metric, space.mode, source)
    base = apply_overrides(TrialConfig(), space.fixed, source=f"{source}: fixed")
    probes: list[dict[str, Any]] = []
    for name, spec in space.sweep.items():
        kind, values = _forms(name, spec, source)
        if space.searcher.type == "grid" and kind != "grid":
            raise TumorsweepError(
                f"{source}: sweep field {name!r} uses {kind!r}, which needs searcher type optuna"
            )
        if space.searcher.type == "optuna" and kind == "grid":
            raise TumorsweepError(
                f"{source}: sweep field {name!r}: Optuna cannot drive a grid; use choice"
            )
        probes += [{name: value} for value in values]
    probes += space.configs
    for probe in probes:
        apply_overrides(base, probe, source=f"{source}: {json.dumps(probe, default=str)}")
    if space.configs and space.searcher.type != "grid":
        raise TumorsweepError(f"{source}: `configs` rows need searcher type grid")
    for name in space.baseline:
        if name not in space.swept_names():
            raise TumorsweepError(f"{source}: baseline field {name!r} is not swept")


def param_space(space: SearchSpace, seeds: list[int], folds: int | None = None) -> dict[str, Any]:
    """Ray Tune param_space: dotted names stay flat keys; `seed` (and with `folds`, the fold
    `data.fold`) is a grid axis for grids, so every configuration runs on every seed/fold."""
    from ray import tune

    params: dict[str, Any] = {}
    for name, spec in space.sweep.items():
        kind, values = next(iter(spec.items()))
        params[name] = {
            "grid": tune.grid_search,
            "choice": tune.choice,
        }.get(kind, lambda v, k=kind: getattr(tune, k)(*v))(values)
    if space.configs:
        params["configs"] = tune.grid_search(space.configs)
    if space.searcher.type == "grid":
        params["seed"] = tune.grid_search(seeds)
        if folds:
            params["data.fold"] = tune.grid_search(list(range(folds)))
        return params
    if len(seeds) != 1 or folds:
        raise TumorsweepError(
            f"study {space.study}: --seeds {len(seeds)} / --folds {folds} need a grid "
            "searcher; an Optuna search draws one trial at a time (set searcher.num_samples)"
        )
    params["seed"] = seeds[0]
    return params


def trial_overrides(tune_config: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one Tune trial config (named `configs` rows included) into dotted overrides."""
    overrides = {k: v for k, v in tune_config.items() if k != "configs"}
    overrides.update(tune_config.get("configs") or {})
    return overrides


def config_key(overrides: Mapping[str, Any], swept: list[str]) -> str:
    """Canonical JSON of the swept values (seed excluded): trials that differ by seed share it."""
    return json.dumps({k: overrides.get(k) for k in swept}, sort_keys=True, default=str)


def expand_grid(space: SearchSpace) -> list[dict[str, Any]]:
    """All configurations of a grid study (for dry runs and docs)."""
    axes = [[(name, v) for v in spec["grid"]] for name, spec in space.sweep.items()]
    rows = space.configs or [{}]
    return [dict(row) | dict(combo) for row in rows for combo in itertools.product(*axes)]


def trial_count(space: SearchSpace, seeds: int, folds: int | None) -> int:
    """How many trials the sweep runs: grid rows x seeds x folds (x `num_samples`, which
    repeats a grid), or the Optuna search's samples."""
    if space.searcher.type == "grid":
        return len(expand_grid(space)) * seeds * (folds or 1) * space.searcher.num_samples
    return space.searcher.num_samples


def trial_probes(space: SearchSpace) -> list[dict[str, Any]]:
    """Overrides that stand for every trial of a study: each grid row, or (Optuna) the base
    plus each sampled field at each listed value or bound. Checked before Ray starts."""
    if space.searcher.type == "grid":
        return expand_grid(space)
    probes: list[dict[str, Any]] = [{}]
    for name, spec in space.sweep.items():
        kind, values = next(iter(spec.items()))
        probes += [{name: value} for value in values]
    return probes
