"""Synthesis speed and memory, side by side with the public implementation (issues 3, 14).

    OMP_NUM_THREADS=1 python benchmarks/synthesis.py [--image CT.nii.gz --label LIVER.nii.gz]
        [--public /path/to/SyntheticTumors --public-python /tmp/public-venv/bin/python]

Without files it uses three 1 mm phantom CTs (`tumorsweep.data.make_phantom_case`, seed 0;
`--shapes`): livers of ~1.0 M, ~1.8 M and 4.2 M voxels (the public code's cost grows with the
liver box, ours with the tumours, so the smallest liver is the hardest ratio). Prints per liver
and tumour type the median ms per sample of three paths and median tumour voxels:
  in-place   `synthesize_tumors_inplace` on the whole volume (uint8 label);
  pub chain  `TumorSynthesisd` on float32 MetaTensors of the whole volume: what training calls
             with `data.pipeline=public` (the public code's chain);
  training   what a training sample of the default `data.pipeline=fast` (also the paper
             preset's) spends on synthesis: `SynthesiseLiverBoxd(TumorSynthesisd)` plans the
             event on the cached item `CompactForSamplingd` made (float32 image, uint8 label)
             and the edit is pasted into the 96^3 patch `CropCachedPosNegd` draws for it (one
             per volume, as the paper preset; the patch is cut outside the timing), which
             blends the tumours' regions on the patch's part of them only;
and the training path's min (the least-disturbed run on a shared machine). With `--public`,
the public `SynthesisTumor` is timed on the same CT in the same run (float32 arrays, as its
MONAI pipeline gives; one core; run by `benchmarks/public_code.py` in the side environment)
and the ratios printed (median over median, min over min for the training path); the goal is
>= 20x per type on the training path. Then the one-off start-up and the peak traced memory of
one sample of the largest liver (traced last: tracemalloc slows what runs after it).

Then Pixel2Cancer's cellular automaton (`synthesis.style=ca`, issue 26): the per-event time of
149-step events (one focus; and as-coded events, 1-9 foci with satellites and necrosis) against
a Hu `large` event timed in the same run, and their statistics: tumour volume, connected
components, largest extent (max diameter), mean HU drop, necrotic fraction. `--section ca`
runs only that part; `--ca-device cuda` runs the automaton on the GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

# The checkout this file lives in, before any installed copy of tumorsweep (a worktree, or a
# benchmark run against another branch, would otherwise time the installed code).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from tumorsweep.data.sampling import (
    SYNTH,
    CompactForSamplingd,
    CropCachedPosNegd,
    SynthesiseLiverBoxd,
)
from tumorsweep.synthesis import SynthesisConfig, TumorSynthesisd, synthesize_tumors
from tumorsweep.synthesis.config import TUMOR_TYPES
from tumorsweep.synthesis.synthesize import synthesize_tumors_inplace

PUBLIC_STARTUP_S, PUBLIC_STARTUP_MB = 80.0, 3000.0


# Three 1 mm phantom livers (the project's phantom generator, seed 0): ~1.0 M, ~1.8 M (the issue
# 26 CT's liver size) and 4.2 M voxels. The public code's cost grows with the liver box, ours
# with the tumours, so the smallest liver is the hardest ratio.
SHAPES = ((250, 212, 162), (303, 257, 197), (400, 340, 260))


def phantom_case(shape: tuple[int, int, int] = (400, 340, 260)) -> tuple[np.ndarray, np.ndarray]:
    from tumorsweep.data import make_phantom_case

    image, label = make_phantom_case(np.random.default_rng(0), shape)
    return image, (label >= 1).astype(np.uint8)


def public_times(args, image: np.ndarray, label: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        case, out = Path(folder) / "case.npz", Path(folder) / "times.json"
        np.savez(case, image=image, label=label)
        subprocess.run(
            [str(args.public_python), str(Path(__file__).with_name("public_code.py")), "time",
             "--public", str(args.public), "--case", str(case), "--repeats", str(args.repeats),
             "--out", str(out)],
            check=True,
        )  # fmt: skip
        return json.loads(out.read_text())


def median_ms(run, repeats: int, prepare=lambda seed: None) -> tuple[float, float, list]:
    """Median and min ms of `run(seed, prepare(seed))` over seeds 0..repeats-1; `prepare`
    (fresh arrays for an in-place call, a training patch) runs outside the timing."""
    times, results = [], []
    for seed in range(repeats):
        data = prepare(seed)
        start = time.perf_counter()
        results.append(run(seed, data))
        times.append(time.perf_counter() - start)
        del data
    return 1000 * float(np.median(times)), 1000 * min(times), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image")
    parser.add_argument("--label")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--public", type=Path, help="SyntheticTumors checkout")
    parser.add_argument("--public-python", type=Path, default=Path("/tmp/public-venv/bin/python"))
    parser.add_argument("--section", choices=("all", "hu", "ca"), default="all")
    parser.add_argument("--ca-device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--ca-events", type=int, default=5, help="CA events per row")
    parser.add_argument(
        "--shapes", type=lambda v: tuple(int(n) for n in v.split("x")), nargs="+",
        default=SHAPES, help="phantom shapes (1 mm), e.g. 250x212x162; default: three livers",
    )  # fmt: skip
    args = parser.parse_args()
    if args.image and args.label:
        image = np.asarray(nib.load(args.image).dataobj, dtype=np.float32)
        label = np.rint(np.asarray(nib.load(args.label).dataobj)).astype(np.uint8)
        cases = [(args.image, image, label)]
    else:
        cases = [("x".join(map(str, shape)), *phantom_case(shape)) for shape in args.shapes]
    if args.section in ("all", "ca"):
        name, image, label = cases[-1]
        print(f"volume {image.shape}, liver {int((label >= 1).sum()):,} voxels")
        ca_section(image, label, args)
    if args.section == "ca":
        return
    for name, image, label in cases:
        hu_section(name, image, label, args)
    image, label = cases[-1][1:]
    for kind, copying in (("in-place", False), ("copying", True)):
        work_image, work_label = image.copy(), label.copy()
        cfg = SynthesisConfig(type_probs={t: float(t == "mix") for t in TUMOR_TYPES})
        tracemalloc.start()
        if copying:
            synthesize_tumors(work_image, work_label, cfg, np.random.default_rng(0))
        else:
            synthesize_tumors_inplace(work_image, work_label, cfg, np.random.default_rng(0))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"peak traced memory of one {kind} 'mix' sample: {peak / 2**20:.0f} MB "
            f"({PUBLIC_STARTUP_MB * 2**20 / peak:.0f}x less than the public ~3 GB bank)"
        )


def patch(cached: dict, seed: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """The 96^3 patch the fast chain's crop (`CropCachedPosNegd`, one per volume, pos = neg =
    1) draws from a cached item with random state `seed`: its start and fresh copies of its
    image (float32) and label. The crop's draws read only the cached index counts, which the
    synthesis never changes, so the patch can be drawn before the event."""
    crop = CropCachedPosNegd((96, 96, 96), -175.0, num_samples=1).set_random_state(seed)
    crop.randomize(cached)
    start = crop.starts()[0]
    window = tuple(slice(a, a + p) for a, p in zip(start, crop.patch, strict=True))
    return start, cached["image"][0][window].astype(np.float32), cached["label"][0][window].copy()


def paste(sample: dict, start: tuple[int, ...], image: np.ndarray, label: np.ndarray) -> None:
    """Write a planned event into a training patch, as `CropCachedPosNegd` does."""
    edit = sample[SYNTH]
    if edit is not None:
        edit.apply(image, label, start)


def hu_section(name: str, image: np.ndarray, label: np.ndarray, args) -> None:
    """Per type: the in-place uint8 path, the public chain's and the default training chain's
    transform and, with --public, the public code on the same CT in the same run."""
    label32 = label.astype(np.float32)
    cached = CompactForSamplingd((96, 96, 96), -175.0)(
        {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label32)[None]}
    )  # the cache item of the default chain (patch 96^3, the public window's low end)
    print(f"\n{name}: volume {image.shape}, liver {int((label >= 1).sum()):,} voxels")
    public = public_times(args, image, label) if args.public else None
    # No tracemalloc before the timings: once started it slows numpy's allocations for the
    # rest of the process (2x on the in-place path here), even after tracemalloc.stop().
    start = time.perf_counter()
    synthesize_tumors(image, label, SynthesisConfig(), np.random.default_rng(0))
    startup = time.perf_counter() - start
    print(
        f"{'type':<7}{'in-place':>9}{'pub chain':>10}{'training':>9}{'tr min':>7}"
        f"{'tumour vox':>11}"
        + (f"{'public':>7}{'pub min':>8}{'in-place x':>11}{'chain x':>8}{'tr x':>7}"
           f"{'tr min x':>9}" if public else "")
    )  # fmt: skip
    for tumor_type in TUMOR_TYPES:
        cfg = SynthesisConfig(prob=1.0, type_probs={t: float(t == tumor_type) for t in TUMOR_TYPES})
        for seed in range(3):  # warm-up: per-texture constants are computed once, cached
            synthesize_tumors(image, label, cfg, np.random.default_rng(100 + seed))
        inplace, _, voxels = median_ms(
            lambda s, d, g=cfg: synthesize_tumors_inplace(*d, g, np.random.default_rng(s)),
            args.repeats,
            lambda _: (image.copy(), label.copy()),
        )
        transform = TumorSynthesisd(config=cfg).set_random_state(0)
        chain, _, _ = median_ms(
            lambda s, d, t=transform: t(d),
            args.repeats,
            lambda _: {
                "image": MetaTensor(torch.from_numpy(image.copy())[None]),
                "label": MetaTensor(torch.from_numpy(label32.copy())[None]),
            },
        )
        boxed = SynthesiseLiverBoxd(TumorSynthesisd(config=cfg)).set_random_state(0)
        training, tr_min, _ = median_ms(
            lambda s, d, t=boxed: paste(t(cached), *d), args.repeats, lambda s: patch(cached, s)
        )
        line = (
            f"{tumor_type:<7}{inplace:>9.1f}{chain:>10.1f}{training:>9.1f}{tr_min:>7.1f}"
            f"{int(np.median(voxels)):>11,}"
        )
        if public:
            ms = 1000 * public[tumor_type]["median_s"]
            best = 1000 * public[tumor_type]["min_s"]
            line += (
                f"{ms:>7.0f}{best:>8.0f}{ms / inplace:>10.1f}x{ms / chain:>7.1f}x"
                f"{ms / training:>6.1f}x{best / tr_min:>8.1f}x"
            )
        print(line)
    print(
        f"start-up (texture constants + first sample): {startup:.2f} s "
        f"({PUBLIC_STARTUP_S / startup:.0f}x faster than ~80 s)"
    )


def ca_section(image: np.ndarray, label: np.ndarray, args) -> None:
    """CA event cost and statistics beside a Hu large event, same CT, same run."""
    from scipy import ndimage

    from tumorsweep.synthesis.cellular import DEAD, synthesize_ca
    from tumorsweep.synthesis.config import CellularConfig

    torch.set_num_threads(1)
    box = ndimage.find_objects((label >= 1).astype(np.uint8))[0]  # the organ's full box
    hu = SynthesisConfig(type_probs={t: float(t == "large") for t in TUMOR_TYPES})
    synthesize_tumors(image, label, hu, np.random.default_rng(99))  # warm-up
    hu_ms, _, _ = median_ms(
        lambda s, d: synthesize_tumors_inplace(*d, hu, np.random.default_rng(s)),
        args.repeats,
        lambda _: (image.copy(), label.copy()),
    )
    rows = {
        "one focus": CellularConfig(
            steps=(149, 149), seeds=(1, 1), satellite_prob=0.0,
            necrosis_prob=0.0, device=args.ca_device,
        ),
        "one focus, necrosis": CellularConfig(
            steps=(149, 149), seeds=(1, 1), satellite_prob=0.0,
            necrosis_prob=1.0, device=args.ca_device,
        ),
        "as coded (1-9 foci)": CellularConfig(
            steps=(149, 149), device=args.ca_device
        ),
        "as coded, steps 5-149": CellularConfig(device=args.ca_device),
    }  # fmt: skip
    print(
        f"\nPixel2Cancer CA on {args.ca_device}, {torch.get_num_threads()} thread(s), "
        f"{args.ca_events} events per row; Hu large event: {hu_ms:.1f} ms (median)"
    )
    print(
        f"{'event':<24}{'ms/event':>9}{'x Hu large':>11}{'voxels':>10}{'comps':>6}"
        f"{'max diam mm':>12}{'HU drop':>8}{'necrotic':>9}"
    )
    for name, cfg in rows.items():
        times, stats = [], []
        for seed in range(args.ca_events):
            work_image, work_label = image[box].copy(), label[box].copy()
            start = time.perf_counter()
            _, tumour = synthesize_ca(work_image, work_label, cfg, hu.texture, seed)
            if args.ca_device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            grown = (work_label == 2) & (label[box] == 1)
            parts, count = ndimage.label(grown, structure=np.ones((3, 3, 3)))  # 26-connected
            extent = max(
                (max(s.stop - s.start for s in sl) for sl in ndimage.find_objects(parts)),
                default=0,
            )
            dead = np.zeros(grown.shape, dtype=bool)
            if tumour is not None:
                dead[tumour.window] = tumour.states.cpu().numpy() == DEAD
            drop = float((image[box] - work_image)[grown].mean()) if grown.any() else 0.0
            necrotic = float(dead[grown].mean()) if grown.any() else 0.0
            stats.append((int(grown.sum()), count, extent, drop, necrotic))
        ms = 1000 * float(np.median(times))
        med = np.median(np.array(stats, dtype=float), axis=0)
        print(
            f"{name:<24}{ms:>9.0f}{ms / hu_ms:>10.1f}x{int(med[0]):>10,}{int(med[1]):>6}"
            f"{med[2]:>12.0f}{med[3]:>8.1f}{med[4]:>9.2f}"
        )
    print("(medians over events; max diam = largest component's longest box side, 1 mm voxels)")


if __name__ == "__main__":
    main()
