"""Parameters and CPU forward+backward seconds per backbone, printed as a Markdown table.

Run by hand (minutes): `.venv/bin/python benchmarks/models_cpu.py`. Batch 1, 2 torch threads,
random input, loss = mean of squared logits; the time is the fastest of `--repeats` runs.
SegMamba's pure-PyTorch scan is far too slow on CPU at 96^3, so it is timed at
`--segmamba-size` (say which size in the README).
"""

from __future__ import annotations

import argparse
import time

import torch

from tumorsweep.errors import TumorsweepError
from tumorsweep.models import BACKBONES, build, count_parameters


def forward_backward_seconds(model: torch.nn.Module, size: int, repeats: int) -> float:
    """Fastest wall time of one forward+backward on a (1, 1, size, size, size) input."""
    x = torch.randn(1, 1, size, size, size)
    best = float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(x).square().mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--size", type=int, default=96, help="cube side for non-SegMamba")
    parser.add_argument("--segmamba-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for name in args.backbones:
        size = args.segmamba_size if name.startswith("segmamba") else args.size
        model = build(name)
        params = count_parameters(model)
        try:
            seconds = f"{forward_backward_seconds(model, size, args.repeats):.1f}"
        except (ImportError, TumorsweepError) as err:  # e.g. SwinUNETR without einops
            seconds = f"n/a ({str(err).splitlines()[0]})"
        rows.append(f"| {name} | {params / 1e6:.1f} M | {size}^3 | {seconds} |")
        print(rows[-1], flush=True)

    print(
        f"\nCPU, {args.threads} threads, batch 1, one forward+backward (best of {args.repeats}):\n"
    )
    print("| Backbone | Parameters | Input | CPU fwd+bwd (s) |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
