"""The training DataLoader of one worker: cached deterministic prefix, random suffix, batches.

The deterministic part of the chain (load, orient, resample; the fast pipeline also compacts)
is cached by MONAI's `CacheDataset`; synthesis, cropping and augmentation run per sample, in
loader workers when `loader_workers > 0`. Each volume yields `crops_per_volume` patches, so a
batch of `batch_size` patches takes `batch_size // crops_per_volume` volumes.

Before anything is read, `plan_cache` bounds the cache from the NIfTI headers, prints the plan
and refuses one that cannot fit (`data.cache_memory_gb` or the machine). The fast pipeline
never writes into cached items, so they are not deep-copied per sample (`copy_cache=False`);
the public pipeline keeps MONAI's default copy, as the public code does. `data.cache=disk`
keeps the fast pipeline's cache as memory-mapped files instead (`tumorsweep.data.diskcache`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from torch.utils.data.distributed import DistributedSampler

from tumorsweep.data.cases import REAL_TUMOR_KEY
from tumorsweep.data.config import DataConfig
from tumorsweep.data.diskcache import build_disk_cache, default_folder
from tumorsweep.data.memory import CachePlan, plan_cache, size_text
from tumorsweep.data.transforms import train_transforms
from tumorsweep.errors import TumorsweepError


class MixSampler(DistributedSampler):
    """Each epoch `length` draws, a share `real_fraction` from the real-tumour items
    (`is_real`), the rest from the healthy ones: the count of real draws is
    floor(real_fraction * length + u), u ~ U(0, 1), so the share is exact in expectation and
    within one sample in every epoch; each arm is walked in a fresh random order (repeated when
    it is shorter than its draws), then the draws are shuffled together. Seeded by `seed` and
    the epoch (`set_epoch`); a `DistributedSampler` (of one replica) so Ray Train's
    `prepare_data_loader` keeps it instead of adding its own."""

    def __init__(self, is_real: Sequence[bool], real_fraction: float, length: int, seed: int):
        super().__init__(range(len(is_real)), num_replicas=1, rank=0, shuffle=True, seed=seed)
        self.real = [i for i, flag in enumerate(is_real) if flag]
        self.healthy = [i for i, flag in enumerate(is_real) if not flag]
        if not self.real or not self.healthy:
            missing = "real-tumour" if not self.real else "healthy"
            raise TumorsweepError(
                f"data.real_fraction {real_fraction:g}: this worker's training cases have no "
                f"{missing} case to draw from"
            )
        self.real_fraction = float(real_fraction)
        self.num_samples = self.total_size = int(length)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        u = float(torch.rand((), generator=generator))
        n_real = min(self.num_samples, math.floor(self.real_fraction * self.num_samples + u))
        draws = self._walk(self.real, n_real, generator)
        draws += self._walk(self.healthy, self.num_samples - n_real, generator)
        order = torch.randperm(len(draws), generator=generator).tolist()
        return iter([draws[i] for i in order])

    @staticmethod
    def _walk(arm: list[int], count: int, generator: torch.Generator) -> list[int]:
        walked: list[int] = []
        while len(walked) < count:
            walked += [arm[i] for i in torch.randperm(len(arm), generator=generator).tolist()]
        return walked[:count]


def loader_workers(setting: int | str, cpus: int) -> int:
    """DataLoader worker processes: an explicit count, or "auto" = the trainer's CPUs - 1
    (one stays with the training process), at least 0."""
    return max(0, int(cpus) - 1) if setting == "auto" else int(setting)


def cache_layout(data: DataConfig) -> str:
    """The name `tumorsweep.data.memory` sizes the cache by: "public", "fast-float32", ...."""
    return "public" if data.pipeline == "public" else f"fast-{data.cache_dtype}"


class PartitionSampler(DistributedSampler):
    """Shuffles one DDP worker's own cached cases each epoch (`set_epoch`), padded like
    `DistributedSampler` (repeating the first of the shuffled indices) to `length`, the same
    on every worker so all take the same number of steps. It is a `DistributedSampler` (of one
    replica) so Ray Train's `prepare_data_loader` keeps it instead of adding its own."""

    def __init__(self, dataset: Any, length: int, seed: int):
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
        self.num_samples = self.total_size = int(length)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()  # type: ignore[arg-type]
        return iter((order * math.ceil(self.num_samples / len(order)))[: self.num_samples])


