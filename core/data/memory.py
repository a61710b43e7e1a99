"""How much memory a training cache needs, planned from NIfTI headers before anything loads.

`plan_cache` reads each training case's header (shape and affine: spacing and orientation),
predicts the grid MONAI's `Orientationd` (RAS) + `Spacingd` + `SpatialPadd` give it, and counts
the bytes the pipeline keeps per case: the public chain keeps a float32 image and a float32
label; the fast chain keeps the image in `cache_dtype`, a uint8 label and two int64 counts per
(x, y) row for its crop indices (`tumorsweep.data.sampling`). These are upper bounds: the fast chain
then keeps only the part of each volume that patch windows can reach. With
`partition=True` the cases are split across DDP workers (largest first, snaking, so each
worker holds the same number of cases, within one, and about the same bytes). `CachePlan.check`
refuses a cache that cannot fit its budget, naming the budget, before any voxel is read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorsweep.errors import TumorsweepError

GB = 1e9
IMAGE_BYTES = {"float32": 4, "int16": 2}
ROW_COUNT_BYTES = 2 * 8  # fast chain: int64 cumulative counts of fg and bg voxels per row
# Transient bytes while one case is prepared, per voxel of the file and of the resampled grid:
# the file read as float32 image and label (plus the int16 read); the resampling grid, its
# output and the casts. benchmarks/data_pipeline.py measured 3.06 GB above the cache for a
# 512x512x300 file resampled to 410x410x450 (any pipeline); these give 3.21 GB.
BUILD_BYTES_PER_FILE_VOXEL = 10
BUILD_BYTES_PER_CACHED_VOXEL = 32


def size_text(nbytes: float) -> str:
    """Bytes as GB from 1 GB up, else MB."""
    return f"{nbytes / GB:.2f} GB" if nbytes >= GB else f"{nbytes / 1e6:.1f} MB"


@dataclass(frozen=True)
class CaseFootprint:
    """One training case as the cache will hold it, from its header."""

    name: str
    file_shape: tuple[int, int, int]
    file_spacing: tuple[float, float, float]
    grid: tuple[int, int, int]  # after RAS, resampling and padding to the patch
    cache_bytes: int  # upper bound (before the fast chain's crop to patch windows)
    build_bytes: int  # transient while this case is prepared

    def line(self) -> str:
        shape, grid = "x".join(map(str, self.file_shape)), "x".join(map(str, self.grid))
        spacing = "x".join(f"{s:.2f}" for s in self.file_spacing)
        return f"{self.name}: {shape} at {spacing} mm -> {grid}: <= {size_text(self.cache_bytes)}"


@dataclass(frozen=True)
class CachePlan:
    """What one DDP worker caches, how many threads build it, and the budget it fits."""

    items: tuple[dict[str, Any], ...]  # this worker's cases, in dataset order
    cases: tuple[CaseFootprint, ...]
    cached: int  # how many of them are cached (data.cache_rate)
    total_cases: int
    rank: int
    world_size: int
    partitioned: bool
    layout: str
    on_disk: bool  # cached as memory-mapped files (tumorsweep.data.diskcache), not in memory
    cache_bytes: int
    build_threads: int
    build_peak_bytes: int
    budget_bytes: float
    budget_source: str

    def describe(self) -> str:
        """Per-case bounds and the total against the budget (printed when a trainer starts)."""
        head = (
            f"training cache of worker {self.rank} of {self.world_size}: {len(self.cases)} of "
            f"{self.total_cases} cases, {self.layout}{' on disk' if self.on_disk else ''}"
        )
        lines = [head, *(f"  {case.line()}" for case in self.cases)]
        lines.append(
            f"  total <= {size_text(self.cache_bytes)}, plus <= "
            f"{size_text(self.build_peak_bytes)} while {self.build_threads} thread(s) build it; "
            f"budget {size_text(self.budget_bytes)} ({self.budget_source})"
        )
        return "\n".join(lines)

    def check(self) -> None:
        """Refuse, naming the budget and what would help, a cache (plus the build of its
        largest case) that does not fit."""
        cached = self.cases[: self.cached]
        largest = max((c.build_bytes for c in cached), default=0)
        resident = 0 if self.on_disk else self.cache_bytes
        if not cached or self.budget_bytes - resident >= largest:
            return
        biggest = max(cached, key=lambda c: c.cache_bytes)
        hints = "raise data.cache_memory_gb"
        if self.layout.startswith("fast"):
            hints += ", set data.cache=disk"
        if self.layout != "fast-int16":
            hints += ", set data.pipeline=fast with data.cache_dtype=int16"
        if self.world_size > 1 and not self.partitioned:
            hints += f", set data.cache_partition=rank (1/{self.world_size} of the cases each)"
        raise TumorsweepError(
            f"{self.budget_source}: budget {size_text(self.budget_bytes)}, but the training "
            f"cache of worker {self.rank} needs up to {size_text(resident)} for "
            f"{len(cached)} case(s) ({self.layout}; largest {biggest.line()}) plus "
            f"{size_text(largest)} to build one case; {hints}, or lower data.cache_rate"
        )


def cached_grid(
    shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float], patch: Sequence[int]
) -> tuple[int, int, int]:
    """The spatial shape after Orientationd(RAS), Spacingd(spacing) and SpatialPadd(patch),
    by MONAI's own rules (`compute_shape_offset` on the reoriented affine)."""
    import nibabel as nib
    from monai.data.utils import compute_shape_offset, zoom_affine

    affine = np.asarray(affine, dtype=np.float64)
    to_ras = nib.orientations.ornt_transform(
        nib.io_orientation(affine), nib.orientations.axcodes2ornt("RAS")
    )
    oriented = affine @ nib.orientations.inv_ornt_aff(to_ras, tuple(shape))
    ras_shape = [0, 0, 0]
    for axis, (target, _) in enumerate(to_ras):
        ras_shape[int(target)] = int(shape[axis])
    resampled = zoom_affine(oriented, np.asarray(spacing, dtype=np.float64), diagonal=False)
    grid, _ = compute_shape_offset(ras_shape, oriented, resampled)
    return tuple(max(int(n), int(p)) for n, p in zip(grid, patch, strict=True))  # type: ignore[return-value]


