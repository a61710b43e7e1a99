"""The dataset layouts users already have, split into train / validation / test case lists.

Layouts: MSD Task03 (`dataset.json`), LiTS (`volume-N.nii` / `segmentation-N.nii`), nnU-Net v2
raw, and SyntheticTumors-style JSON folds. A named evaluation set (`tumorsweep.data.splits`) becomes
the test list; checkpoints are selected on a separate validation list. Overlaps between the
lists are found here and listed (`DatasetSplit.overlaps`); `tumorsweep.data.cases` refuses them
for a study, because the public studies select and report on the same cases.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorsweep.data import naming
from tumorsweep.data.io import resolve_path
from tumorsweep.data.naming import NIFTI_SUFFIXES
from tumorsweep.data.splits import NAMED_SPLITS, TUMOR_FREE
from tumorsweep.errors import TumorsweepError

FORMATS = ("msd", "lits", "nnunet", "folds")
_LITS_NUMBERED = re.compile(r"(?:liver|volume|segmentation)[_-]0*(\d+)$")
_LOG = logging.getLogger(__name__)


def case_name(path: str | Path) -> str:
    """A listed case's name: the file name without its NIfTI suffix and without nnU-Net's
    `_0000` channel suffix (`tumorsweep.data.naming`)."""
    return naming.case_name(path, nnunet_channel=True)


def lits_case_id(name: str) -> int | None:
    """LiTS / MSD case number N of `liver_N`, `volume-N` or `segmentation-N`, else None."""
    match = _LITS_NUMBERED.search(name)
    return int(match.group(1)) if match else None


def _entry(image: Path, label: Path, tumor: bool | None) -> dict:
    name = case_name(image)  # as listed: a symlinked file keeps the name it is listed under
    return {
        "image": str(resolve_path(image)),
        "label": str(resolve_path(label)),
        "case": name,
        "case_id": lits_case_id(name),
        "tumor": tumor,
    }


@dataclass
class DatasetSplit:
    """A dataset split into training, validation (checkpoint selection) and test (reporting)."""

    name: str
    root: Path
    fmt: str
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    eval_set: str
    warnings: list[str] = field(default_factory=list)
    _tumor_cache: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def has_tumor(self, entry: dict) -> bool:
        """Whether a case carries real tumour (label 2): its flag, LiTS knowledge, or its label."""
        if entry.get("tumor") is not None:
            return bool(entry["tumor"])
        if self.fmt in ("msd", "lits") and entry.get("case_id") is not None:
            return entry["case_id"] not in TUMOR_FREE
        label = entry["label"]
        if label not in self._tumor_cache:
            from tumorsweep.data.io import read_labels

            self._tumor_cache[label] = bool((read_labels(label) == 2).any())
        return self._tumor_cache[label]

    def train_cases(self, real_tumors: bool) -> list[dict]:
        """Training cases for one arm: healthy ones (synthesis) or tumour ones (real control)."""
        return [e for e in self.train if self.has_tumor(e) == real_tumors]

    def overlaps(self) -> dict[str, list[str]]:
        """Case names shared by two lists, keyed "validation/train", "test/train" and
        "validation/test" (only the pairs that share any)."""
        pairs = {
            "validation/train": (self.validation, self.train),
            "test/train": (self.test, self.train),
            "validation/test": (self.validation, self.test),
        }
        found = {key: _overlap(first, second) for key, (first, second) in pairs.items()}
        return {key: names for key, names in found.items() if names}

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        _LOG.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TumorsweepError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise TumorsweepError(f"{path}: not a dataset description (expected a JSON object)")
    return data


def _detect(root: Path) -> tuple[str, Path]:
    """(format, description file or folder) of a dataset path."""
    if root.is_file():
        if root.suffix != ".json":
            raise TumorsweepError(f"{root}: expected a dataset folder or a .json description")
        data = _read_json(root)
        if "channel_names" in data and "file_ending" in data:
            return "nnunet", root
        if "modality" in data or "tensorImageSize" in data or "numTraining" in data:
            return "msd", root
        if "training" in data:
            return "folds", root
        raise TumorsweepError(f"{root}: not a dataset description (no 'training' list)")
    if not root.is_dir():
        raise TumorsweepError(f"{root}: dataset path not found")
    if (root / "dataset.json").is_file():
        return _detect(root / "dataset.json")
    if any(p.name.startswith("volume-") for p in _nifti_files(root)):
        return "lits", root
    jsons = sorted(p for p in root.glob("*.json") if not p.name.startswith("._"))
    if len(jsons) == 1:
        return _detect(jsons[0])
    raise TumorsweepError(
        f"{root}: cannot tell the dataset layout (expected dataset.json for MSD / nnU-Net, "
        "volume-N.nii files for LiTS, or one folds .json)"
    )


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*.nii*")
        if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith("._")
    )


def _description(root: Path, fmt: str) -> Path:
    if root.is_file():
        return root
    candidates = [root / "dataset.json"] if fmt != "folds" else sorted(root.glob("*.json"))
    candidates = [p for p in candidates if p.is_file() and not p.name.startswith("._")]
    if len(candidates) != 1:
        raise TumorsweepError(f"{root}: no single {fmt} dataset description .json found")
    return candidates[0]


def _json_list(
    description: Path, data: dict, key: str, data_root: Path, flags: bool = True
) -> list[dict]:
    """Entries of a Decathlon-style list of {"image", "label"} pairs; image-only entries skipped."""
    items = data.get(key, [])
    if not isinstance(items, list):
        raise TumorsweepError(f"{description}: '{key}' must be a list of image/label pairs")
    entries = []
    for i, item in enumerate(items):
        if isinstance(item, str):  # MSD test lists hold unlabelled images: nothing to score
            continue
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise TumorsweepError(f"{description}: {key}[{i}] is not an image/label pair")
        if Path(item["image"]).name.startswith("._"):
            continue  # macOS resource-fork litter
        tumor = item.get("tumor") if flags else None
        # _entry resolves the paths (naming any link loop) and names the case as listed
        image, label = data_root / item["image"], data_root / item["label"]
        entries.append(_entry(image, label, None if tumor is None else bool(tumor)))
    return entries


def _load_decathlon(
    root: Path, fmt: str, base_dir: Path | None = None
) -> tuple[str, Path, dict[str, list[dict]]]:
    """MSD dataset.json or a SyntheticTumors folds JSON; relative paths start from `base_dir`
    when given, else from the JSON's folder (and its optional "data_root" key)."""
    description = _description(root, fmt)
    data = _read_json(description)
    if base_dir is not None:
        if not base_dir.is_dir():
            raise TumorsweepError(f"base_dir {base_dir} of {description}: folder not found")
        data_root = base_dir
    else:
        data_root = description.parent / data.get("data_root", ".")
    if "training" not in data:
        raise TumorsweepError(f"{description}: not a dataset description (no 'training' list)")
    lists = {
        key: _json_list(description, data, key, data_root)
        for key in ("training", "validation", "test")
    }
    default_name = description.stem if fmt == "folds" else description.parent.name
    name = str(data.get("name") or default_name)
    return name, data_root, lists


