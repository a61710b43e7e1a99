"""A training pool drawn from several datasets at once (`data.sources`), each in its own layout.

`data.root` stays the evaluation source: its validation and test lists are the study's, and its
training cases train as before. Every extra source adds its training list only: a `healthy`
source to the synthetic arm's pool (its cases must hold no tumour: liver-only labels 0/1 are
what they usually have), a `train` source to both arms by tumour content. Case names of an
extra source are qualified by the source name (`btcv/img0001`), so cases of different datasets
never share an identity.

One case file must not enter the study twice. Two entries are the same case when their image
files are the same file (the same path once symlinks are resolved), hold the same bytes (files
of equal size are hashed, BLAKE2b over the whole file; others cannot be equal), or carry the
same LiTS-numbered name (`liver_32` in two sources: the rule `DatasetSplit.overlaps` applies
within one dataset). Such a pair is refused with one line naming both; a pair that puts a
validation or test case of `data.root` into training is the leakage `data.allow_overlap`
overrides, any other pair (the same case twice in the training pool) has no override.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tumorsweep.data.config import DataSource
from tumorsweep.data.layouts import DatasetSplit, read_layout
from tumorsweep.errors import TumorsweepError

_HASH_BLOCK = 1 << 22


@dataclass(frozen=True)
class SourceCases:
    """One extra source's training cases, split by arm, and what was left out of it."""

    name: str
    path: str
    layout: str
    role: str
    healthy: list[dict]
    tumor: list[dict]
    notes: list[str]


def source_name(source: DataSource) -> str:
    """The source's name: given, else its description file's stem or its folder's name."""
    if source.name:
        return source.name
    path = Path(source.path).expanduser()
    stem = path.stem if path.suffix == ".json" else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "source"


def load_source(source: DataSource) -> SourceCases:
    """Read one extra source's training list; its cases qualified as `name/case`, tagged with
    the source, and split into healthy and tumour cases (a healthy source refuses tumours)."""
    name = source_name(source)
    dataset, fmt, data_root, lists = read_layout(source.path, source.layout, source.base_dir)
    notes = [
        f"data.sources {name}: its {key} list ({len(lists[key])} case(s)) is not used (validation "
        "and test lists come from data.root)"
        for key in ("validation", "test")
        if lists[key]
    ]
    entries = [
        {**e, "case": f"{name}/{e['case']}", "source": name, "base_case": e["case"]}
        for e in lists["training"]
    ]
    if not entries:
        raise TumorsweepError(f"data.sources {name} ({source.path}): no training cases listed")
    # tumour content from the labels themselves (never from LiTS case numbers): a healthy
    # source is checked voxel by voxel
    split = DatasetSplit(dataset, data_root, "folds", entries, [], [], "")
    tumor = split.train_cases(real_tumors=True)
    if source.role == "healthy" and tumor:
        shown = ", ".join(f"{e['case']} ({e['label']})" for e in tumor[:3])
        raise TumorsweepError(
            f"data.sources {name} (role healthy): {len(tumor)} case(s) hold tumour (label 2): "
            f"{shown}; a healthy source must be tumour-free (set role: train to use them)"
        )
    healthy = split.train_cases(real_tumors=False)
    return SourceCases(name, str(source.path), fmt, source.role, healthy, tumor, notes)


def _content_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _lits_name(entry: dict) -> str | None:
    """The LiTS-numbered bare name of a case (`liver_32`), else None."""
    if entry.get("case_id") is None:
        return None
    return entry.get("base_case") or entry["case"]


def same_cases(groups: list[tuple[str, list[dict]]]) -> list[tuple[dict, dict, str]]:
    """Pairs of entries from different sources that are one case, with why: (first, second,
    "same file" | "same content" | "same LiTS case"). `groups` are (source, entries)."""
    tagged = [(source, e) for source, entries in groups for e in entries]
    found: list[tuple[dict, dict, str]] = []
    seen_pairs: set[tuple[str, str]] = set()

    def add(a: tuple[str, dict], b: tuple[str, dict], why: str) -> None:
        if a[0] == b[0]:
            return
        key = tuple(sorted((a[1]["image"], b[1]["image"])))
        if key in seen_pairs:
            return
        seen_pairs.add(key)
        found.append((a[1], b[1], why))

    by_real: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    by_name: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    by_size: dict[int, list[tuple[str, dict]]] = defaultdict(list)
    for item in tagged:
        by_real[os.path.realpath(item[1]["image"])].append(item)
        name = _lits_name(item[1])
        if name is not None:
            by_name[name].append(item)
    for items in by_real.values():
        for other in items[1:]:
            add(items[0], other, "same file")
    for items in by_name.values():
        for other in items[1:]:
            add(items[0], other, "same LiTS case")
    firsts = [items[0] for items in by_real.values()]
    for item in firsts:
        by_size[os.path.getsize(item[1]["image"])].append(item)
    for items in by_size.values():
        if len({source for source, _ in items}) < 2:
            continue
        by_digest: dict[str, list[tuple[str, dict]]] = defaultdict(list)
        for item in items:
            by_digest[_content_digest(item[1]["image"])].append(item)
        for same in by_digest.values():
            for other in same[1:]:
                add(same[0], other, "same content")
    return found


def describe_pair(first: dict, second: dict, why: str) -> str:
    """One line naming both entries of a pair."""
    return (
        f"{first['case']} ({first['image']}, source {first.get('source') or '?'}) and "
        f"{second['case']} ({second['image']}, source {second.get('source') or '?'}): {why}"
    )
