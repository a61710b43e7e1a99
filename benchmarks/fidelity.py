"""Fidelity against the public code (issue 11): are our tumours distributed as Hu et al.'s?

    OMP_NUM_THREADS=1 python benchmarks/fidelity.py --public /path/to/SyntheticTumors \
        --public-python /tmp/public-venv/bin/python [--events 40] [--work /tmp/fidelity]

Draws `--events` synthesis events per tumour type (tiny, small, medium, large, mix) from our
`synthesize_tumors` and from the public `SynthesisTumor` (run unmodified by
`benchmarks/public_code.py` in its own virtual environment: numpy < 2, scipy < 1.14,
elasticdeform, opencv-python-headless) on the same 1 mm phantom CT, and prints, per type and
quantity, the two-sample Kolmogorov-Smirnov statistic and p-value (per event: tumour voxels,
connected components, mean HU drop; per component of >= 27 voxels: equivalent radius, axis
ratio, depth in the liver). The done-when: no p below 0.01. Per-component values are pooled
over events, so their KS p-values treat components of one event as independent (they share
the event's draws): read them as approximate. The public repository is an argument, never a
dependency of ours.

The statistics below use numpy and scipy only: the public side imports them too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

# The checkout this file lives in, before any installed copy of tumorsweep (a worktree, or a
# benchmark run against another branch, would otherwise time the installed code).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TYPES = ("tiny", "small", "medium", "large", "mix")
PER_EVENT = ("voxels", "components", "hu_drop")
PER_COMPONENT = ("radius", "axis_ratio", "depth")
_MIN_PIECE_VOXELS = 27


def liver_depth(label: np.ndarray) -> np.ndarray:
    """Distance (voxels = mm at 1 mm) of each liver voxel to the nearest non-liver voxel."""
    return ndimage.distance_transform_edt(label >= 1).astype(np.float32)


def event_stats(
    image_before: np.ndarray, image_after: np.ndarray, label_after: np.ndarray, depth: np.ndarray
) -> dict:
    """Per event: tumour voxels, connected components (6-connectivity) and the mean HU drop
    over tumour voxels; per component of >= 27 voxels (the blob pieces, not the few-voxel
    specks that nearest-neighbour warps leave): equivalent-sphere radius (3V / 4 pi)^(1/3),
    axis ratio (smallest over largest principal std) and the liver depth at its centroid."""
    tumour = np.asarray(label_after) == 2
    components, count = ndimage.label(tumour)
    out = {"voxels": int(tumour.sum()), "components": int(count), "hu_drop": float("nan")}
    out.update({key: [] for key in PER_COMPONENT})
    if count == 0:
        return out
    drop = np.asarray(image_before, dtype=np.float64) - np.asarray(image_after, dtype=np.float64)
    out["hu_drop"] = float(drop[tumour].mean())
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        coords = np.argwhere(components[box] == index) + [s.start for s in box]
        if len(coords) < _MIN_PIECE_VOXELS:
            continue
        out["radius"].append(float((3 * len(coords) / (4 * np.pi)) ** (1 / 3)))
        centre = tuple(int(v) for v in np.rint(coords.mean(axis=0)))
        out["depth"].append(float(depth[centre]))
        eig = np.linalg.eigvalsh(np.cov(coords.T.astype(np.float64)))
        out["axis_ratio"].append(float(np.sqrt(max(eig[0], 0.0) / eig[-1])))
    return out


def _pooled(rows: list[dict], key: str) -> np.ndarray:
    if key in PER_EVENT:
        values = np.array([row[key] for row in rows], dtype=np.float64)
    else:
        values = np.array([v for row in rows for v in row[key]], dtype=np.float64)
    return values[np.isfinite(values)]


def ours(case: Path, events: int, seed: int) -> dict:
    from tumorsweep.synthesis import SynthesisConfig, synthesize_tumors

    data = np.load(case)
    image, label = data["image"], data["label"]
    depth = liver_depth(label)
    out = {}
    for k, tumor_type in enumerate(TYPES):
        config = SynthesisConfig(type_probs={t: float(t == tumor_type) for t in TYPES})
        rng = np.random.default_rng(seed + k)
        rows = []
        for _ in range(events):
            new_image, new_label = synthesize_tumors(image, label, config, rng)
            rows.append(event_stats(image, new_image, new_label, depth))
        out[tumor_type] = rows
        print(f"ours {tumor_type}: {events} events", flush=True)
    return out


def ks_table(ours_rows: dict, public_rows: dict) -> list[tuple]:
    from scipy import stats

    table = []
    for tumor_type in TYPES:
        for key in PER_EVENT + PER_COMPONENT:
            a, b = _pooled(ours_rows[tumor_type], key), _pooled(public_rows[tumor_type], key)
            if len(a) < 2 or len(b) < 2:
                table.append((tumor_type, key, len(a), len(b), np.nan, np.nan, np.nan, np.nan))
                continue
            test = stats.ks_2samp(a, b)
            table.append(
                (tumor_type, key, len(a), len(b), np.median(a), np.median(b),
                 test.statistic, test.pvalue)
            )  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public", type=Path, required=True, help="SyntheticTumors checkout")
    parser.add_argument("--public-python", type=Path, required=True, help="side venv's python")
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=(400, 340, 260))
    parser.add_argument("--work", type=Path, default=Path("/tmp/tumorsweep-fidelity"))
    args = parser.parse_args()
    from tumorsweep.data import make_phantom_case

    args.work.mkdir(parents=True, exist_ok=True)
    case = args.work / f"phantom_{'x'.join(map(str, args.shape))}.npz"
    if not case.exists():
        image, label = make_phantom_case(np.random.default_rng(args.seed), tuple(args.shape))
        np.savez(case, image=image, label=(label >= 1).astype(np.uint8))
    start = time.perf_counter()
    public_out = args.work / f"public_{args.events}_{args.seed}.json"
    if not public_out.exists():
        subprocess.run(
            [str(args.public_python), str(Path(__file__).with_name("public_code.py")), "events",
             "--public", str(args.public), "--cache", str(args.work / "bank"),
             "--case", str(case), "--events", str(args.events), "--seed", str(args.seed),
             "--out", str(public_out)],
            check=True,
        )  # fmt: skip
    public_rows = json.loads(public_out.read_text())
    ours_rows = ours(case, args.events, args.seed + 1000)
    print(f"(drawn in {time.perf_counter() - start:.0f} s)")
    print(f"{'type':<7}{'quantity':<12}{'n ours':>7}{'n pub':>7}{'med ours':>10}{'med pub':>10}"
          f"{'KS D':>7}{'p':>9}")  # fmt: skip
    worst = 1.0
    for row in ks_table(ours_rows, public_rows):
        tumor_type, key, n_a, n_b, med_a, med_b, d, p = row
        worst = min(worst, p) if np.isfinite(p) else worst
        flag = "  <- p < 0.01" if np.isfinite(p) and p < 0.01 else ""
        print(f"{tumor_type:<7}{key:<12}{n_a:>7}{n_b:>7}{med_a:>10.3f}{med_b:>10.3f}"
              f"{d:>7.3f}{p:>9.4f}{flag}")  # fmt: skip
    print(f"smallest p: {worst:.4f} ({'met' if worst >= 0.01 else 'missed'}: none below 0.01)")


if __name__ == "__main__":
    sys.exit(main())
