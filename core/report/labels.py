"""Column labels in the style of the published tables: `UNET(+15% Sphere)`, `nnUNet(Global)`.

The backbone's display name, then in brackets what sets the configuration apart from Hu et
al.'s baseline (a swept knob at a non-default value, the evaluation set when not Hu's Val);
Swin-UNETR columns always say whether the encoder was pretrained, as the papers do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from tumorsweep.models.registry import REGISTRY

# Swept params whose label is set by other rules (backbone name, pretrain wording).
_NAMED_ELSEWHERE = ("model.name", "model.pretrained")


def is_missing(value: Any) -> bool:
    """True for None and NaN (pandas turns a missing param into either)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_pretrained(value: Any) -> bool | None:
    """Whether a `model.pretrained` param means pretrained weights (a path or true)."""
    if is_missing(value) or value is False or str(value).strip().lower() in ("", "false"):
        return None if is_missing(value) else False
    return True


def _short_name(name: str) -> str:
    """The last part of a dotted field, with its range for a range end (`hu_drop.low`)."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1] in ("low", "high") and len(parts) > 1 else parts[-1]


def knob_qualifier(name: str, value: Any) -> str | None:
    """How one swept knob at one value reads in a label; None for the paper's default."""
    if is_missing(value):
        return f"{_short_name(name)}=None"
    if name == "synthesis.sphere_ratio":
        return f"+{value * 100:g}% Sphere" if value else None
    if name == "synthesis.sphere_mode":  # the reading of "+N% Sphere"; replace is the default
        return None if value == "replace" else f"{value} spheres"
    if name == "synthesis.location":
        return None if value == "uniform" else str(value).upper()
    if name == "synthesis.style":
        styles = {
            "hu": None,
            "zhang": "Zhang et al.",
            "ca": "Pixel2Cancer",
            "difftumor": "DiffTumor",
        }
        return styles.get(value, str(value))
    if name == "data.real_tumors":
        return "Real" if value else "Synthetic"
    if name == "data.real_fraction":  # the public FAQ's real:synthetic ratios, 1:9 ... 9:1
        share = float(value)
        if share in (0.0, 1.0):
            return "Real" if share else "Synthetic"
        return f"Real:Synthetic {round(share * 10, 6):g}:{round((1 - share) * 10, 6):g}"
    text = json.dumps(value) if isinstance(value, list | dict) else f"{value}"
    return f"{_short_name(name)}={text}"


def eval_set_qualifier(eval_set: Any) -> str | None:
    """`Global`, `Chen's Val` (fold 0) or `Chen's Val N`; None for Hu's Val and others."""
    if is_missing(eval_set):
        return None
    if eval_set == "global":
        return "Global"
    if str(eval_set).startswith("chen-val-"):
        fold = str(eval_set).removeprefix("chen-val-")
        return "Chen's Val" if fold == "0" else f"Chen's Val {fold}"
    return None


def config_label(
    backbone: str, eval_set: Any, swept_values: Mapping[str, Any], pretrained: Any = None
) -> str:
    """One configuration's column label, e.g. `Swin-UNETR-Base (pretrain,Global)`."""
    entry = REGISTRY.get(str(backbone))
    name = entry.display if entry else str(backbone)
    qualifiers = []
    is_swin = bool(entry and entry.pretrained_encoder)  # the tables say pretrain or not
    pretrain = is_pretrained(pretrained)
    if pretrain is not None and (is_swin or "model.pretrained" in swept_values):
        qualifiers.append("pretrain" if pretrain else "no.pretrain")
    for knob, value in swept_values.items():
        if knob not in _NAMED_ELSEWHERE:
            qualifiers.append(knob_qualifier(knob, value))
    qualifiers.append(eval_set_qualifier(eval_set))
    shown = ",".join(q for q in qualifiers if q)
    if not shown:
        return name
    return f"{name} ({shown})" if is_swin else f"{name}({shown})"


def trial_labels(trials: pd.DataFrame) -> list[str]:
    """Label per trial row; distinct configurations of one experiment never share a label.

    A configuration is (experiment, config_key, backbone, eval_set). Where two would read the
    same, the evaluation set and then the config key are appended.
    """
    labels = []
    for row in trials.to_dict("records"):
        swept = {knob: row.get(knob) for knob in json.loads(row["swept"])}
        labels.append(
            config_label(str(row["backbone"]), row["eval_set"], swept, row.get("model.pretrained"))
        )
    identity = list(
        zip(
            trials["experiment"],
            trials["config_key"],
            trials["backbone"],
            trials["eval_set"],
            strict=True,
        )
    )
    for suffix in (lambda key: f" [{key[3]}]", lambda key: f" {key[1]}"):
        seen: dict[tuple[str, str], set] = {}
        for key, label in zip(identity, labels, strict=True):
            seen.setdefault((key[0], label), set()).add(key)
        labels = [
            label + suffix(key) if len(seen[(key[0], label)]) > 1 else label
            for key, label in zip(identity, labels, strict=True)
        ]
    return labels
