"""The training DataLoader of one worker: cached deterministic prefix, random suffix, batches.

The deterministic part of the chain (load, orient, resample) is cached by MONAI's
`CacheDataset`; synthesis, cropping and augmentation run per sample, in loader workers when
`loader_workers > 0`. Each volume yields `crops_per_volume` patches, so a batch of
`batch_size` patches takes `batch_size // crops_per_volume` volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose


def training_loader(
    items: Sequence[dict[str, Any]],
    transform: Compose,
    *,
    batch_size: int,
    crops_per_volume: int,
    cache_rate: float,
    loader_workers: int,
    seed: int,
) -> DataLoader:
    """A shuffling loader over `items` ({"image", "label"} paths) through `transform`."""
    transform.set_random_state(seed=seed)
    pairs = [{"image": item["image"], "label": item["label"]} for item in items]
    dataset = CacheDataset(pairs, transform, cache_rate=cache_rate, progress=False)
    return DataLoader(
        dataset,
        batch_size=batch_size // crops_per_volume,
        shuffle=True,
        num_workers=loader_workers,
        persistent_workers=loader_workers > 0,
        drop_last=False,
    )
