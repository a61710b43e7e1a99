"""Cross-validation folds of a dataset: fold k's test list, and the rest split into training
and validation for that fold.

Fold k reports on its own held-out cases (the test list), so over K folds every held-out case
is scored exactly once, as in the 5-fold results of the public tables. The held-out cases
come from a folds file, one per fold with `{fold}` in its path: a SyntheticTumors-style JSON
(`datafolds/real_{fold}.json`, whose `validation` list is the fold's held-out set) or a list
of case file names (DiffTumor's `real_tumor_val_{fold}.txt`); without one, the tumour cases
are dealt into K folds, deterministic per dataset and seed. Checkpoints are selected on a
seeded `val_fraction` of the fold's remaining tumour cases, never on its test list.

DiffTumor's fold lists are usable as they are: with `folds_file` = `.../real_tumor_val_{fold}.txt`
and `healthy_root` set, the sibling `real_tumor_train_{fold}.txt` is the training list (lines
`image label`; a label path holding `liver_label`, `kidney_label` or `pancreas_label` is a
healthy CT under `healthy_root`, as their main.py reads it; the others are the dataset's own
cases, found by name), instead of every case not held out.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from tumorsweep.data.layouts import DatasetSplit, _entry, case_name
from tumorsweep.errors import TumorsweepError


def _unique(entries: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for entry in entries:
        seen.setdefault(entry["image"], entry)
    return list(seen.values())


def _names_from_file(path: Path) -> list[str]:
    """Held-out case names of one fold's file (JSON `validation` list, or one name a line)."""
    if not path.is_file():
        raise TumorsweepError(f"data.folds_file: {path} not found")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            items = json.loads(text)["validation"]
            return [case_name(item["image"] if isinstance(item, dict) else item) for item in items]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TumorsweepError(
                f"data.folds_file: {path} is not a folds JSON with a 'validation' list ({exc})"
            ) from None
    return [case_name(line.strip()) for line in text.splitlines() if line.strip()]


HEALTHY_MARKERS = ("liver_label", "kidney_label", "pancreas_label")  # their main.py's test


def _difftumor_training(
    val_file: Path, healthy_root: str, by_name: dict[str, dict]
) -> tuple[list[dict], list[dict]] | None:
    """(real-tumour entries, healthy entries) of the `real_tumor_train_k.txt` beside a
    `real_tumor_val_k.txt`, or None when `val_file` is not such a list."""
    if "_val_" not in val_file.name:
        return None
    train_file = val_file.with_name(val_file.name.replace("_val_", "_train_"))
    if not train_file.is_file():
        raise TumorsweepError(f"data.healthy_root: training list {train_file} not found")
    real, healthy = [], []
    for number, line in enumerate(train_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise TumorsweepError(f"{train_file}:{number}: expected 'image label', got {line!r}")
        image, label = parts
        if any(marker in label for marker in HEALTHY_MARKERS):
            paths = [Path(healthy_root) / image, Path(healthy_root) / label]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise TumorsweepError(f"{train_file}:{number}: {missing[0]} not found")
            healthy.append(_entry(paths[0], paths[1], tumor=False))
        else:
            name = case_name(label)
            if name not in by_name:
                raise TumorsweepError(f"{train_file}:{number}: the dataset lacks case {name}")
            real.append(by_name[name])
    return real, healthy


def _dealt(tumour_cases: list[dict], fold: int, folds: int, seed: int) -> list[str]:
    """Fold `fold` of the tumour cases dealt into `folds` groups after a seeded shuffle."""
    names = sorted(e["case"] for e in tumour_cases)
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in sorted(order[fold::folds].tolist())]


def fold_split(
    split: DatasetSplit,
    fold: int,
    folds: int,
    folds_file: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    healthy_root: str | None = None,
) -> DatasetSplit:
    """The dataset's lists for fold `fold` of `folds` (see the module docstring)."""
    if not 0 <= fold < folds:
        raise TumorsweepError(f"data.fold={fold}: expected 0 <= fold < data.folds={folds}")
    pool = _unique(split.train + split.validation + split.test)
    tumour = [e for e in pool if split.has_tumor(e)]
    if folds_file:
        wanted = _names_from_file(Path(folds_file.format(fold=fold)))
    else:
        if len(tumour) < folds:
            raise TumorsweepError(
                f"data.folds={folds}: {split.root} has only {len(tumour)} tumour cases"
            )
        wanted = _dealt(tumour, fold, folds, seed)
    by_name = {e["case"]: e for e in pool}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise TumorsweepError(
            f"fold {fold}: {split.root} lacks held-out cases {' '.join(missing[:10])}"
        )
    test = [by_name[name] for name in wanted]
    held = {e["image"] for e in test}
    listed = None
    if folds_file and healthy_root:
        listed = _difftumor_training(Path(folds_file.format(fold=fold)), healthy_root, by_name)
    if listed is not None:  # DiffTumor's own training list: its real and healthy cases
        tumour, pool = listed[0], listed[0] + listed[1]
    candidates = [e for e in tumour if e["image"] not in held]
    count = min(len(candidates), max(1, round(val_fraction * len(candidates))))
    order = np.random.default_rng([seed, fold]).permutation(len(candidates))
    validation = [candidates[i] for i in sorted(order[:count].tolist())]
    held |= {e["image"] for e in validation}
    train = [e for e in pool if e["image"] not in held]
    return replace(
        split, train=train, validation=validation, test=test, eval_set=f"{folds}-fold",
        warnings=[],
    )  # fmt: skip