def cached_bytes(dataset: CacheDataset) -> int:
    """Bytes of the arrays a CacheDataset holds (what the cache really costs)."""

    def size(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.element_size() * value.nelement()
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        return 0

    return sum(size(item) for item in dataset._cache)  # MONAI keeps no public handle on it


def training_loader(
    items: Sequence[dict[str, Any]],
    data: DataConfig,
    *,
    patch_size: Sequence[int],
    batch_size: int,
    crops_per_volume: int,
    seed: int,
    synthesis: Any = None,
    real_fraction: float = 0.0,
    order_seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    cpus: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """A shuffling loader over `items` ({"image", "label"} paths, optional "case" name)
    through the training chain of `data.pipeline`, once the cache plan fits. `seed` fixes the
    order and every random draw; `rank`/`world_size`: this DDP worker (with
    `data.cache_partition="rank"` it caches and samples only its share); `cpus`: the trainer's
    CPUs (they size `loader_workers: auto` and the build threads); `real_fraction` strictly
    between 0 and 1: each epoch draws that share of its samples from the items flagged
    `real_tumor` (`MixSampler`), as many samples per worker as a plain epoch has;
    `order_seed`: the same on every rank, it seeds the shared shuffle of a multi-worker trial
    whose workers all cache every case (each rank takes its shard of it)."""
    plan = _plan(items, data, patch_size, rank, world_size, cpus)
    transform = train_transforms(
        spacing=data.spacing,
        window=data.window,
        patch_size=patch_size,
        synthesis=synthesis,
        num_samples=crops_per_volume,
        pipeline=data.pipeline,
        cache_dtype=data.cache_dtype,
        organ_crop_mm=data.healthy_crop_organ_mm,
    )
    dataset = _dataset(plan, transform, data, patch_size)
    workers = loader_workers(data.loader_workers, cpus)
    length = math.ceil(plan.total_cases / world_size)
    sampler = _sampler(
        plan, dataset, data, real_fraction, length, seed, rank, world_size, order_seed
    )
    return DataLoader(
        dataset,
        batch_size=batch_size // crops_per_volume,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        drop_last=False,
        generator=torch.Generator().manual_seed(seed),  # MONAI seeds the transforms from it
    )


def _plan(
    items: Sequence[dict[str, Any]],
    data: DataConfig,
    patch_size: Sequence[int],
    rank: int,
    world_size: int,
    cpus: int,
) -> CachePlan:
    """The cache plan of this worker's share of `items`, printed and checked (a plan that
    does not fit refuses here, before anything is loaded)."""
    plan = plan_cache(
        items,
        spacing=data.spacing,
        patch_size=patch_size,
        layout=cache_layout(data),
        cache_rate=data.cache_rate,
        budget_gb=data.cache_memory_gb,
        rank=rank,
        world_size=world_size,
        partitioned=data.cache_partition == "rank",
        cpus=cpus,
        on_disk=data.cache == "disk",
    )
    print(plan.describe(), flush=True)
    plan.check()
    return plan


def _dataset(plan: CachePlan, transform: Any, data: DataConfig, patch_size: Sequence[int]) -> Any:
    """The cached training dataset: in memory, or on disk keyed by the settings that change
    what is cached."""
    if data.cache != "disk":
        return _cache(plan, transform, data)
    settings = {"spacing": data.spacing, "window_low": data.window[0],
                "patch": list(patch_size), "dtype": data.cache_dtype}  # fmt: skip
    folder = Path(data.cache_dir) if data.cache_dir else default_folder()
    return build_disk_cache(plan, transform, folder, settings)


def _sampler(
    plan: CachePlan,
    dataset: Any,
    data: DataConfig,
    real_fraction: float,
    length: int,
    seed: int,
    rank: int,
    world_size: int,
    order_seed: int,
) -> Any:
    """Who orders the epoch: the real/synthetic mix, this rank's cache partition, the shared
    shuffle of a multi-worker trial, or (None) the loader's own shuffle."""
    if 0 < real_fraction < 1:
        is_real = [bool(item.get(REAL_TUMOR_KEY)) for item in plan.items]
        return MixSampler(is_real, real_fraction, length, seed)
    if data.cache_partition == "rank":
        return PartitionSampler(dataset, length, seed)
    if world_size > 1:  # one shuffle shared by the ranks, each its shard, seeded by the trial
        # (Ray Train's prepare_data_loader would add one seeded 0: every trial seed, one order)
        return DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=order_seed
        )
    return None


def _cache(plan: CachePlan, transform: Any, data: DataConfig) -> CacheDataset:
    """Build the cache and print what it took (time, bytes against the plan's bound)."""
    started = time.perf_counter()
    try:
        dataset = CacheDataset(
            [
                {
                    "image": item["image"],
                    "label": item["label"],
                    REAL_TUMOR_KEY: bool(item.get(REAL_TUMOR_KEY)),
                }  # fmt: skip
                for item in plan.items
            ],
            transform,
            cache_rate=data.cache_rate,
            num_workers=plan.build_threads,
            copy_cache=data.pipeline == "public",
            progress=False,
        )
    except RuntimeError as exc:  # MONAI wraps what a transform raises: surface bad input
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, TumorsweepError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    held = cached_bytes(dataset)
    bound = max(plan.cache_bytes, 1)
    print(
        f"training cache built in {time.perf_counter() - started:.1f} s: {size_text(held)} "
        f"({held / bound:.0%} of the bound)",
        flush=True,
    )
    return dataset
