"""Phantom generator speed, as a ratio to the floor of any CT-like generator at that size.

The floor is what every case must pay anyway: drawing white noise over the volume and one
Gaussian blur of it. Run by hand:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom.py
(add --large for one 512x512x300 case, ~4 GB of memory).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from tumorsweep.data.phantom import make_phantom_case


def _best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _floor(shape: tuple[int, int, int]) -> None:
    noise = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    ndimage.gaussian_filter(noise, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", action="store_true", help="also time a 512x512x300 case")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = [((128, 128, 96), (1.0, 1.0, 1.0))]
    if args.large:
        sizes.append(((512, 512, 300), (0.8, 0.8, 1.0)))
    for shape, spacing in sizes:
        repeats = args.repeats if np.prod(shape) < 1e7 else 1
        floor = _best_of(repeats, lambda shape=shape: _floor(shape))
        for tumors in (False, True):
            seconds = _best_of(
                repeats,
                lambda shape=shape, spacing=spacing, tumors=tumors: make_phantom_case(
                    np.random.default_rng(1), shape, spacing, with_tumors=tumors
                ),
            )
            print(
                f"{'x'.join(map(str, shape))} tumours={tumors!s:<5} phantom {seconds:.3f} s, "
                f"noise+blur floor {floor:.3f} s, ratio {seconds / floor:.1f}x"
            )


if __name__ == "__main__":
    main()
