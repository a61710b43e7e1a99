"""DiffTumor generator cost: training time per epoch and synthesis time per sample (issue 13).

    python benchmarks/difftumor.py [--generator DIR] [--samples 10] [--threads 2]

1. Training, demo preset, on the demo phantom's real-tumour training cases: seconds per epoch
   of each stage (autoencoder, early and late denoiser), from a short real run
   (`--epochs` per stage).
2. Training, paper preset (96^3 patches, 24^3 x 8 latent): seconds per optimiser step of the
   autoencoder and of a denoiser on random data, and the epoch time they imply
   (`crops_per_epoch / batch` steps), to scale the paper's costs from this machine.
3. Synthesis, per healthy demo case: median ms per `DiffTumorSynthesisd` call for each tumour
   class (early: 4 DDPM steps; medium/large: DDIM, `--ddim-steps`), with the demo generator
   just trained (or `--generator DIR`).
`step_seconds` and `sampling_seconds` are also what `benchmarks/gpu_check.py` runs on a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tumorsweep.generative.config import GeneratorConfig, generator_config
from tumorsweep.generative.models import build_autoencoder, build_denoiser, training_scheduler
from tumorsweep.generative.sampler import Generator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(
    config: GeneratorConfig, device: torch.device, steps: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Seconds per training step (random data, the preset's batch sizes) of the autoencoder
    and of one denoiser, and peak GPU memory in GiB (CUDA only)."""
    torch.manual_seed(0)
    spec, size = config.training, config.patch_size
    autoencoder = build_autoencoder(config).to(device)
    denoiser = build_denoiser(config).to(device)
    scheduler = training_scheduler(config.late, config.prediction_type)
    image = torch.rand(spec.autoencoder_batch, 1, size, size, size, device=device) * 2 - 1
    latent_shape = (
        spec.diffusion_batch,
        config.autoencoder.latent_channels,
        *(config.latent_size,) * 3,
    )
    crops = torch.rand(spec.diffusion_batch, 1, size, size, size, device=device) * 2 - 1
    mask = (torch.rand_like(crops) > 0.9).float()
    ae_opt = torch.optim.Adam(autoencoder.parameters(), lr=1e-4)
    dn_opt = torch.optim.Adam(denoiser.parameters(), lr=1e-4)

    def ae_step() -> None:
        recon, mu, sigma = autoencoder(image)
        loss = (recon - image).abs().mean() + 1e-6 * (mu.pow(2) + sigma.pow(2)).mean()
        ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        ae_opt.step()

    def denoiser_step() -> None:
        with torch.no_grad():  # what a real step encodes: the crop and the blanked crop
            target = autoencoder.encode(crops)[0]
            cond = autoencoder.encode(crops * (1 - mask))[0]
            covered = F.avg_pool3d(mask, config.latent_factor)
        t = torch.randint(0, config.late.timesteps, (len(target),), device=device)
        noisy = scheduler.add_noise(target, torch.randn(latent_shape, device=device), t)
        out = denoiser(torch.cat([noisy, cond, covered], dim=1), timesteps=t)
        loss = F.l1_loss(out, target)
        dn_opt.zero_grad(set_to_none=True)
        loss.backward()
        dn_opt.step()

    result = {}
    for name, step in (("autoencoder", ae_step), ("denoiser", denoiser_step)):
        for _ in range(warmup):
            step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        began = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        result[f"{name}_step_s"] = (time.perf_counter() - began) / steps
        if device.type == "cuda":
            result[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def sampling_seconds(
    config: GeneratorConfig, device: torch.device, batch: int, ddim_steps: int, repeats: int = 3
) -> dict[str, float]:
    """Seconds per `Generator.inpaint` call of `batch` patches, early and late (random
    weights: the cost does not depend on them)."""
    torch.manual_seed(0)
    generator = Generator(
        config=config,
        autoencoder=build_autoencoder(config).to(device).eval(),
        denoisers={k: build_denoiser(config).to(device).eval() for k in ("early", "late")},
        latent_scale=1.0,
    )
    size = config.patch_size
    image = torch.full((batch, 1, size, size, size), 100.0, device=device)
    mask = torch.zeros_like(image)
    mask[..., size // 3 : 2 * size // 3, size // 3 : 2 * size // 3, size // 3 : 2 * size // 3] = 1
    result = {}
    for kind in ("early", "late"):
        generator.inpaint(image, mask, kind, ddim_steps=ddim_steps)
        _sync(device)
        began = time.perf_counter()
        for _ in range(repeats):
            generator.inpaint(image, mask, kind, ddim_steps=ddim_steps)
        _sync(device)
        result[f"{kind}_s"] = (time.perf_counter() - began) / repeats
    return result


def _train_demo(epochs: int, root: Path) -> tuple[Path, dict, GeneratorConfig]:
    from tumorsweep.config import make_config
    from tumorsweep.data.cases import resolve_cases
    from tumorsweep.difftumor.job import GeneratorJob, run_job
    from tumorsweep.generative.store import read_generator_info

    data = make_config("demo").data
    overrides = {f"training.{s}_epochs": epochs for s in ("autoencoder", "diffusion")}
    config = generator_config("demo", data.spacing, overrides)
    cases = resolve_cases(data)
    out = run_job(GeneratorJob(config, cases, root / "generator"))
    return out, read_generator_info(out).record, config


def _synthesis_ms(generator_dir: Path, samples: int, ddim_steps: int) -> dict[str, list[float]]:
    from tumorsweep.config import make_config
    from tumorsweep.data.cases import resolve_cases
    from tumorsweep.data.transforms import resampled_pair
    from tumorsweep.generative import DiffTumorSynthesisd, load_generator
    from tumorsweep.synthesis import SynthesisConfig

    data = make_config("demo").data
    base = make_config("demo").synthesis.model_dump()
    case = resolve_cases(data).train[0]
    sample = resampled_pair(data.spacing)({"image": case["image"], "label": case["label"]})
    generator = load_generator(generator_dir)
    times: dict[str, list[float]] = {}
    for kind in ("early", "medium", "large"):
        probs = {k: float(k == kind) for k in ("early", "medium", "large")}
        config = SynthesisConfig.model_validate(
            base | {"style": "difftumor", "generator": str(generator_dir),
                    "difftumor": {**probs, "prob": 1.0, "ddim_steps": ddim_steps}}
        )  # fmt: skip
        transform = DiffTumorSynthesisd(config=config, generator=generator)
        transform.set_random_state(0)
        transform(sample)  # warm-up
        for _ in range(samples):
            began = time.perf_counter()
            transform(sample)
            times.setdefault(kind, []).append((time.perf_counter() - began) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, help="demo-preset generator folder to time")
    parser.add_argument("--epochs", type=int, default=2, help="demo training epochs per stage")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-paper", action="store_true", help="no paper-size step timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TUMORSWEEP_CACHE", str(Path.cwd() / ".tumorsweep"))
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.generator
        if folder is None:
            folder, record, config = _train_demo(args.epochs, Path(tmp))
            print("\n| stage (demo preset) | seconds per epoch | steps per epoch |")
            print("|---|---|---|")
            spec = config.training
            for stage, epochs, batch in (
                ("autoencoder", spec.autoencoder_epochs, spec.autoencoder_batch),
                ("early", spec.diffusion_epochs, spec.diffusion_batch),
                ("late", spec.diffusion_epochs, spec.diffusion_batch),
            ):
                steps = -(-spec.crops_per_epoch // batch)
                print(f"| {stage} | {record['seconds'][stage] / epochs:.1f} | {steps} |")
        times = _synthesis_ms(folder, args.samples, args.ddim_steps)
        print(f"\n| tumour class | median ms per sample (min) | DDIM steps {args.ddim_steps} |")
        print("|---|---|---|")
        for kind, values in times.items():
            print(f"| {kind} | {statistics.median(values):.0f} ({min(values):.0f}) | |")
    if not args.skip_paper:
        paper = generator_config("paper", (1.0, 1.0, 1.0))
        steps = step_seconds(paper, cpu, steps=1, warmup=1)
        print("\nPaper preset on this CPU (random data, 96^3 patches):")
        for name, batch in (
            ("autoencoder", paper.training.autoencoder_batch),
            ("denoiser", paper.training.diffusion_batch),
        ):
            crops = paper.training.crops_per_epoch
            per_epoch = steps[f"{name}_step_s"] * crops / batch
            print(
                f"  {name}: {steps[f'{name}_step_s']:.1f} s per step (batch {batch}), "
                f"{per_epoch / 3600:.1f} h per epoch of {crops} crops"
            )
        sampled = sampling_seconds(paper, cpu, batch=1, ddim_steps=args.ddim_steps, repeats=1)
        print(f"  sampling one 96^3 patch: early {sampled['early_s']:.1f} s, "
              f"late ({args.ddim_steps} DDIM steps) {sampled['late_s']:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
