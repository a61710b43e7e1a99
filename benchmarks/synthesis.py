"""Synthesis speed and memory against the public implementation's figures (issue 3).

    OMP_NUM_THREADS=1 python benchmarks/synthesis.py [--image CT.nii.gz --label LIVER.nii.gz]

Without files it builds a 300x260x200 1 mm volume with a ~1.8 M-voxel ellipsoid liver. Prints,
per tumour type, the median ms per sample of the in-place path a data loader uses and of the
copying `synthesize_tumors` (min ms: the least-disturbed run on a shared machine; tumour
vox: median voxels added, the size statistics), the one-off start-up (texture statistics,
first call) and peak traced memory, as ratios against 0.25-0.7 s per sample, ~80 s and
~3 GB start-up.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import nibabel as nib
import numpy as np

from core.synthesis import SynthesisConfig, synthesize_tumors
from core.synthesis.config import TUMOR_TYPES
from core.synthesis.synthesize import synthesize_tumors_inplace
from core.synthesis.texture import BANK_SHAPE, bank_half_range

PUBLIC_FAST_S, PUBLIC_SLOW_S = 0.25, 0.7
PUBLIC_STARTUP_S, PUBLIC_STARTUP_MB = 80.0, 3000.0


def synthetic_case() -> tuple[np.ndarray, np.ndarray]:
    shape = (300, 260, 200)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    radii, centre = (90, 78, 61), (150, 130, 100)
    liver = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) < 1
    rng = np.random.default_rng(0)
    image = np.where(liver, 110.0, -60.0) + rng.normal(0, 12, shape)
    return image.astype(np.float32), liver.astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image")
    parser.add_argument("--label")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.image and args.label:
        image = np.asarray(nib.load(args.image).dataobj, dtype=np.float32)
        label = np.rint(np.asarray(nib.load(args.label).dataobj)).astype(np.uint8)
    else:
        image, label = synthetic_case()
    print(f"volume {image.shape}, liver {int((label >= 1).sum()):,} voxels")

    config = SynthesisConfig()
    tracemalloc.start()
    start = time.perf_counter()
    for sigma in config.texture.sigma_a:
        bank_half_range(sigma, BANK_SHAPE)
    synthesize_tumors(image, label, config, np.random.default_rng(0))
    startup = time.perf_counter() - start
    _, startup_peak = tracemalloc.get_traced_memory()
    print(
        f"start-up (texture statistics + first sample): {startup:.2f} s "
        f"({PUBLIC_STARTUP_S / startup:.0f}x faster than ~80 s), "
        f"peak {startup_peak / 2**20:.0f} MB ({PUBLIC_STARTUP_MB * 2**20 / startup_peak:.0f}x "
        "less than ~3 GB)"
    )
    tracemalloc.stop()  # timing without tracing overhead; memory is traced again below
    print(
        f"{'type':<8}{'inplace ms':>11}{'copying ms':>11}{'vs 0.25 s':>10}{'vs 0.7 s':>9}"
        f"{'min ms':>8}{'tumour vox':>11}  10x target (25 ms / 70 ms)"
    )
    for tumor_type in TUMOR_TYPES:
        cfg = SynthesisConfig(type_probs={t: float(t == tumor_type) for t in TUMOR_TYPES})
        inplace, copying, voxels = [], [], []
        for seed in range(args.repeats):
            work_image, work_label = image.copy(), label.copy()
            t0 = time.perf_counter()
            added = synthesize_tumors_inplace(
                work_image, work_label, cfg, np.random.default_rng(seed)
            )
            inplace.append(time.perf_counter() - t0)
            voxels.append(added)
            t0 = time.perf_counter()
            synthesize_tumors(image, label, cfg, np.random.default_rng(seed))
            copying.append(time.perf_counter() - t0)
        ms = 1000 * np.median(inplace)
        print(
            f"{tumor_type:<8}{ms:>11.1f}{1000 * np.median(copying):>11.1f}"
            f"{1000 * PUBLIC_FAST_S / ms:>9.1f}x{1000 * PUBLIC_SLOW_S / ms:>8.1f}x"
            f"{1000 * min(inplace):>8.1f}{int(np.median(voxels)):>11,}  "
            + (
                "met"
                if ms <= 100 * PUBLIC_FAST_S
                else "met vs 0.7 s"
                if ms <= 100 * PUBLIC_SLOW_S
                else "missed"
            )
        )
    work_image, work_label = image.copy(), label.copy()
    tracemalloc.start()
    synthesize_tumors_inplace(
        work_image,
        work_label,
        SynthesisConfig(type_probs={t: float(t == "mix") for t in TUMOR_TYPES}),
        np.random.default_rng(0),
    )
    _, peak = tracemalloc.get_traced_memory()
    print(f"peak traced memory of one in-place 'mix' sample: {peak / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