def case_footprint(
    item: dict[str, Any], spacing: Sequence[float], patch: Sequence[int], layout: str
) -> CaseFootprint:
    """A case's cached grid and byte bounds from its image header (`layout`: "public",
    "fast-float32" or "fast-int16")."""
    from tumorsweep.data.io import open_nifti

    header = open_nifti(item["image"])
    affine = np.asarray(header.affine, dtype=np.float64)
    file_shape = tuple(int(n) for n in header.shape[:3])
    grid = cached_grid(file_shape, affine, spacing, patch)
    voxels = math.prod(grid)
    if layout == "public":
        cache = voxels * (4 + 4)
    else:
        cache = voxels * (IMAGE_BYTES[layout.removeprefix("fast-")] + 1)
        cache += grid[0] * grid[1] * ROW_COUNT_BYTES
    build = (
        math.prod(file_shape) * BUILD_BYTES_PER_FILE_VOXEL + voxels * BUILD_BYTES_PER_CACHED_VOXEL
    )
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return CaseFootprint(
        name=str(item.get("case") or Path(item["image"]).name),
        file_shape=file_shape,  # type: ignore[arg-type]
        file_spacing=tuple(float(z) for z in zooms),  # type: ignore[arg-type]
        grid=grid,
        cache_bytes=int(cache),
        build_bytes=int(build),
    )


def partition(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """Indices of `sizes` per worker: largest first, dealt 0..W-1 then W-1..0 (a snake), so
    counts differ by at most one and bytes stay close; each worker's list in input order."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for position, index in enumerate(order):
        lap, step = divmod(position, world_size)
        shares[step if lap % 2 == 0 else world_size - 1 - step].append(index)
    return [sorted(share) for share in shares]


def available_memory_bytes() -> float:
    """Memory this process can still take: MemAvailable, or the cgroup's limit minus its use
    when that is smaller (containers)."""
    available = math.inf
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = float(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, float(limit) - used)
    except (OSError, ValueError):
        pass
    if math.isinf(available):
        available = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return available


def _budget(budget_gb: float | None) -> tuple[float, str]:
    """Bytes one training worker may cache, and where that number comes from: the machine's
    available memory shared by the node's training workers (`LOCAL_WORLD_SIZE`, set by Ray
    Train), or `data.cache_memory_gb` when it is smaller."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    machine = available_memory_bytes() / local
    if budget_gb is None or budget_gb * GB > machine:
        return machine, f"available memory of this machine / {local} training worker(s) on it"
    return budget_gb * GB, f"data.cache_memory_gb = {budget_gb:g}"


def plan_cache(
    items: Sequence[dict[str, Any]],
    *,
    spacing: Sequence[float],
    patch_size: Sequence[int],
    layout: str,
    cache_rate: float = 1.0,
    budget_gb: float | None = None,
    rank: int = 0,
    world_size: int = 1,
    partitioned: bool = False,
    cpus: int = 1,
    on_disk: bool = False,
) -> CachePlan:
    """This worker's cases, cache bounds, build threads and budget; `CachePlan.check` refuses
    a plan that does not fit (naming `data.cache_memory_gb` or the machine's memory).

    Only the first `cache_rate` share of the worker's cases is cached (MONAI's rule), so only
    those count (`on_disk`: all are, and only their build counts against memory). The
    budget is `budget_gb`, capped by the machine's available memory divided
    among the training workers of this node (`LOCAL_WORLD_SIZE`, set by Ray Train); build
    threads are as many as `cpus` and the room left beside the cache allow (at least one)."""
    cases = [case_footprint(item, spacing, patch_size, layout) for item in items]
    chosen = list(range(len(items)))
    if partitioned and world_size > 1:
        if len(items) < world_size:
            raise TumorsweepError(
                f"data.cache_partition = rank: {len(items)} training case(s) for {world_size} "
                "DDP workers; use data.cache_partition=replicate or fewer workers"
            )
        chosen = partition([c.cache_bytes for c in cases], world_size)[rank]
    mine = [cases[i] for i in chosen]
    cached = mine if on_disk else mine[: min(len(mine), int(len(mine) * cache_rate))]
    cache_bytes = sum(c.cache_bytes for c in cached)
    budget, source = _budget(budget_gb)
    largest = max((c.build_bytes for c in cached), default=0)
    room = budget - (0 if on_disk else cache_bytes)
    fit = int(room // largest) if largest > 0 and room > 0 else 1
    threads = max(1, min(cpus, len(cached), fit))
    return CachePlan(
        items=tuple(items[i] for i in chosen),
        cases=tuple(mine),
        cached=len(cached),
        total_cases=len(items),
        rank=rank,
        world_size=world_size,
        partitioned=partitioned,
        layout=layout,
        on_disk=on_disk,
        cache_bytes=cache_bytes,
        build_threads=threads,
        build_peak_bytes=threads * largest,
        budget_bytes=budget,
        budget_source=source,
    )
