"""What DiffTumor's batch synthesis puts into the demo's training crops (issue 22).

    python benchmarks/difftumor_patches.py [--crops 64] [--prob P] [--seed 0]

On the demo phantom (the `demo` trial preset) and its auto-trained generator (the sweep
driver's cache under `$TUMORSWEEP_CACHE/generators/<key>`, trained here when absent), cuts
`--crops` liver-centred training crops (the demo patch size) from the healthy training cases,
runs them through `BatchDiffTumor` (the trainer's synthesis step) in batches of the demo batch
size, and prints:
- the share of crops that received a synthetic tumour (the gate `synthesis.difftumor.prob`);
- per synthetic tumour: the label volume, whether the mask reaches the latent grid (nearest
  interpolation samples every `latent_factor`-th voxel of the generator window), the volume
  where the image visibly changed (HU drop >= `--visible-hu` against the crop before synthesis),
  and the HU contrast of tumour against the liver ring around it (2 voxels);
- the same contrast for the phantom's real lesions (the real-tumour training cases).
Crops are cut around a random liver voxel (not the trainer's crop-selection loop); what is
measured is the synthesis step on crops that hold liver.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from tumorsweep.config import make_config
from tumorsweep.data.cases import cache_dir, resolve_cases
from tumorsweep.difftumor.auto import cache_key
from tumorsweep.difftumor.job import GeneratorJob, run_job
from tumorsweep.generative import batch as batch_step
from tumorsweep.generative.batch import BatchDiffTumor
from tumorsweep.generative.config import generator_config
from tumorsweep.generative.store import CONFIG_FILE, load_generator

RING = 2  # voxels of liver around a tumour that count as its surrounding liver


class _Recording(BatchDiffTumor):
    """The production step, remembering each filled event (window, mask) for the report."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events: list = []

    def _fill(self, image, label, events, model, rng) -> None:  # noqa: ANN001
        super()._fill(image, label, events, model, rng)
        self.events.extend(events)


def contrast(image: np.ndarray, tumour: np.ndarray, liver: np.ndarray) -> float:
    """Mean HU of the liver ring (RING voxels) around `tumour` minus the tumour's mean HU."""
    ring = ndimage.binary_dilation(tumour, iterations=RING) & liver & ~tumour
    if not ring.any() or not tumour.any():
        return float("nan")
    return float(image[ring].mean() - image[tumour].mean())


