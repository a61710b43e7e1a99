"""The fast pipeline's cache on local disk: resident memory bounded whatever the dataset size.

Each compacted case (`tumorsweep.data.sampling.CompactForSamplingd`) is written once as .npy
files in a folder named by a hash of its source files (paths, sizes, modification times) and of what
shapes the result (spacing, window low end, patch size, storage dtype, format version), then
memory-mapped per sample: a sample reads only the pages it touches (the liver box, the patch,
two index rows) and the kernel may drop them under memory pressure. Folders are written under
a temporary name and renamed, so DDP workers and concurrent trials on one node share them, and
a later trial with the same settings reuses them without reading the NIfTI files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Compose, Randomizable
from torch.utils.data import Dataset

from tumorsweep.data.cases import REAL_TUMOR_KEY
from tumorsweep.data.memory import CachePlan, size_text
from tumorsweep.data.sampling import BG_ROWS, FG_ROWS, IMAGE, LABEL, LIVER_BOX, MEMO, ORIGIN
from tumorsweep.errors import TumorsweepError

FORMAT = 1
ARRAYS = (IMAGE, LABEL, FG_ROWS, BG_ROWS)
MAPPED = (IMAGE, LABEL)  # read per sample through the page cache; the row counts are loaded


def case_key(item: dict[str, Any], settings: dict[str, Any]) -> str:
    """Folder name of one compacted case: its source files as they are now and the settings."""
    sources = []
    for key in (IMAGE, LABEL):
        path = Path(item[key]).resolve()
        try:
            stat = path.stat()
        except OSError:
            raise TumorsweepError(f"{item[key]}: file not found") from None
        sources.append([str(path), stat.st_size, stat.st_mtime_ns])
    text = json.dumps({"format": FORMAT, "sources": sources, **settings}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


class DiskCacheDataset(Dataset):
    """`transform`'s deterministic prefix cached as memory-mapped files in `folder`; its random
    suffix run per sample (never writing into the mapped, read-only arrays)."""

    def __init__(
        self,
        items: Sequence[dict[str, Any]],
        transform: Compose,
        folder: Path,
        settings: dict[str, Any],
        threads: int = 1,
    ):
        self.transform = transform
        self.first_random = transform.get_index_of_first(lambda t: isinstance(t, Randomizable))
        self.folders = [folder / case_key(item, settings) for item in items]
        self.real = [bool(item.get(REAL_TUMOR_KEY)) for item in items]  # carried to patches
        self.memos: list[dict] = [{} for _ in items]  # per case, as the memory cache keeps it
        missing = [(i, f) for i, f in zip(items, self.folders, strict=True) if not f.is_dir()]
        self.reused = len(items) - len(missing)
        folder.mkdir(parents=True, exist_ok=True)
        with ThreadPool(max(1, threads)) as pool:
            pool.starmap(self._write, missing)

    def _write(self, item: dict[str, Any], target: Path) -> None:
        data = self.transform({IMAGE: item[IMAGE], LABEL: item[LABEL]}, end=self.first_random)
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        for key in ARRAYS:
            np.save(partial / f"{key}.npy", np.ascontiguousarray(data[key]))
        boxes = {LIVER_BOX: data[LIVER_BOX], ORIGIN: data[ORIGIN]}
        (partial / "boxes.json").write_text(json.dumps(boxes))
        try:
            partial.rename(target)
        except OSError:  # another worker wrote the same case first: keep theirs
            shutil.rmtree(partial, ignore_errors=True)
            if not target.is_dir():
                raise

    def __len__(self) -> int:
        return len(self.folders)

    def cached(self, index: int) -> dict[str, Any]:
        """One compacted case: image and label memory-mapped, the rest in memory."""
        folder = self.folders[index]
        data: dict[str, Any] = {
            key: np.load(folder / f"{key}.npy", mmap_mode="r" if key in MAPPED else None)
            for key in ARRAYS
        }
        boxes = json.loads((folder / "boxes.json").read_text())
        data[LIVER_BOX] = tuple(tuple(pair) for pair in boxes[LIVER_BOX])
        data[ORIGIN] = tuple(boxes[ORIGIN])
        data[REAL_TUMOR_KEY] = self.real[index]
        data[MEMO] = self.memos[index]
        return data

    def __getitem__(self, index: int) -> Any:
        return self.transform(self.cached(index), start=self.first_random)

    def disk_bytes(self) -> int:
        """Bytes of the files this dataset reads."""
        return sum(p.stat().st_size for f in self.folders for p in f.iterdir())


def check_disk(plan: CachePlan, folder: Path, settings: dict[str, Any]) -> None:
    """Refuse, naming `data.cache_dir`, a disk cache the folder's free space cannot take
    (counting the header bounds of the cases not written yet)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    missing = [
        case
        for item, case in zip(plan.items, plan.cases, strict=True)
        if not (folder / case_key(item, settings)).is_dir()
    ]
    need = sum(case.cache_bytes for case in missing)
    if need > free:
        raise TumorsweepError(
            f"data.cache_dir = {folder}: {size_text(free)} free, but the training cache of "
            f"worker {plan.rank} may need up to {size_text(need)} for {len(missing)} case(s) "
            "not cached yet; free space or point data.cache_dir at a larger local disk"
        )


def build_disk_cache(
    plan: CachePlan, transform: Compose, folder: Path, settings: dict[str, Any]
) -> DiskCacheDataset:
    """The disk cache of a plan, with a line saying what it took."""
    check_disk(plan, folder, settings)
    started = time.perf_counter()
    dataset = DiskCacheDataset(plan.items, transform, folder, settings, plan.build_threads)
    print(
        f"training cache on disk ({folder}): {len(dataset) - dataset.reused} case(s) written "
        f"and {dataset.reused} reused in {time.perf_counter() - started:.1f} s; "
        f"{size_text(dataset.disk_bytes())} on disk",
        flush=True,
    )
    return dataset


def default_folder() -> Path:
    """Where the disk cache goes without `data.cache_dir`: tumorsweep's cache folder."""
    from tumorsweep.data.cases import cache_dir

    return cache_dir() / "train-cache"
