"""A study's case lists, resolved once on the driver and shipped to every trial: `CaseLists`.

Resolution reads the dataset layout (or writes the built-in phantom once), takes the named
evaluation set as the test list and a disjoint validation list for checkpoint selection, adds
the training cases of every extra source (`data.sources`, `tumorsweep.data.sources`), and
holds the leakage guard across all of them: a selection list that overlaps the reported list,
or training that overlaps either, is refused unless `data.allow_overlap` is set (the override
is then recorded); one case reached from two sources is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from tumorsweep.data.config import DataConfig
from tumorsweep.data.layouts import DatasetSplit, load_split
from tumorsweep.errors import TumorsweepError

SELECTIONS = ("validation", "test", "last")
REAL_TUMOR_KEY = "real_tumor"  # training item flag: a real-tumour case in a real/synthetic mix


class CaseEntry(TypedDict):
    """One case: resolved image and label paths, its name (`source/name` for an extra
    source's case), LiTS number, tumour flag and the name of the source it came from."""

    image: str
    label: str
    case: str
    case_id: int | None
    tumor: bool | None
    source: str


@dataclass(frozen=True)
class CaseLists:
    """The lists every trial of a study shares (frozen: trials never edit them).

    `train` holds the healthy training cases (tumours are synthesised into them),
    `train_tumor` the real-tumour training cases (the real control, GMM location fits),
    `validation` the checkpoint-selection list, `test` the reported list named `eval_set`.
    `selection` is where checkpoints are chosen: "validation", "test" (override) or "last"
    (no validation list: the final epoch's weights are reported).
    """

    train: tuple[CaseEntry, ...]
    train_tumor: tuple[CaseEntry, ...]
    validation: tuple[CaseEntry, ...]
    test: tuple[CaseEntry, ...]
    eval_set: str
    root: str
    selection: str = "validation"
    warnings: tuple[str, ...] = field(default_factory=tuple)
    sources: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def pool(self, real_share: float) -> dict[str, dict[str, int]]:
        """The training pool of a trial whose `data.real_share()` is `real_share`, per source
        (data.root first, every source listed): {source: {arm: cases}} over the arms the trial
        draws from ("healthy" for synthesis, "real_tumor" for the real-tumour control)."""
        arms = [("healthy", self.train)] if real_share < 1 else []
        arms += [("real_tumor", self.train_tumor)] if real_share > 0 else []
        names = [s["name"] for s in self.sources]
        names += [e["source"] for _, entries in arms for e in entries if e["source"] not in names]
        pool = {name: {arm: 0 for arm, _ in arms} for name in dict.fromkeys(names)}
        for arm, entries in arms:
            for entry in entries:
                pool[entry["source"]][arm] += 1
        return pool

    def selection_cases(self) -> tuple[CaseEntry, ...]:
        """The cases checkpoints are selected on (empty for "last")."""
        return {"validation": self.validation, "test": self.test}.get(self.selection, ())

    def held_out(self) -> set[str]:
        """Names, image and label paths of every validation and test case (nothing may be
        trained or fitted on them)."""
        keys = ("case", "image", "label")
        return {e[key] for e in self.validation + self.test for key in keys}


def cache_dir() -> Path:
    """Where tumorsweep keeps what it can rebuild: the phantom CTs, check results, Ray results."""
    return Path(os.environ.get("TUMORSWEEP_CACHE", Path.cwd() / ".tumorsweep"))


def phantom_root(data: DataConfig) -> Path:
    """Generate the built-in phantom dataset once per parameter set, then reuse it."""
    from tumorsweep.data.phantom import write_phantom_dataset

    params = {
        "cases": data.phantom_cases,
        "tumor_cases": data.phantom_tumor_cases,
        "shape": list(data.phantom_shape),
        "spacing": list(data.phantom_spacing),
        "seed": data.phantom_seed,
    }
    if data.phantom_partition is not None:  # (older caches keep their digest without it)
        params["partition"] = list(data.phantom_partition)
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = cache_dir() / "phantom" / digest
    if not (root / "dataset.json").is_file():
        print(f"Writing phantom CTs to {root} ...", flush=True)
        partial = root.with_name(f".{digest}.{os.getpid()}.partial")
        write_phantom_dataset(
            partial,
            cases=params["cases"],
            seed=params["seed"],
            shape=tuple(params["shape"]),
            spacing=tuple(params["spacing"]),
            tumor_cases=params["tumor_cases"],
            partition=data.phantom_partition,
        )
        try:  # whole or not at all: an interrupted write is rebuilt next time
            partial.replace(root)
        except OSError:  # another process finished the same phantom first
            shutil.rmtree(partial, ignore_errors=True)
    return root


def _entries(entries: list[dict]) -> tuple[CaseEntry, ...]:
    return tuple(
        CaseEntry(**{key: e.get(key, "") if key == "source" else e[key] for key in _KEYS})
        for e in entries
    )


_KEYS = tuple(CaseEntry.__annotations__)


def _guard_sources(
    split: DatasetSplit, root_name: str, root_train: list[dict], extras: list, allow: bool
) -> list[str]:
    """Refuse one case reached from two sources (see tumorsweep.data.sources); a training case
    of an extra source that is a validation/test case of data.root is leakage, overridable."""
    from tumorsweep.data.sources import describe_pair, same_cases

    groups = [(root_name, root_train + split.validation + split.test)]
    groups += [(extra.name, extra.healthy + extra.tumor) for extra in extras]
    held = {e["image"] for e in split.validation + split.test}
    notes = []
    for first, second, why in same_cases(groups):
        line = describe_pair(first, second, why)
        if first["image"] in held or second["image"] in held:
            if not allow:
                raise TumorsweepError(
                    f"a validation/test case of data.root is a training case of another "
                    f"source: {line}; drop it from that source or set data.allow_overlap=true"
                )
            notes.append(f"override data.allow_overlap: {line}")
            continue
        raise TumorsweepError(
            f"one case in the training pool twice, from two sources: {line}; drop it from one "
            "of them (data.root's own tumour-free cases: data.root_healthy=false)"
        )
    return notes


def _source_records(root_name: str, split: DatasetSplit, extras: list) -> tuple[dict, ...]:
    records = [{"name": root_name, "path": str(split.root), "layout": split.fmt,
                "role": "evaluation"}]  # fmt: skip
    records += [
        {"name": e.name, "path": e.path, "layout": e.layout, "role": e.role} for e in extras
    ]
    return tuple(records)


def pool_with_sources(
    data: DataConfig, split: DatasetSplit
) -> tuple[list[dict], list[dict], list[str], tuple[dict[str, str], ...]]:
    """(healthy training, tumour training, notes, source records) of data.root plus
    data.sources, every entry tagged with its source."""
    from tumorsweep.data.sources import load_source

    root_name = re.sub(r"[^A-Za-z0-9._-]+", "_", split.name).strip("._-") or "data"
    for entry in split.train + split.validation + split.test:
        entry["source"] = root_name
    healthy = split.train_cases(real_tumors=False) if data.root_healthy else []
    tumor = split.train_cases(real_tumors=True)
    extras = [load_source(source) for source in data.sources]
    names = [root_name] + [extra.name for extra in extras]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise TumorsweepError(
            f"data.sources: two sources are called {clash[0]!r} (data.root's dataset is "
            f"{root_name!r}); give each source a distinct name"
        )
    notes = [note for extra in extras for note in extra.notes]
    if extras:
        notes += _guard_sources(split, root_name, healthy + tumor, extras, data.allow_overlap)
    for extra in extras:
        healthy += extra.healthy
        tumor += extra.tumor
    return healthy, tumor, notes, _source_records(root_name, split, extras)


def _guard_overlaps(split: DatasetSplit, allow_overlap: bool) -> list[str]:
    """Refuse shared cases between lists (or, with the override, describe them)."""
    found = split.overlaps()
    if not found:
        return []
    described = [
        f"{len(names)} case(s) in both the {pair.replace('/', ' and the ')} list: "
        f"{' '.join(names[:10])}"
        for pair, names in found.items()
    ]
    if not allow_overlap:
        raise TumorsweepError(
            f"{split.root}: {'; '.join(described)}. Selecting or reporting on cases a model "
            "trained or was selected on inflates the numbers; fix the dataset lists or set "
            "data.allow_overlap=true (recorded in MLflow and in the report)"
        )
    return [f"override data.allow_overlap: {text}" for text in described]


def _selection(split: DatasetSplit, select_on: str, allow_test_selection: bool) -> tuple[str, str]:
    """Where checkpoints are selected, and a note when that is not the validation list."""
    if select_on not in SELECTIONS:
        raise TumorsweepError(f"eval.select_on={select_on!r}: expected one of {SELECTIONS}")
    if select_on == "test":
        if not allow_test_selection:
            raise TumorsweepError(
                f"eval.select_on='test': selecting checkpoints on the test list "
                f"({split.eval_set}, {len(split.test)} cases) inflates the reported numbers; "
                "select on 'validation' or set eval.allow_test_selection=true"
            )
        return "test", (
            f"override eval.allow_test_selection: checkpoints are selected on the test list "
            f"{split.eval_set}: reported numbers are optimistic"
        )
    if select_on == "validation" and not split.validation:
        return "last", (
            f"no validation cases outside the test list {split.eval_set}: no checkpoint "
            "selection, the final epoch's weights are reported"
        )
    return select_on, ""


def resolve_cases(
    data: DataConfig, select_on: str = "validation", allow_test_selection: bool = False
) -> CaseLists:
    """The study's case lists, with the leakage guard applied (see the module docstring)."""
    root = Path(data.root) if data.root else phantom_root(data)
    split = load_split(
        root,
        fmt=data.format,
        split=data.split,
        val_fraction=data.val_fraction,
        seed=data.split_seed,
        base_dir=data.base_dir,
    )
    if data.folds is not None:
        from tumorsweep.data.folds import fold_split

        split = fold_split(
            split, data.fold or 0, data.folds, data.folds_file, data.val_fraction,
            data.split_seed, data.healthy_root,
        )  # fmt: skip
    notes = _guard_overlaps(split, data.allow_overlap)
    selection, note = _selection(split, select_on, allow_test_selection)
    notes += [note] if note else []
    if not split.test:
        raise TumorsweepError(
            f"{root}: no test cases (the dataset has no test list and no --split was named): "
            "nothing to report on"
        )
    healthy, tumor, source_notes, sources = pool_with_sources(data, split)
    notes += source_notes
    overlap_warnings = [w for w in split.warnings if " also in " in w]
    return CaseLists(
        train=_entries(healthy),
        train_tumor=_entries(tumor),
        validation=_entries(split.validation),
        test=_entries(split.test),
        eval_set=split.eval_set,
        root=str(root),
        selection=selection,
        warnings=tuple(w for w in split.warnings if w not in overlap_warnings) + tuple(notes),
        sources=sources,
    )
