"""GPU check of every backbone: training speed and memory, and SegMamba's kernel vs fallback.

On a GPU machine: `python benchmarks/gpu_check.py` trains each backbone for a few iterations at
96^3, batch 2, AMP (bf16), AdamW, Dice + cross-entropy on random data, and prints iterations/s
and peak GPU memory. It then times the DiffTumor generator (paper preset): a training step of
its autoencoder and of a denoiser, and synthesis of 1 and 8 patches (`benchmarks/difftumor.py`).
When `mamba_ssm` imports, it also compares the official selective-scan
kernel with our pure-PyTorch fallback (max abs difference of outputs and gradients), for the
scan op alone and for each whole SegMamba model (float32, `--compare-size`). Data loading:
UNet trained by the production trainer and loader (`tumorsweep.train.build`, paper preset) on
phantom CTs with a 410 x 410 x 450 mm field of view, `data_wait_fraction` per
`--data-workers` count (default 4, the public code's).

`--dry-run` runs the same code on CPU at tiny sizes (32^3, batch 1, one iteration, narrow
SegMamba) so the script is known to work before a GPU is spent on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss

from tumorsweep.models import BACKBONES, build, count_parameters
from tumorsweep.models.segmamba import SegMamba
from tumorsweep.models.selective_scan import (
    ScanBackend,
    kernel_available,
    selective_scan,
    selective_scan_chunked,
)

NUM_CLASSES = 3
DRY_SEGMAMBA = {"widths": (8, 16, 32, 64), "hidden_size": 64}


@dataclass
class Settings:
    device: torch.device
    size: int
    batch: int
    iterations: int
    warmup: int
    compare_size: int
    dry_run: bool


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(name: str, settings: Settings) -> torch.nn.Module:
    overrides = DRY_SEGMAMBA if settings.dry_run and name.startswith("segmamba") else {}
    return build(name, **overrides).to(settings.device)


def train_speed(name: str, settings: Settings) -> tuple[float, float | None, int]:
    """Iterations/s over `iterations` timed AMP steps after `warmup`, peak memory in GiB (CUDA
    only) and the parameter count."""
    device = settings.device
    torch.manual_seed(0)
    model = _build(name, settings).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    shape = (settings.batch, 1, settings.size, settings.size, settings.size)
    image = torch.randn(shape, device=device)
    label = torch.randint(0, NUM_CLASSES, (settings.batch, 1, *shape[2:]), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(model(image), label)
        loss.backward()
        optimizer.step()

    for _ in range(settings.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(settings.iterations):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return settings.iterations / seconds, peak, count_parameters(model)


def data_wait(
    settings: Settings, workers: int, root: str, epochs: int, crops: int
) -> tuple[float, float, int]:
    """UNet trained by the production trainer (`tumorsweep.train.build` + `train_epoch`: paper
    preset, the training loader with its cache, tumour synthesis in HU, 1:1 crops,
    augmentation, AMP) on phantom CTs: the share of training time spent waiting for the next
    batch (`data_wait_fraction`, pooled over the epochs after the first, which also starts the
    loader workers), seconds per step and steps per epoch. Near 0: the loader keeps the GPU
    fed."""
    from tumorsweep.config import make_config
    from tumorsweep.data.cases import resolve_cases
    from tumorsweep.session import LocalSession
    from tumorsweep.tracking import NullLogger
    from tumorsweep.train import build, train_epoch

    overrides = {
        "data.root": root,
        "data.loader_workers": workers,
        "schedule.patch_size": (settings.size,) * 3,
        "schedule.batch_size": settings.batch,
        "schedule.crops_per_volume": crops,
        "model.name": "unet",
    }
    cfg = make_config("paper", overrides)
    session = LocalSession()
    session.device = settings.device
    trainer = build(cfg, resolve_cases(cfg.data), session, NullLogger())
    trainer.timing = {"time_train_s": 0.0}  # what fit() starts train_epoch with
    waited = trained = 0.0
    steps = len(trainer.loader)
    for epoch in range(epochs):
        result = train_epoch(trainer, epoch)
        if epoch:
            waited += result["data_wait_fraction"] * result["epoch_seconds"]
            trained += result["epoch_seconds"]
    return waited / trained, trained / ((epochs - 1) * steps), steps


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def compare_scan_op(reference: ScanBackend, device: torch.device) -> tuple[float, float]:
    """Max abs difference (output, input gradients) of `reference` vs the chunked fallback on
    random scan inputs of a stage-1-like size."""
    g = torch.Generator(device="cpu").manual_seed(0)
    batch, channels, states, length = 2, 96, 16, 4096
    raw = {
        "u": torch.randn(batch, channels, length, generator=g),
        "delta": torch.randn(batch, channels, length, generator=g) - 2,
        "A": -torch.exp(torch.randn(channels, states, generator=g)),
        "B": torch.randn(batch, states, length, generator=g),
        "C": torch.randn(batch, states, length, generator=g),
        "D": torch.randn(channels, generator=g),
        "delta_bias": torch.randn(channels, generator=g) * 0.1,
    }

    def run(fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs = {k: v.to(device).requires_grad_() for k, v in raw.items()}
        out = fn(**inputs)
        grads = torch.autograd.grad(out.square().sum(), list(inputs.values()))
        return out, list(grads)

    ref_out, ref_grads = run(lambda **kw: selective_scan(**kw, backend=reference))
    out, grads = run(selective_scan_chunked)
    grad_diff = max(_max_abs_diff(a, b) for a, b in zip(ref_grads, grads, strict=True))
    return _max_abs_diff(ref_out, out), grad_diff


def compare_model(name: str, reference: ScanBackend, settings: Settings) -> tuple[float, float]:
    """Max abs difference (logits, parameter gradients) of one SegMamba run with the
    `reference` scan vs the fallback: same weights, same input, float32."""
    torch.manual_seed(0)
    model = _build(name, settings)
    assert isinstance(model, SegMamba)
    size = settings.compare_size
    x = torch.randn(1, 1, size, size, size, device=settings.device)
    results = []
    for backend in (reference, "fallback"):
        model.set_scan_backend(backend)
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.detach().clone() for p in model.parameters()]))
    (ref_out, ref_grads), (out, grads) = results
    grad_diff = max(_max_abs_diff(a, b) for a, b in zip(ref_grads, grads, strict=True))
    return _max_abs_diff(ref_out, out), grad_diff


def difftumor_figures(settings: Settings) -> int:
    """DiffTumor generator on this device (paper preset; demo preset in a dry run): seconds
    per training step of the autoencoder and a denoiser with peak memory, and seconds per
    synthesis call of 1 and 8 patches (early: 4 DDPM steps; late: 50 DDIM steps). Returns
    the number of failures."""
    from difftumor import sampling_seconds, step_seconds

    from tumorsweep.generative import generator_config

    preset = "demo" if settings.dry_run else "paper"
    config = generator_config(preset, (1.0, 1.0, 1.0))
    steps = 1 if settings.dry_run else settings.iterations
    print(f"\nDiffTumor generator, {preset} preset ({config.patch_size}^3 patches):\n")
    try:
        train = step_seconds(config, settings.device, steps=steps, warmup=settings.warmup)
        spec = config.training
        for name, batch in (
            ("autoencoder", spec.autoencoder_batch),
            ("denoiser", spec.diffusion_batch),
        ):
            peak = train.get(f"{name}_peak_gib")
            peak_text = "n/a" if peak is None else f"{peak:.1f} GiB"
            epoch_h = train[f"{name}_step_s"] * spec.crops_per_epoch / batch / 3600
            print(
                f"| {name} step, batch {batch} | {train[f'{name}_step_s']:.3f} s | peak "
                f"{peak_text} | {epoch_h:.2f} h per {spec.crops_per_epoch}-crop epoch |"
            )
        for batch in (1, 8):
            sample = sampling_seconds(
                config, settings.device, batch, 50, repeats=1 if settings.dry_run else 3
            )
            print(
                f"| synthesis, {batch} patch(es) | early {sample['early_s']:.3f} s | late "
                f"{sample['late_s']:.3f} s | per patch: {sample['late_s'] / batch:.3f} s late |"
            )
    except Exception as err:  # the other figures stay useful
        print(f"| DiffTumor | failed: {type(err).__name__}: {str(err).splitlines()[0]} |")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--compare-size", type=int, default=64)
    parser.add_argument("--data-workers", type=int, nargs="+", default=[4])
    parser.add_argument("--data-cases", type=int, default=16, help="healthy phantom CTs")
    # A 410 x 410 x 450 mm field of view like the 512x512x300 CTs at 0.8x0.8x1.5 mm, made 8x
    # faster at coarser voxels; the loader resamples to 1 mm either way.
    parser.add_argument("--data-shape", type=int, nargs=3, default=[256, 256, 150])
    parser.add_argument("--data-spacing", type=float, nargs=3, default=[1.6, 1.6, 3.0])
    parser.add_argument("--data-epochs", type=int, default=6)
    parser.add_argument("--crops", type=int, default=1, help="schedule.crops_per_volume")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    args = parser.parse_args()

    if args.dry_run:
        settings = Settings(torch.device("cpu"), 32, 1, 1, 0, 32, dry_run=True)
        args.data_workers = [0, 1]
    elif torch.cuda.is_available():
        settings = Settings(
            device=torch.device("cuda"),
            size=args.size,
            batch=args.batch,
            iterations=args.iterations,
            warmup=args.warmup,
            compare_size=args.compare_size,
            dry_run=False,
        )
    else:
        print("no CUDA device: use --dry-run for the CPU path", file=sys.stderr)
        return 2
    device_name = (
        torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else "CPU"
    )
    print(f"device: {device_name}; torch {torch.__version__}; mamba_ssm: {kernel_available()}")
    nslices = build("segmamba_tom", patch_size=settings.size, **DRY_SEGMAMBA).nslices
    print(f"segmamba_tom nslices at {settings.size}^3: {nslices}")

    failures = 0
    rows = []
    for name in args.backbones:
        try:
            its, peak, params = train_speed(name, settings)
            peak_text = "n/a" if peak is None else f"{peak:.1f}"
            rows.append(f"| {name} | {params / 1e6:.1f} M | {its:.2f} | {peak_text} |")
        except Exception as err:  # one broken backbone must not hide the others' numbers
            failures += 1
            reason = str(err).splitlines()[0] if str(err) else ""
            rows.append(f"| {name} | - | failed: {type(err).__name__}: {reason} | - |")
        print(rows[-1], flush=True)
    print(
        f"\nTraining, {settings.size}^3, batch {settings.batch}, AMP bf16, "
        f"{settings.iterations} iterations after {settings.warmup} warm-up ({device_name}):\n"
    )
    print("| Backbone | Parameters | it/s | peak GiB |\n|---|---|---|---|")
    print("\n".join(rows))

    import tempfile

    from tumorsweep.data import write_phantom_dataset

    with tempfile.TemporaryDirectory() as root:
        shape = (64, 64, 40) if settings.dry_run else tuple(args.data_shape)
        spacing = (2.0, 2.0, 2.0) if settings.dry_run else tuple(args.data_spacing)
        cases = 4 if settings.dry_run else args.data_cases
        epochs = 2 if settings.dry_run else args.data_epochs
        write_phantom_dataset(root, cases=cases + 3, seed=0, shape=shape, spacing=spacing,
                              tumor_cases=3)  # fmt: skip
        print(
            f"\nData loading: production trainer, UNet, paper preset (1 mm, synthesis, "
            f"augmentation) on {cases} healthy phantom CTs {shape} at {spacing} mm, "
            f"{settings.size}^3 patches, batch {settings.batch}, {epochs - 1} epochs after the "
            "first:\n"
        )
        print(
            "| DataLoader workers | data_wait_fraction | s/step | steps/epoch |\n|---|---|---|---|"
        )
        for workers in args.data_workers:
            fraction, per_step, steps = data_wait(settings, workers, root, epochs, args.crops)
            print(f"| {workers} | {fraction:.1%} | {per_step:.3f} | {steps} |", flush=True)

    failures += difftumor_figures(settings)

    # The dry run compares the fallback with itself: it checks the code path, not the kernel.
    use_kernel = kernel_available() and settings.device.type == "cuda"
    reference: ScanBackend = "kernel" if use_kernel else "fallback"
    if not use_kernel and not settings.dry_run:
        print("\nmamba_ssm does not import: kernel vs fallback comparison skipped")
        return 1 if failures else 0
    print(f"\n{reference} vs fallback (max abs difference, float32):\n")
    print("| What | Output | Gradients |\n|---|---|---|")
    out_diff, grad_diff = compare_scan_op(reference, settings.device)
    print(f"| selective scan op (2x96x4096, 16 states) | {out_diff:.2e} | {grad_diff:.2e} |")
    for name in [n for n in args.backbones if n.startswith("segmamba")]:
        try:
            out_diff, grad_diff = compare_model(name, reference, settings)
            print(f"| {name} at {settings.compare_size}^3 | {out_diff:.2e} | {grad_diff:.2e} |")
        except Exception as err:
            failures += 1
            reason = str(err).splitlines()[0] if str(err) else ""
            print(f"| {name} | failed: {type(err).__name__}: {reason} | - |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