def _read(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(nib.load(entry["image"]).get_fdata(), dtype=np.float32)
    label = np.rint(np.asarray(nib.load(entry["label"]).get_fdata())).astype(np.uint8)
    return image, label


def _generator(cfg, cases):  # noqa: ANN001, ANN202
    config = generator_config("demo", cfg.data.spacing)
    folder = cache_dir() / "generators" / cache_key(config, cases)
    if not (folder / CONFIG_FILE).is_file():
        print(f"training the demo generator into {folder} ...", flush=True)
        run_job(GeneratorJob(config, cases, folder))
    print(f"generator: {folder}")
    return load_generator(folder)


def _crops(cfg, cases, count: int, rng: np.random.Generator):  # noqa: ANN001, ANN202
    size = cfg.schedule.patch_size
    volumes = [_read(e) for e in cases.train]
    images, labels = [], []
    for k in range(count):
        image, label = volumes[k % len(volumes)]
        liver = np.argwhere(label >= 1)
        centre = liver[rng.integers(len(liver))]
        shape = label.shape
        lo = [min(max(0, c - s // 2), n - s) for c, s, n in zip(centre, size, shape, strict=True)]
        box = tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))
        images.append(image[box])
        labels.append(label[box])
    return np.stack(images), np.stack(labels)


def _event_rows(step: _Recording, before: np.ndarray, after: np.ndarray, labels, args) -> list:
    factor = step.generator.config.latent_factor
    rows = []
    for event in step.events:
        mask = event.mask
        latent_hit = bool(mask[::factor, ::factor, ::factor].any())
        old = before[event.index][event.window]
        new = after[event.index][event.window]
        liver = labels[event.index][event.window] >= 1
        drop = old - new
        visible = mask & (drop >= args.visible_hu)
        rows.append(
            {
                "label": int(mask.sum()),
                "latent": latent_hit,
                "visible": int(visible.sum()),
                "contrast": contrast(new, mask, liver),
                "drop": float(drop[mask].mean()),
                "model": event.model,
            }
        )
    return rows


def _real_lesions(cases) -> list[float]:  # noqa: ANN001
    values = []
    for entry in cases.train_tumor:
        image, label = _read(entry)
        components, count = ndimage.label(label == 2)
        for k in range(1, count + 1):
            values.append(contrast(image, components == k, label >= 1))
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=64)
    parser.add_argument("--prob", type=float, default=None, help="default: the demo's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--visible-hu", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="trial override k=v")
    parser.add_argument(
        "--keep-off-latent",
        action="store_true",
        help="the behaviour before issue 22's fix: keep masks that miss the latent grid",
    )
    args = parser.parse_args(argv)
    if args.keep_off_latent:
        batch_step.reaches_latent = lambda mask, factor: bool(mask.any())
    torch.set_num_threads(args.threads)
    overrides = {"synthesis.style": "difftumor", "synthesis.generator": "auto"}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = float(value) if value.replace(".", "", 1).isdigit() else value
    if args.prob is not None:
        overrides["synthesis.difftumor.prob"] = args.prob
    cfg = make_config("demo", overrides)
    cases = resolve_cases(cfg.data)
    generator = _generator(cfg, cases)
    low, high = cfg.data.window
    step = _Recording(generator, cfg.synthesis, cfg.data.window)
    rng = np.random.default_rng(args.seed)
    images, labels = _crops(cfg, cases, args.crops, rng)
    batch = cfg.schedule.batch_size
    received, after_all = [], []
    for start in range(0, args.crops, batch):
        unit = np.clip((images[start : start + batch] - low) / (high - low), 0, 1)
        lab = torch.from_numpy(labels[start : start + batch, None].astype(np.int64))
        step.events = []
        new, new_label, got = step(torch.from_numpy(unit[:, None]), lab, None, rng)
        after = new[:, 0].numpy() * (high - low) + low
        before = unit * (high - low) + low
        rows = _event_rows(step, before, after, labels[start : start + batch], args)
        after_all.extend(rows)
        received.extend(got.tolist())
    shares = np.mean(received)
    print(f"crops {args.crops}, prob {cfg.synthesis.difftumor.prob}: received {shares:.3f}")
    _summary(after_all, _real_lesions(cases), generator.config.latent_factor, args)


def _summary(rows: list, real: list[float], factor: int, args) -> None:  # noqa: ANN001
    if not rows:
        print("no synthetic tumours")
        return
    label = np.array([r["label"] for r in rows])
    visible = np.array([r["visible"] for r in rows])
    latent = np.array([r["latent"] for r in rows])
    con = np.array([r["contrast"] for r in rows])
    drop = np.array([r["drop"] for r in rows])
    early = np.array([r["model"] == "early" for r in rows])
    print(f"synthetic tumours: {len(rows)} ({early.sum()} early)")
    print(f"  mask off the latent grid (every {factor}th voxel): {np.mean(~latent):.3f}")
    print(
        f"  label voxels {label.sum()}, visibly changed (drop >= {args.visible_hu:g} HU) "
        f"{visible.sum()} ({visible.sum() / label.sum():.3f})"
    )
    for name, sel in (("on latent", latent), ("off latent", ~latent)):
        if sel.any():
            print(
                f"  {name}: n {sel.sum()}, mean label voxels {label[sel].mean():.1f}, visible "
                f"share {visible[sel].sum() / max(1, label[sel].sum()):.3f}, contrast "
                f"{np.nanmean(con[sel]):.1f} HU, drop {drop[sel].mean():.1f} HU"
            )
    print(f"  contrast (liver ring - tumour), all: median {np.nanmedian(con):.1f} HU")
    print(f"real lesions: n {len(real)}, contrast median {np.nanmedian(real):.1f} HU")


if __name__ == "__main__":
    os.environ.setdefault("TUMORSWEEP_CACHE", str(Path.cwd() / ".tumorsweep"))
    main()