def _load_lits(root: Path) -> tuple[str, Path, dict[str, list[dict]]]:
    files = _nifti_files(root)
    segmentations = {
        lits_case_id(case_name(p)): p for p in files if p.name.startswith("segmentation-")
    }
    entries = []
    for volume in (p for p in files if p.name.startswith("volume-")):
        number = lits_case_id(case_name(volume))
        if number not in segmentations:
            raise TumorsweepError(f"{volume}: no matching segmentation-{number}.nii(.gz)")
        entries.append(_entry(volume, segmentations[number], None))
    if not entries:
        raise TumorsweepError(f"{root}: no volume-N.nii files")
    return root.name, root, {"training": entries, "validation": [], "test": []}


def _load_nnunet(root: Path) -> tuple[str, Path, dict[str, list[dict]]]:
    description = _description(root, "nnunet")
    data = _read_json(description)
    base = description.parent
    ending = data.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise TumorsweepError(f"{description}: 'file_ending' must be like '.nii.gz'")
    if len(data.get("channel_names", {})) != 1:
        raise TumorsweepError(f"{description}: 'channel_names' must list exactly one (CT) channel")
    labels = data.get("labels", {})
    values = sorted(v for v in labels.values() if isinstance(v, int))
    if (
        not labels
        or values != sorted(set(values))
        or not set(values) <= {0, 1, 2}
        or 1 not in values
    ):
        raise TumorsweepError(
            f"{description}: 'labels' must map names to 0 (background), 1 (liver), 2 (tumour), "
            f"got {labels}"
        )
    entries = []
    for label in sorted((base / "labelsTr").glob(f"*{ending}")):
        if label.name.startswith("._"):
            continue
        case = label.name[: -len(ending)]
        entries.append(_entry(base / "imagesTr" / f"{case}_0000{ending}", label, None))
    if not entries:
        present = sorted({"".join(p.suffixes) for p in (base / "labelsTr").glob("*") if p.suffixes})
        found = f"labelsTr holds {', '.join(present)} files" if present else "labelsTr is empty"
        raise TumorsweepError(
            f"{description}: file_ending {ending!r} matches no file in {base / 'labelsTr'} "
            f"({found})"
        )
    count = data.get("numTraining")
    if count is not None and count != len(entries):
        raise TumorsweepError(
            f"{description}: numTraining is {count} but labelsTr holds {len(entries)} cases"
        )
    return (
        str(data.get("name") or base.name),
        base,
        {"training": entries, "validation": [], "test": []},
    )


