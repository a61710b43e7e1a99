"""Run the public SyntheticTumors code (Hu et al. 2023) in its own virtual environment.

Never imported by tumorsweep: the benchmarks start this file as a subprocess with the side
environment's Python (numpy < 2, scipy, elasticdeform, opencv) and the path of a checkout of
MrGiovanni/SyntheticTumors, so the public code runs unmodified and is never a dependency.

    PY=/tmp/public-venv/bin/python
    $PY benchmarks/public_code.py bank --public DIR --cache DIR --out stats.json
    $PY benchmarks/public_code.py events --public DIR --cache DIR --case ct.npz --types tiny \
        --events 40 --out events.json
    $PY benchmarks/public_code.py time --public DIR --case ct.npz --repeats 7 --out times.json

`bank` builds the ten start-up textures exactly as `TumorGenerated.__init__` does (random and
numpy seeds 0, sigma_a x sigma_b, 420x300x320), caches them as .npy files and records their
statistics; `events` runs `SynthesisTumor` per event with the type and texture drawn as
`TumorGenerated.__call__` draws them (the transform class itself needs MONAI, so its three
lines are repeated here) and records per-event statistics with `fidelity.event_stats`; `time`
measures `SynthesisTumor` per type on one core.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIGMA_A = (3, 6, 9, 12, 15)
SIGMA_B = (4, 7)
BANK_SHAPE = (420, 300, 320)
TYPES = ("tiny", "small", "medium", "large", "mix")


def _import_public(path: Path):
    """The public `TumorGenerated/utils.py` (needs cv2 and elasticdeform), loaded by file so
    that the package's `__init__` (which imports MONAI) is not needed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("public_utils", path / "TumorGenerated/utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    return utils


def build_bank(utils, cache: Path) -> tuple[list[np.ndarray], list[dict]]:
    """The ten textures of `TumorGenerated.__init__` (seeds 0), cached, with their statistics;
    the internal draws (scale, base, u0) and the smoothed-noise range are recorded by wrapping
    the module's `gaussian_filter` and `np.random.uniform` (values only, behaviour unchanged)."""
    cache.mkdir(parents=True, exist_ok=True)
    files = [cache / f"texture_{a}_{b}.npy" for a in SIGMA_A for b in SIGMA_B]
    meta_file = cache / "bank.json"
    if all(f.exists() for f in files) and meta_file.exists():
        return [np.load(f, mmap_mode="r") for f in files], json.loads(meta_file.read_text())
    random.seed(0)
    np.random.seed(0)
    calls: list[dict] = []
    filt, uniform = utils.gaussian_filter, np.random.uniform

    def recording_filter(x, sigma, *args, **kwargs):
        out = filt(x, sigma, *args, **kwargs)
        calls.append(
            {
                "filter_sigma": float(sigma),
                "min": float(out.min()),
                "max": float(out.max()),
                "mean": float(out.mean()),
                "std": float(out.std()),
            }
        )
        return out

    def recording_uniform(low=0.0, high=1.0, size=None):
        out = uniform(low, high, size)
        if size is None:
            calls.append({"uniform": [float(low), float(high)], "value": float(out)})
        return out

    utils.gaussian_filter, utils.np.random.uniform = recording_filter, recording_uniform
    textures, meta = [], []
    try:
        for (a, b), path in zip([(a, b) for a in SIGMA_A for b in SIGMA_B], files, strict=True):
            calls.clear()
            texture = utils.get_predefined_texture(BANK_SHAPE, a, b)
            np.save(path, texture)
            smooth, grain = [c for c in calls if "filter_sigma" in c]
            draws = [c["value"] for c in calls if "uniform" in c]
            meta.append(
                {
                    "sigma_a": a,
                    "sigma_b": b,
                    "scale": draws[0],
                    "base": draws[1],
                    "u0": draws[2],
                    "smooth_noise": smooth,
                    "grain": grain,
                    "mean": float(texture.mean()),
                    "std": float(texture.std()),
                    "quantiles": np.quantile(texture, [0.01, 0.05, 0.5, 0.95, 0.99]).tolist(),
                }
            )
            textures.append(np.load(path, mmap_mode="r"))
            print(
                f"texture {a}/{b}: mean {meta[-1]['mean']:.4f} std {meta[-1]['std']:.4f}",
                flush=True,
            )
    finally:
        utils.gaussian_filter, utils.np.random.uniform = filt, uniform
    meta_file.write_text(json.dumps(meta, indent=1))
    return textures, meta


