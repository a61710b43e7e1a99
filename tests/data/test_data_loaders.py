"""The training loader: cache plans from NIfTI headers against the cache MONAI builds, budgets
refused before anything is built, per-rank shares, loader workers."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

import tumorsweep.data.diskcache as diskcache
import tumorsweep.data.loaders as loaders
from tumorsweep.config import make_config
from tumorsweep.data.cases import resolve_cases
from tumorsweep.data.config import DataConfig
from tumorsweep.data.layouts import load_split
from tumorsweep.data.memory import partition, plan_cache
from tumorsweep.data.phantom import write_phantom_dataset
from tumorsweep.data.transforms import resampled_pair
from tumorsweep.errors import TumorsweepError
from tumorsweep.session import LocalSession
from tumorsweep.synthesis import SynthesisConfig, TumorSynthesisd
from tumorsweep.tracking import NullLogger
from tumorsweep.train import build, run_local

SMALL_TUMOURS = SynthesisConfig(
    prob=1.0, radius={"tiny": 2.0, "small": 4.0, "medium": 8.0, "large": 16.0}
)


def _healthy(root: Path, **geometry) -> list[dict]:
    write_phantom_dataset(root, cases=5, seed=2, tumor_cases=3, **geometry)
    return load_split(root).train_cases(False)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> list[dict]:
    """Healthy cases of three geometries: LPS and anisotropic, RAS, axes permuted (SLP)."""
    items = []
    for name, geometry in {
        "lps": {"shape": (48, 40, 30), "spacing": (1.6, 1.9, 2.5), "orientation": "LPS"},
        "ras": {"shape": (44, 44, 36), "spacing": (2.3, 2.3, 2.3), "orientation": "RAS"},
        "slp": {"shape": (30, 48, 40), "spacing": (2.5, 1.6, 1.9), "orientation": "SLP"},
    }.items():
        items += _healthy(tmp_path_factory.mktemp(name), **geometry)
    return items


def test_plan_from_headers_matches_the_cache_monai_builds(mixed, capsys) -> None:
    spacing, patch = (2.0, 2.0, 2.0), (40, 40, 40)
    grids = [tuple(resampled_pair(spacing)(item)["image"].shape[1:]) for item in mixed]
    padded = [tuple(max(n, p) for n, p in zip(g, patch, strict=True)) for g in grids]
    assert any(g != p for g, p in zip(grids, padded, strict=True))  # some axis is padded
    for pipeline, dtype, per_voxel in (("public", "float32", 8), ("fast", "int16", 3)):
        data = DataConfig(spacing=spacing, pipeline=pipeline, cache_dtype=dtype, loader_workers=0)
        plan = plan_cache(
            mixed, spacing=spacing, patch_size=patch, layout=loaders.cache_layout(data)
        )
        assert [c.grid for c in plan.cases] == padded
        assert plan.cache_bytes >= sum(math.prod(g) for g in padded) * per_voxel
        loader = loaders.training_loader(
            mixed, data, patch_size=patch, batch_size=2, crops_per_volume=1, seed=0
        )
        held = loaders.cached_bytes(loader.dataset)
        printed = capsys.readouterr().out
        assert all(c.line() in printed for c in plan.cases)
        assert f"{len(mixed)} of {len(mixed)} cases" in printed
        if pipeline == "public":
            assert held == plan.cache_bytes  # float32 image + float32 label, exactly
        else:
            assert 0.5 * plan.cache_bytes < held <= plan.cache_bytes  # kept part only


def test_paper_preset_refuses_an_unfitting_cache_before_building(tmp_path, monkeypatch, capsys):
    """Paper preset on CT-like headers (0.8 x 0.8 x 1.5 mm): the plan printed per case and in
    total, from the headers alone; on a budget it cannot meet, one TumorsweepError naming the
    budget field and the need, and no cache is built."""
    write_phantom_dataset(tmp_path, cases=6, seed=1, shape=(160, 160, 80),
                          spacing=(0.8, 0.8, 1.5), tumor_cases=3)  # fmt: skip
    built = []
    real_cache = loaders.CacheDataset

    def recording_cache(*args, **kwargs):
        built.append(len(args[0]))
        return real_cache(*args, **kwargs)

    monkeypatch.setattr(loaders, "CacheDataset", recording_cache)
    cfg = make_config("paper", {"data.root": str(tmp_path), "data.cache_memory_gb": 0.02})
    cases = resolve_cases(cfg.data)
    assert len(cases.train) == 3
    with pytest.raises(TumorsweepError) as refused:
        run_local(cfg, cases)
    message = str(refused.value)
    # 1 mm grid from the headers: round(159 * 0.8 + 1) = 128, round(79 * 1.5 + 1) = 120;
    # float32 image + uint8 label = 5 B per voxel, plus 16 B per (x, y) row of index counts.
    per_case = 128 * 128 * 120 * 5 + 128 * 128 * 16
    assert per_case == 10_092_544
    assert message.startswith("data.cache_memory_gb = 0.02: budget 20.0 MB, but the training")
    assert "needs up to 30.3 MB for 3 case(s) (fast-float32; largest liver_" in message
    assert "160x160x80 at 0.80x0.80x1.50 mm -> 128x128x120: <= 10.1 MB" in message
    assert "data.cache_dtype=int16" in message
    assert built == []  # refused from the headers: nothing was read or cached
    printed = capsys.readouterr().out  # the plan is printed before the refusal
    assert "liver_0: 160x160x80 at 0.80x0.80x1.50 mm -> 128x128x120: <= 10.1 MB" in printed

    fitting = make_config("paper", {"data.root": str(tmp_path), "data.cache_memory_gb": 1.0})
    trainer = build(fitting, cases, LocalSession(), NullLogger())
    printed = capsys.readouterr().out
    assert "training cache of worker 0 of 1: 3 of 3 cases, fast-float32" in printed
    assert "liver_0: 160x160x80 at 0.80x0.80x1.50 mm -> 128x128x120: <= 10.1 MB" in printed
    assert "total <= 30.3 MB" in printed and "budget 1.00 GB (data.cache_memory_gb = 1)" in printed
    assert built == [3]
    assert loaders.cached_bytes(trainer.loader.dataset) <= 3 * per_case


def test_machine_memory_bounds_the_budget(mixed, monkeypatch) -> None:
    """Without data.cache_memory_gb (or above what the machine has) the machine's available
    memory, shared by the node's training workers, is the budget."""
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(10**12))
    with pytest.raises(TumorsweepError, match=r"available memory of this machine / 10+ train"):
        plan_cache(
            mixed, spacing=(2.0,) * 3, patch_size=(32,) * 3, layout="public", budget_gb=50
        ).check()


