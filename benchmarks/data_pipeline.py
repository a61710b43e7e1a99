"""Training data pipeline at real CT sizes: the fast pipeline against the public chain (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/data_pipeline.py [--cases 3] [--folder DIR] [--seconds 30]

Phantom CTs of 512x512x300 at 0.8x0.8x1.5 mm (~21 s and ~2 GB each to make; written once into
--folder and reused), paper preset: 1 mm, 96^3 patches, pos:neg 1:1, Hu et al.'s synthesis
(`TumorSynthesisd`, probability 0.9) and augmentation. Each chain runs in its own process (so
memory is its own and is returned): the public chain as the public code writes it
(CacheDataset of the deterministic prefix with its per-sample deep copy, float32 image and
label, RandCropByPosNegLabeld finding indices per sample) and the fast pipeline with float32
and with int16 storage. Printed per chain: cache build time per case (one thread), resident
memory per cached case (RSS growth) against the header bound `tumorsweep.data.memory` plans with,
the transient peak of building one case, steady-state patches/s of one core in-process (what
one loader worker does), the fast chain also through one real DataLoader worker process, the
peak extra memory while sampling; then ratios against the public chain measured in the same run.
`fast-int16-disk` keeps the cache as memory-mapped files (`data.cache=disk`; "held" is then
bytes on disk, RSS counts the mapped pages sampling touched, which the kernel can reclaim).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

SHAPE, SPACING = [512, 512, 300], [0.8, 0.8, 1.5]
CHAINS = {
    "public": ("public", "float32", "memory"),
    "fast": ("fast", "float32", "memory"),
    "fast-int16": ("fast", "int16", "memory"),
    "fast-int16-disk": ("fast", "int16", "disk"),
}


def _rss() -> float:
    """Resident bytes of this process now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Highest resident bytes while the block runs (polled every 2 ms)."""

    def __enter__(self) -> PeakRss:
        self.peak, self._stop = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def phantoms(folder: Path, cases: int) -> list[dict]:
    """Healthy phantoms of SHAPE at SPACING, made once and reused."""
    from tumorsweep.data import load_split, write_phantom_dataset

    root = folder / f"phantom-{cases}-{'x'.join(map(str, SHAPE))}-{'x'.join(map(str, SPACING))}"
    if not (root / "dataset.json").is_file():
        partial = root.with_name(root.name + ".partial")
        started = time.perf_counter()
        write_phantom_dataset(partial, cases=cases, seed=0, shape=SHAPE, spacing=SPACING,
                              tumor_cases=0)  # fmt: skip
        partial.replace(root)
        print(f"wrote {cases} phantoms in {time.perf_counter() - started:.0f} s: {root}")
    with warnings.catch_warnings():  # healthy cases only: no test list, said once per load
        warnings.simplefilter("ignore")
        split = load_split(root)
    return [
        {"image": c["image"], "label": c["label"], "case": c["case"]}
        for c in split.train_cases(False)
    ]


def child(chain: str, items: list[dict], seconds: float, folder: Path) -> dict:
    """One chain in this process: build, memory, rates (JSON on stdout)."""
    import torch
    from monai.data import CacheDataset, DataLoader

    from tumorsweep.config import make_config
    from tumorsweep.data.diskcache import DiskCacheDataset
    from tumorsweep.data.loaders import cache_layout, cached_bytes
    from tumorsweep.data.memory import plan_cache
    from tumorsweep.data.transforms import train_transforms
    from tumorsweep.synthesis import TumorSynthesisd

    torch.set_num_threads(1)
    pipeline, dtype, where = CHAINS[chain]
    cfg = make_config(
        "paper", {"data.pipeline": pipeline, "data.cache_dtype": dtype, "data.cache": where}
    )
    patch = cfg.schedule.patch_size
    plan = plan_cache(items, spacing=cfg.data.spacing, patch_size=patch,
                      layout=cache_layout(cfg.data), budget_gb=1e3)  # fmt: skip
    transform = train_transforms(
        spacing=cfg.data.spacing, window=cfg.data.window, patch_size=patch,
        synthesis=TumorSynthesisd(config=cfg.synthesis), pipeline=pipeline, cache_dtype=dtype,
    )  # fmt: skip
    pairs = [{"image": i["image"], "label": i["label"]} for i in items]
    before = _rss()
    started = time.perf_counter()
    with PeakRss() as building:
        if where == "disk":  # a fresh folder: written here, then memory-mapped per sample
            target = Path(tempfile.mkdtemp(prefix="train-cache-", dir=folder))
            dataset = DiskCacheDataset(pairs, transform, target, {"chain": chain})
        else:
            dataset = CacheDataset(pairs, transform, num_workers=1, progress=False,
                                   copy_cache=pipeline == "public")  # fmt: skip
    build_s = time.perf_counter() - started
    built = _rss()
    per_case = (built - before) / len(items)
    transform.set_random_state(seed=0)
    for i in range(len(dataset)):  # warm-up: texture statistics, first calls
        dataset[i]
    with PeakRss() as sampling:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or count < 2 * len(dataset):
            (patch_dict,) = dataset[count % len(dataset)]
            assert patch_dict["image"].shape[1:] == tuple(patch)
            count += 1
        rate = count / (time.perf_counter() - started)
    result = {
        "chain": chain,
        "cases": len(items),
        "build_s_per_case": build_s / len(items),
        "rss_per_case": per_case,
        "held_per_case": (dataset.disk_bytes() if where == "disk" else cached_bytes(dataset))
        / len(items),
        "bound_per_case": plan.cache_bytes / len(items),
        # The peak comes while the last case is built: all but one case already cached.
        "build_transient": building.peak - built + per_case,
        "planned_build": max(c.build_bytes for c in plan.cases),
        "patches_per_s": rate,
        "samples": count,
        "sampling_extra": sampling.peak - built,
    }
    if pipeline == "fast":  # through a real loader worker process (fork, shared cache)
        loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=1,
                            persistent_workers=True)  # fmt: skip
        batches = iter(loader)
        next(batches)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 2:
            try:
                next(batches)
            except StopIteration:
                batches = iter(loader)
                continue
            count += 1
        result["worker_patches_per_s"] = count / (time.perf_counter() - started)
    if where == "disk":
        shutil.rmtree(target)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument(
        "--folder", type=Path, default=Path(tempfile.gettempdir()) / "tumorsweep-bench"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="sampling time per chain")
    parser.add_argument("--chains", nargs="+", default=list(CHAINS), choices=list(CHAINS))
    parser.add_argument("--shape", type=int, nargs=3, default=SHAPE)
    parser.add_argument("--spacing", type=float, nargs=3, default=SPACING)
    parser.add_argument("--child", choices=list(CHAINS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    SHAPE[:], SPACING[:] = args.shape, args.spacing
    args.folder.mkdir(parents=True, exist_ok=True)
    items = phantoms(args.folder, args.cases)
    if args.child:
        print(json.dumps(child(args.child, items, args.seconds, args.folder)))
        return
    results = {}
    for chain in args.chains:
        run = subprocess.run(
            [sys.executable, __file__, "--child", chain, "--cases", str(args.cases),
             "--folder", str(args.folder), "--seconds", str(args.seconds),
             "--shape", *map(str, SHAPE), "--spacing", *map(str, SPACING)],
            stdout=subprocess.PIPE, text=True, check=True,
        )  # fmt: skip
        results[chain] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{chain}: done", flush=True)
    mb = 1e6
    print(
        f"\n{args.cases} phantom CTs {'x'.join(map(str, SHAPE))} at "
        f"{'x'.join(map(str, SPACING))} mm, paper preset (1 mm, 96^3, synthesis p=0.9, "
        "augmentation), one core\n"
    )
    print(
        "| chain | build s/case | RSS MB/case | held MB/case | bound MB/case | build transient "
        "MB (planned) | patches/s in-process | patches/s 1 loader worker | sampling extra MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        worker = f"{r['worker_patches_per_s']:.2f}" if "worker_patches_per_s" in r else "-"
        print(
            f"| {r['chain']} | {r['build_s_per_case']:.1f} | {r['rss_per_case'] / mb:.0f} | "
            f"{r['held_per_case'] / mb:.0f} | {r['bound_per_case'] / mb:.0f} | "
            f"{r['build_transient'] / mb:.0f} ({r['planned_build'] / mb:.0f}) | "
            f"{r['patches_per_s']:.2f} ({r['samples']}) | {worker} | "
            f"{r['sampling_extra'] / mb:.0f} |"
        )
    if "public" in results:
        base = results["public"]
        print()
        for name, r in results.items():
            if name == "public":
                continue
            smaller = base["rss_per_case"] / max(r["rss_per_case"], 1e6)
            print(
                f"{name} vs public: patches/s x{r['patches_per_s'] / base['patches_per_s']:.1f}, "
                f"resident memory per case x{smaller:.1f} smaller"
                f"{' (or more: under 1 MB)' if r['rss_per_case'] < 1e6 else ''}, "
                f"build time x{r['build_s_per_case'] / base['build_s_per_case']:.2f}"
            )
    for name, r in results.items():
        feeds = 4 * r.get("worker_patches_per_s", r["patches_per_s"])
        print(
            f"{name}: 4 workers supply {feeds:.1f} patches/s: batch 2 waits < 10% for GPU steps "
            f">= {2 / feeds * 0.9 * 1000:.0f} ms (UNet 96^3 batch 2: benchmarks/gpu_check.py)"
        )


if __name__ == "__main__":
    main()