# `get_tumor`'s per-event draws: sigma = U(1, 2) (edge blur), then difference = U(65, 145)
EDGE_BLUR, DIFFERENCE = (1.0, 2.0), (65.0, 145.0)


def run_events(utils, textures, case: Path, types: list[str], events: int, seed: int) -> dict:
    """Per type, `events` synthesis events on the same CT, each on fresh copies; returns the
    per-event statistics of `fidelity.event_stats` plus the event's drawn HU `difference` and
    edge-blur sigma (`edge_sigma`), recorded by wrapping the module's `np.random.uniform`
    (values only, behaviour and draws unchanged; the difference is the U(65, 145) call, the
    sigma the U(1, 2) call just before it, as `get_tumor` draws them)."""
    from fidelity import event_stats, liver_depth

    data = np.load(case)
    image0, label0 = data["image"], data["label"]
    depth = liver_depth(label0)
    uniform = np.random.uniform
    drawn: dict = {}

    def recording_uniform(low=0.0, high=1.0, size=None):
        out = uniform(low, high, size)
        if size is None:
            if (float(low), float(high)) == DIFFERENCE:
                drawn["difference"] = float(out)
                drawn["edge_sigma"] = drawn.get("last_edge", float("nan"))
            drawn["last_edge"] = float(out) if (float(low), float(high)) == EDGE_BLUR else None
        else:
            drawn["last_edge"] = None
        return out

    out = {}
    utils.np.random.uniform = recording_uniform
    try:
        for k, tumor_type in enumerate(types):
            random.seed(seed + k)
            np.random.seed(seed + k)
            rows = []
            for _ in range(events):
                image, label = image0.astype(np.float32), label0.astype(np.float32)
                # TumorGenerated.__call__ (its type and texture draws), with the gate forced open
                texture = random.choice(textures)
                drawn.clear()
                image, label = utils.SynthesisTumor(image, label, tumor_type, texture)
                row = event_stats(image0, image, label, depth)
                row["difference"] = drawn.get("difference", float("nan"))
                row["edge_sigma"] = drawn.get("edge_sigma", float("nan"))
                rows.append(row)
            out[tumor_type] = rows
            print(f"public {tumor_type}: {events} events", flush=True)
    finally:
        utils.np.random.uniform = uniform
    return out


def time_types(utils, case: Path, repeats: int) -> dict:
    """Median and min seconds of `SynthesisTumor` per type (texture: one bank-shaped volume;
    its values do not change the work done)."""
    data = np.load(case)
    image0, label0 = data["image"], data["label"]
    np.random.seed(0)
    random.seed(0)
    texture = np.random.uniform(size=BANK_SHAPE)
    out = {}
    for tumor_type in TYPES:
        times = []
        for _ in range(repeats):
            image, label = image0.astype(np.float32), label0.astype(np.float32)
            start = time.perf_counter()
            utils.SynthesisTumor(image, label, tumor_type, texture)
            times.append(time.perf_counter() - start)
        out[tumor_type] = {"median_s": float(np.median(times)), "min_s": float(min(times))}
        print(f"public {tumor_type}: {1000 * np.median(times):.0f} ms", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("bank", "events", "time"))
    parser.add_argument("--public", type=Path, required=True, help="SyntheticTumors checkout")
    parser.add_argument("--cache", type=Path, help="folder for the ten bank textures")
    parser.add_argument("--case", type=Path, help=".npz with image (HU) and label (0/1)")
    parser.add_argument("--types", nargs="+", default=list(TYPES))
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    utils = _import_public(args.public)
    if args.mode == "time":
        result = time_types(utils, args.case, args.repeats)
    else:
        textures, meta = build_bank(utils, args.cache)
        if args.mode == "bank":
            result = meta
        else:
            result = run_events(utils, textures, args.case, args.types, args.events, args.seed)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