def test_rank_partition_balances_cases_and_steps(mixed) -> None:
    assert partition([9, 1, 8, 2, 7, 3, 6], 3) == [[0, 1, 3], [2, 5], [4, 6]]  # snake by size
    spacing, patch = (2.0, 2.0, 2.0), (32, 32, 32)
    whole = plan_cache(mixed, spacing=spacing, patch_size=patch, layout="fast-int16")
    shares = [
        plan_cache(mixed, spacing=spacing, patch_size=patch, layout="fast-int16", rank=r,
                   world_size=2, partitioned=True)
        for r in range(2)
    ]  # fmt: skip
    images = [{item["image"] for item in share.items} for share in shares]
    assert not images[0] & images[1] and images[0] | images[1] == {i["image"] for i in mixed}
    assert sorted(len(share.items) for share in shares) == [
        len(mixed) // 2,
        len(mixed) - len(mixed) // 2,
    ]
    assert max(s.cache_bytes for s in shares) < 0.6 * whole.cache_bytes
    # A budget between one share and the whole (each plus building the largest case) fits
    # only when the cache is partitioned.
    share, build_one = max(s.cache_bytes for s in shares), max(c.build_bytes for c in whole.cases)
    budget = (build_one + (share + whole.cache_bytes) / 2) / 1e9
    shares[0].check()
    with pytest.raises(TumorsweepError, match="data.cache_partition=rank"):
        plan_cache(mixed, spacing=spacing, patch_size=patch, layout="fast-int16",
                   budget_gb=budget, world_size=2).check()  # fmt: skip
    data = DataConfig(spacing=spacing, pipeline="fast", cache_dtype="int16", cache_partition="rank",
                      cache_memory_gb=budget, loader_workers=0)  # fmt: skip
    steps, seen = [], []
    for rank in range(2):
        loader = loaders.training_loader(
            mixed, data, patch_size=patch, batch_size=1, crops_per_volume=1, seed=rank,
            rank=rank, world_size=2,
        )  # fmt: skip
        assert isinstance(loader.sampler, DistributedSampler)  # Ray Train keeps it as it is
        assert [d["image"] for d in loader.dataset.data] == [i["image"] for i in shares[rank].items]
        orders = []
        for epoch in range(3):
            loader.sampler.set_epoch(epoch)
            orders.append(list(loader.sampler))
        assert len({tuple(o) for o in orders}) > 1  # reshuffled per epoch
        assert all(set(o) == set(range(len(loader.dataset))) for o in orders)
        steps.append(len(loader))
        seen.append(sum(1 for _ in loader))
    assert steps == seen == [math.ceil(len(mixed) / 2)] * 2  # every rank takes the same steps


def test_replicated_ranks_share_one_shuffle_seeded_by_the_trial(mixed) -> None:
    """Every rank caches every case; one permutation per epoch, seeded by the trial's seed
    (not Ray Train's default seed 0), is split into disjoint shards covering every case."""
    data = DataConfig(spacing=(2.0, 2.0, 2.0), pipeline="fast", loader_workers=0)

    def orders(seed: int, epoch: int) -> list[list[int]]:
        shards = []
        for rank in range(2):
            loader = loaders.training_loader(
                mixed, data, patch_size=(32, 32, 32), batch_size=1, crops_per_volume=1,
                seed=seed * 1000 + rank, order_seed=seed, rank=rank, world_size=2,
            )  # fmt: skip
            assert isinstance(loader.sampler, DistributedSampler)  # Ray Train keeps it
            loader.sampler.set_epoch(epoch)
            shards.append(list(loader.sampler))
        return shards

    first, second = orders(seed=0, epoch=0), orders(seed=1, epoch=0)
    assert len(mixed) % 2 == 0 and not set(first[0]) & set(first[1])  # even: no padding
    assert set(first[0]) | set(first[1]) == set(range(len(mixed)))
    assert first != second  # another trial seed, another order
    assert orders(seed=0, epoch=1) != first  # reshuffled per epoch
    assert orders(seed=0, epoch=0) == first  # and reproducible