def _check_exists(entries: list[dict], source: Path) -> None:
    missing = [p for e in entries for p in (e["image"], e["label"]) if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise TumorsweepError(f"{source}: listed files do not exist: {shown}")


def _unique(entries: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for e in entries:
        seen.setdefault(e["image"], e)
    return list(seen.values())


def _same_case(a: dict, b: dict) -> bool:
    return a["image"] == b["image"] or (
        a["case_id"] is not None and a["case_id"] == b["case_id"] and a["case"] == b["case"]
    )


def _overlap(first: list[dict], second: list[dict]) -> list[str]:
    return sorted({a["case"] for a in first for b in second if _same_case(a, b)})


def read_layout(
    root: str | Path, fmt: str = "auto", base_dir: str | Path | None = None
) -> tuple[str, str, Path, dict[str, list[dict]]]:
    """(name, format, data root, {"training", "validation", "test": entries}) of a dataset,
    every listed file checked to exist. `base_dir`: where a JSON description's relative paths
    start (MONAI's `load_decathlon_datalist(base_dir=...)`); JSON layouts only."""
    path = Path(root).expanduser()
    if fmt not in ("auto", *FORMATS):
        raise TumorsweepError(
            f"format {fmt!r} unknown: expected auto or one of {', '.join(FORMATS)}"
        )
    detected = _detect(path)[0] if fmt == "auto" else fmt
    if base_dir is not None and detected not in ("msd", "folds"):
        raise TumorsweepError(
            f"{path}: base_dir {base_dir} applies to JSON descriptions (msd, folds), not to "
            f"the {detected} layout"
        )
    if detected == "lits":
        name, data_root, lists = _load_lits(path)
    elif detected == "nnunet":
        name, data_root, lists = _load_nnunet(path)
    else:
        base = None if base_dir is None else Path(base_dir).expanduser()
        name, data_root, lists = _load_decathlon(path, detected, base)
    _check_exists(_unique(lists["training"] + lists["validation"] + lists["test"]), path)
    return name, detected, data_root, lists


def _test_list(
    study: DatasetSplit, path: Path, split: str | None, listed: list, everything: list
) -> tuple[list, list]:
    """The test list (the layout's own, or a named split's LiTS cases) and the cases picked
    for it out of the other lists (removed from training)."""
    if split is None:
        if not listed:
            study._warn(f"{path}: no test list and no named split: nothing to report on")
        return listed, []
    wanted = NAMED_SPLITS[split]
    by_id = {e["case_id"]: e for e in everything if e["case_id"] is not None}
    missing = [n for n in wanted if n not in by_id]
    if missing:
        raise TumorsweepError(
            f"split {split}: {path} lacks case numbers {' '.join(map(str, missing))}"
        )
    test = [by_id[n] for n in wanted]
    return test, test


def _draw_validation(candidates: list, val_fraction: float, seed: int) -> list:
    """A deterministic `val_fraction` (at least one, none for 0) of `candidates`, drawn with
    `seed`, in their listed order."""
    count = min(len(candidates), max(1, round(val_fraction * len(candidates))))
    count = count if val_fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(candidates))
    return [candidates[i] for i in sorted(order[:count].tolist())]


def load_split(
    root: str | Path,
    fmt: str = "auto",
    split: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    base_dir: str | Path | None = None,
) -> DatasetSplit:
    """Load a dataset and split it into train / validation / test lists.

    A named `split` (see `NAMED_SPLITS`) takes its LiTS case numbers from the dataset as the
    test list. Validation is the dataset's own validation list if it has one, else a
    deterministic `val_fraction` (at least one) of the remaining tumour cases drawn with
    `seed`; train is the rest. Overlaps between the lists are warned about here and refused
    for a study by `tumorsweep.data.cases.resolve_cases`. `base_dir`: see `read_layout`.
    """
    path = Path(root).expanduser()
    if split is not None and split not in NAMED_SPLITS:
        raise TumorsweepError(f"split {split!r} unknown: expected one of {', '.join(NAMED_SPLITS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise TumorsweepError(f"val_fraction must be in [0, 1), got {val_fraction}")
    name, detected, data_root, lists = read_layout(path, fmt, base_dir)
    everything = _unique(lists["training"] + lists["validation"] + lists["test"])
    study = DatasetSplit(name, data_root, detected, [], [], [], split or "test")

    test, picked_test = _test_list(study, path, split, lists["test"], everything)
    if lists["validation"]:
        validation, picked_val = lists["validation"], []
    else:
        held = {e["image"] for e in test}
        candidates = [e for e in everything if e["image"] not in held and study.has_tumor(e)]
        picked_val = validation = _draw_validation(candidates, val_fraction, seed)
        if val_fraction > 0 and not candidates:
            study._warn(f"{path}: no tumour cases left outside the test list for validation")

    removed = {e["image"] for e in picked_test + picked_val}
    train = [e for e in lists["training"] if e["image"] not in removed]
    study.train, study.validation, study.test = train, validation, test

    what = {
        "validation/train": "validation cases also in training",
        "test/train": "test cases also in training",
        "validation/test": "validation (checkpoint selection) cases also in the test list",
    }
    for key, shared in study.overlaps().items():
        study._warn(f"{name}: {len(shared)} {what[key]}: {' '.join(shared[:10])}")
    return study
