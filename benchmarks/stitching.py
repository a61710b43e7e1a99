"""How often float16 stitching of sliding-window logits flips a voxel's argmax against float32.

Trains a small MONAI UNet for `--steps` steps (seeded, one thread: the same model on any
machine) on the built-in phantom CTs (training list, 4 x 32^3 patches at 2 mm), then on every
held-out phantom case blends the same windows in float16 (the image handed to MONAI in float16,
as the blend dtype follows it) and in float32 and counts:
- argmax flips on the resampled grid (the logits themselves);
- flips of the native-grid prediction per protocol (tumorsweep: argmax, labels inverted
  nearest; hu2023: logits inverted linearly, then argmax), before post-processing;
- the change of every registered metric per case after each protocol's post-processing.
Run by hand (one core, about 3-4 minutes):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stitching.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.data import CacheDataset, DataLoader  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402

from tumorsweep.data import write_phantom_dataset  # noqa: E402
from tumorsweep.data.transforms import eval_transforms, train_transforms  # noqa: E402
from tumorsweep.evaluate import (  # noqa: E402
    PROTOCOLS,
    case_metrics,
    predict_case,
    registry,
    sliding_window_logits,
)
from tumorsweep.models import build  # noqa: E402

SPACING = (2.0, 2.0, 2.0)
PATCH = (32, 32, 32)
ROI = (64, 64, 64)
OVERLAP = 0.75


def train(cases: list[dict], steps: int, seed: int) -> torch.nn.Module:
    """A small UNet trained on the cases for `steps` steps (AdamW, Dice + cross-entropy)."""
    torch.manual_seed(seed)
    model = build("unet", channels=(8, 16, 32, 64, 128))
    chain = train_transforms(SPACING, patch_size=PATCH, num_samples=4)
    chain.set_random_state(seed)
    loader = DataLoader(CacheDataset(cases, chain, progress=False), batch_size=1, shuffle=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    model.train()
    start, done = time.perf_counter(), 0
    while done < steps:
        for batch in loader:
            loss = loss_fn(model(batch["image"]), batch["label"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            done += 1
            if done == steps:
                break
    print(f"trained {steps} steps of 4 x {PATCH[0]}^3 in {time.perf_counter() - start:.0f} s")
    return model


def resampled_flips(model: torch.nn.Module, case: dict) -> tuple[int, int, int]:
    """(flipped voxels, predicted foreground voxels, all voxels) on the resampled grid."""
    image = eval_transforms(SPACING)(dict(case))["image"][None]
    argmax = {
        dtype: sliding_window_logits(model, image, roi=ROI, overlap=OVERLAP, stitch_dtype=dtype)[
            0
        ].argmax(0)
        for dtype in ("float16", "float32")
    }
    flipped = int((argmax["float16"] != argmax["float32"]).sum())
    return flipped, int((argmax["float32"] > 0).sum()), int(argmax["float32"].numel())


def main() -> None:
    """Write the phantom, train, compare float16 and float32 stitching, print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps (~90 s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        dataset = json.loads(
            write_phantom_dataset(
                folder,
                cases=10,
                seed=args.seed,
                shape=(96, 96, 72),
                spacing=(1.5, 1.5, 2.0),
                tumor_cases=6,
            ).read_text()
        )
        root = Path(folder)
        lists = {
            key: [
                {k: str(root / v) for k, v in entry.items() if k in ("image", "label")}
                for entry in dataset[key]
            ]
            for key in ("training", "validation", "test")
        }
        model = train(lists["training"], args.steps, args.seed)
        model.eval()
        held_out = lists["validation"] + lists["test"]
        totals = np.zeros(3, np.int64)
        for case in held_out:
            counts = resampled_flips(model, case)
            totals += counts
            print(
                f"{Path(case['label']).name}: resampled-grid argmax flips {counts[0]} of "
                f"{counts[2]} voxels ({counts[1]} predicted foreground)"
            )
        print(
            f"resampled grid, all cases: {totals[0]} flips = {totals[0] / totals[2]:.2e} of "
            f"voxels, {totals[0] / max(totals[1], 1):.2e} of predicted foreground"
        )
        preprocess = eval_transforms(SPACING)
        for name, protocol in PROTOCOLS.items():
            flips = voxels = 0
            largest: dict[str, float] = {}
            for case in held_out:
                results = {}
                for dtype in ("float16", "float32"):
                    variant = dataclasses.replace(protocol, stitch_dtype=dtype)
                    raw, truth, spacing = predict_case(
                        model,
                        case,
                        preprocess,
                        roi=ROI,
                        overlap=OVERLAP,
                        protocol=variant,
                        postprocess=False,
                    )
                    row = case_metrics(
                        protocol.postprocess(raw), truth, spacing, liver_mode=protocol.liver_mode
                    )
                    results[dtype] = raw, row
                flips += int((results["float16"][0] != results["float32"][0]).sum())
                voxels += results["float32"][0].size
                for cls in registry.CLASSES:
                    for metric in registry.METRICS:
                        key = f"{cls}_{metric.name}"
                        delta = abs(results["float16"][1][key] - results["float32"][1][key])
                        if not np.isnan(delta):
                            largest[key] = max(largest.get(key, 0.0), float(delta))
                print(
                    f"{name} {Path(case['label']).name}: "
                    + ", ".join(
                        f"{k} {results['float32'][1][k]:.4f}" for k in ("liver_dice", "tumor_dice")
                    )
                )
            print(
                f"{name}: native-grid label flips {flips} of {voxels} voxels "
                f"({flips / voxels:.2e}); largest |float16 - float32| per case: "
                + ", ".join(f"{k} {v:.2e}" for k, v in largest.items())
            )


if __name__ == "__main__":
    main()