def test_build_threads_follow_the_budget(mixed) -> None:
    spacing, patch = (2.0, 2.0, 2.0), (32, 32, 32)
    roomy = plan_cache(
        mixed, spacing=spacing, patch_size=patch, layout="public", budget_gb=5, cpus=4
    )
    assert roomy.build_threads == 4
    largest = max(c.build_bytes for c in roomy.cases)
    tight = (roomy.cache_bytes + 1.5 * largest) / 1e9
    plan = plan_cache(
        mixed, spacing=spacing, patch_size=patch, layout="public", budget_gb=tight, cpus=4
    )
    assert plan.build_threads == 1 and plan.build_peak_bytes == largest


def test_loader_workers_setting() -> None:
    assert loaders.loader_workers("auto", 8) == 7
    assert loaders.loader_workers("auto", 1) == 0
    assert loaders.loader_workers(3, 8) == 3
    assert make_config("paper").data.loader_workers == "auto"
    assert make_config("paper").data.pipeline == "fast"
    for field, value in (("loader_workers", -1), ("loader_workers", "many"),
                         ("cache_memory_gb", 0), ("cache_dtype", "float16")):  # fmt: skip
        with pytest.raises(TumorsweepError, match=f"data.{field}"):
            make_config("paper", {f"data.{field}": value})


def test_fast_loader_feeds_batches_from_worker_processes(mixed) -> None:
    data = DataConfig(
        spacing=(2.0, 2.0, 2.0), pipeline="fast", cache_dtype="int16", loader_workers=1
    )
    loader = loaders.training_loader(
        mixed, data, patch_size=(32, 32, 32), batch_size=4, crops_per_volume=2, seed=5,
        synthesis=TumorSynthesisd(config=SMALL_TUMOURS),
    )  # fmt: skip
    assert loader.num_workers == 1
    batches = list(loader)
    assert len(batches) == math.ceil(len(mixed) / 2)
    labels = torch.cat([b["label"] for b in batches])
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (2 * len(mixed), 1, 32, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(np.unique(labels.numpy())) == {0, 1, 2}
    assert -0.2 < float(images.min()) and float(images.max()) < 1.3  # window +- augmentation


def test_disk_cache_gives_the_memory_cache_patches_and_is_reused(mixed, tmp_path, capsys):
    common = {"spacing": (2.0, 2.0, 2.0), "pipeline": "fast", "cache_dtype": "int16",
              "loader_workers": 0}  # fmt: skip
    disk = DataConfig(**common, cache="disk", cache_dir=str(tmp_path / "cache"))

    def batches(data: DataConfig) -> list[dict]:
        loader = loaders.training_loader(
            mixed, data, patch_size=(32, 32, 32), batch_size=2, crops_per_volume=1, seed=4,
            synthesis=TumorSynthesisd(config=SMALL_TUMOURS),
        )  # fmt: skip
        return [batch for _ in range(2) for batch in loader]

    in_memory = batches(DataConfig(**common))
    for written, reused in ((len(mixed), 0), (0, len(mixed))):
        on_disk = batches(disk)
        assert f"{written} case(s) written and {reused} reused" in capsys.readouterr().out
        for ours, theirs in zip(on_disk, in_memory, strict=True):
            assert torch.equal(ours["image"], theirs["image"])
            assert torch.equal(ours["label"], theirs["label"])
    assert int((torch.cat([b["label"] for b in on_disk]) == 2).sum()) > 0
    source = Path(mixed[0]["image"])
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # file changed
    batches(disk)
    assert f"1 case(s) written and {len(mixed) - 1} reused" in capsys.readouterr().out


def test_disk_cache_refuses_a_disk_it_cannot_fill(mixed, tmp_path, monkeypatch) -> None:
    class Usage:
        free = 1_000_000

    monkeypatch.setattr(diskcache.shutil, "disk_usage", lambda _: Usage())
    data = DataConfig(
        spacing=(2.0, 2.0, 2.0), cache="disk", cache_dir=str(tmp_path), loader_workers=0
    )
    with pytest.raises(TumorsweepError, match=rf"data.cache_dir = {tmp_path}: 1.0 MB free, but"):
        loaders.training_loader(
            mixed, data, patch_size=(32,) * 3, batch_size=1, crops_per_volume=1, seed=0
        )
    assert not any(tmp_path.iterdir())
    with pytest.raises(TumorsweepError, match="data.cache = disk needs data.pipeline = fast"):
        make_config("paper", {"data.cache": "disk", "data.pipeline": "public"})
