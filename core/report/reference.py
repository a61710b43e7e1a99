"""The published numbers (core/reference/published.yaml) and matching them to our configurations.

A published column matches one of our configurations when backbone and evaluation set agree,
every param the column lists has the same value in our trials, and those params cover every
knob the study swept away from its default (so a texture study never borrows the baseline's
published number).
The replication's own training is preferred over evaluated released checkpoints, and both
over the public FAQ's figures (which give tumour Dice only).
Each published value also carries the evaluation protocol it was scored with (`protocol`);
whether it may stand beside ours is decided where our protocol is known (tumorsweep.report.summary).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd
import yaml

from tumorsweep.report.labels import is_missing, is_pretrained

REFERENCE_FILE = "reference/published.yaml"
SOURCE_PREFERENCE = ("replication", "checkpoint", "faq")
# Evaluation protocols (the `eval.protocol` param); trials that logged none used the default.
PROTOCOLS = {
    "tumorsweep": "tumorsweep's own evaluation",
    "hu2023": (
        "Hu et al.'s validation.py: logits inverted with linear interpolation, then argmax, "
        "largest 6-connected component of label 1, liver scored as label == 1"
    ),
    "chen2024": (
        "Chen et al.'s DiffTumor validation.py: logits inverted with linear interpolation, then "
        "argmax, liver = an external organ mask per case, tumours kept only inside it"
    ),
}
DEFAULT_PROTOCOL = "tumorsweep"


@cache
def published_table() -> pd.DataFrame:
    """Every published value, one row per column x metric.

    Columns: source, table, label, backbone, eval_set, protocol, params (dict), metric,
    value, paper (the original paper's figure, NaN where the table gives none), pool (the
    published training pool: {"cases", "text"}, None where unknown), no_public_code (why no
    public code makes the value, None where some does) and reading (our param that says how
    we read such a column).
    """
    text = resources.files("tumorsweep").joinpath(REFERENCE_FILE).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    metrics = document["metrics"]
    rows = []
    for table in document["tables"]:
        if table.get("protocol", document["protocol"]) not in PROTOCOLS:
            raise ValueError(f"{REFERENCE_FILE}: {table['table']}: unknown protocol")
        for column in table["columns"]:
            if len(column["values"]) != len(metrics):
                raise ValueError(f"{REFERENCE_FILE}: {column['label']} needs {len(metrics)} values")
            for metric, value in zip(metrics, column["values"], strict=True):
                if value is None:  # a figure the source does not give
                    continue
                rows.append(
                    {
                        "source": table["source"],
                        "table": table["table"],
                        "label": column["label"],
                        "backbone": column["backbone"],
                        "eval_set": column.get("eval_set", table["eval_set"]),
                        "protocol": table.get("protocol", document["protocol"]),
                        "params": {**table.get("params", {}), **column.get("params", {})},
                        "metric": metric,
                        "value": float(value),
                        "paper": float(column.get("paper", {}).get(metric, math.nan)),
                        "pool": column.get("pool", table.get("pool")),
                        "no_public_code": column.get("no_public_code"),
                        "reading": column.get("reading"),
                    }
                )
    return pd.DataFrame.from_records(rows)


# Params that may differ from the paper preset without changing what a published number
# measures: where the data are and how they are split, cached and loaded, file paths of
# fitted models (their knobs are params of their own), bookkeeping, the seed, and what the
# report matches or notes on its own (backbone, pretraining, protocol, overrides, and the
# training pool's sources, noted from the trials' train_pool.* params).
_NEUTRAL_PARAMS = (
    "data.root", "data.format", "data.base_dir", "data.sources", "data.root_healthy",
    "data.split", "data.val_fraction", "data.split_seed",
    "data.folds", "data.fold", "data.folds_file", "data.allow_overlap", "data.cache_rate",
    "data.pipeline", "data.cache", "data.cache_dir", "data.cache_memory_gb",
    "data.loader_workers", "synthesis.location_model", "synthesis.generator", "model.name",
    "model.pretrained", "eval.protocol", "eval.select_on", "eval.allow_test_selection",
    "eval.log_best_model", "eval.sw_batch_size", "seed",
)  # fmt: skip


@cache
def _preset_params(preset: str) -> dict[str, str]:
    from tumorsweep.config import flatten, make_config

    return {name: _as_text(value) for name, value in flatten(make_config(preset)).items()}


def reference_preset(preset: str | None) -> str:
    """The preset a study's trials are compared with for deviations: the study's own preset
    where it is a sourced published protocol (`paper`, `hu2023-commands`, `chen2024`: a
    `hu2023-commands` trial's learning rate is no deviation from the commands it follows),
    else `paper` (the demo and presets not sourced from a publication)."""
    from tumorsweep.config import PRESET_DOCUMENTS

    return preset if preset in PRESET_DOCUMENTS else "paper"


def _as_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def protocol_deviations(
    params: Mapping[str, Any], swept: list[str], preset: str | None = "paper"
) -> list[str]:
    """`name=value` of every param of a trial that differs from its study's published preset
    (`reference_preset(preset)`: `preset` is the study's `tumorsweep.preset` tag) and is
    neither swept nor neutral (`_NEUTRAL_PARAMS`, the phantom's size): what sets our column
    apart from a published one besides the swept knob."""
    paper = _preset_params(reference_preset(preset))
    found = []
    for name, value in params.items():
        if name in swept or name in _NEUTRAL_PARAMS or name.startswith("data.phantom_"):
            continue
        if name in paper and _as_text(value) != paper[name]:
            found.append(f"{name}={_as_text(value)}")
    return sorted(found)


def reference_param_names() -> tuple[str, ...]:
    """Params the published columns are keyed on (kept in the tidy runs table)."""
    names = {name for params in published_table()["params"] for name in params}
    return tuple(sorted(names))


@cache
def _defaults() -> dict[str, str]:
    from tumorsweep.config import TrialConfig, flatten

    return {name: _as_text(value) for name, value in flatten(TrialConfig()).items()}


def _at_default(name: str, params: Mapping[str, Any]) -> bool:
    """Whether our value of `name` is TrialConfig's default (a missing value is when the
    default is None: trials from before a knob existed ran without it)."""
    value = params.get(name)
    if is_missing(value):
        return _defaults().get(name) == _as_text(None)
    return _defaults().get(name) == _as_text(value)


def _same(name: str, ours: Any, published: Any) -> bool:
    if name == "model.pretrained":
        return is_pretrained(ours) == bool(published)
    if is_missing(ours):
        return False
    if isinstance(published, float) and isinstance(ours, int | float):
        return math.isclose(float(ours), published, abs_tol=1e-9)
    return ours == published


def match_published(
    backbone: str,
    eval_set: str,
    params: Mapping[str, Any],
    swept: list[str],
    column: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """Published rows (one per metric) for one configuration; empty when none matches.

    `params` holds our configuration's values; `swept` the study's knobs. `column` (table,
    label) names the published column outright, as an evaluated released checkpoint does;
    it still has to be of the same backbone and evaluation set. Columns as in
    `published_table()`.
    """
    table = published_table()
    # the protocol is matched on its own (published_comparable); a swept knob at its default
    # value needs no mention in a column (a study whose arms differ in several fields sets
    # them in some rows only)
    knobs = {k for k in set(swept) - {"model.name", "eval.protocol"} if not _at_default(k, params)}
    candidates = table[(table["backbone"] == backbone) & (table["eval_set"] == eval_set)]
    if column is not None:
        named = (candidates["table"] == column[0]) & (candidates["label"] == column[1])
        return candidates[named].reset_index(drop=True)
    for source in SOURCE_PREFERENCE:
        rows = candidates[candidates["source"] == source]
        matched = rows[
            [
                knobs <= set(p) and all(_same(k, params.get(k), v) for k, v in p.items())
                for p in rows["params"]
            ]
        ]
        if not matched.empty:
            first_label = matched["label"].iloc[0]
            return matched[matched["label"] == first_label].reset_index(drop=True)
    return table.iloc[0:0]
