"""Fidelity against the public code (issue 11): are our tumours distributed as Hu et al.'s?

    OMP_NUM_THREADS=1 python benchmarks/fidelity.py --public /path/to/SyntheticTumors \
        --public-python /tmp/public-venv/bin/python [--events 40] [--work /tmp/fidelity] \
        [--seed 0] [--seeds 1000 2000] [--baseline-seed 1]

Draws `--events` synthesis events per tumour type (tiny, small, medium, large, mix) from our
`synthesize_tumors` and from the public `SynthesisTumor` (run unmodified by
`benchmarks/public_code.py` in its own virtual environment: numpy < 2, scipy < 1.14,
elasticdeform, opencv-python-headless) on the same 1 mm phantom CT, and prints, per type and
quantity, the two-sample Kolmogorov-Smirnov statistic and p-value (per event: tumour voxels,
connected components, mean HU drop; per component of >= 27 voxels: equivalent radius, axis
ratio, depth in the liver). The done-when: no p below 0.01. Per-component values are pooled
over events, and the components of one event share its draws, so their rows' p-value comes
from permuting whole events between the two samples (`--permutations`, default 10000; the
statistic stays the KS D of the pooled values): valid where one event's components depend
on each other, where scipy's p (printed beside it) assumes independent values. Per-event rows
keep scipy's p (one value per event: its assumption holds). The table ends with the smallest
Holm-adjusted p over its rows: the family-wise reading of ~30 tests at once.
`--baseline-seed` prints the same table for the public code against itself (two seeds): the
p-values the test gives when nothing differs. The public repository is an argument, never a
dependency of ours.

The mean HU drop of an event is difference x texture x blur, and both codes draw the
difference from the same U(65, 145): two samples of it differ by chance, and at 200 events that
alone can give a small p for the drop. So each event also records its drawn difference (and
edge-blur sigma): the public side by wrapping the module's `np.random.uniform`
(`public_code.py`), ours by a `Generator` that records its `uniform` calls (`_DrawRecorder`),
both values only, the draws unchanged. A row "drop/diff" per type (drop / difference = texture
x blur over the tumour) is tested beside "hu_drop", and each sample's mean difference is printed
with its standard error against the uniform's 105 +- 80 / sqrt(12 n), so a reader sees when a
p-value comes from the shared uniform draw rather than from the synthesis.

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
DROP_PER_DIFFERENCE = "drop/diff"
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


def _per_event(rows: list[dict], key: str) -> list[np.ndarray]:
    """Each event's finite values of `key` (one for a per-event quantity, one per component
    for the others)."""
    out = []
    for row in rows:
        if key == DROP_PER_DIFFERENCE:
            values = np.array([row["hu_drop"] / row["difference"]], dtype=np.float64)
        elif key in PER_EVENT or key == "difference":
            values = np.array([row[key]], dtype=np.float64)
        else:
            values = np.asarray(row[key], dtype=np.float64)
        out.append(values[np.isfinite(values)])
    return out


def _pooled(rows: list[dict], key: str) -> np.ndarray:
    events = _per_event(rows, key)
    return np.concatenate(events) if events else np.zeros(0)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample KS statistic D = max |F_a - F_b| over the pooled values (scipy's)."""
    a, b = np.sort(a), np.sort(b)
    at = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, at, side="right") / len(a)
    cdf_b = np.searchsorted(b, at, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def event_permutation_p(
    events_a: list[np.ndarray], events_b: list[np.ndarray], permutations: int, seed: int = 0
) -> float:
    """P-value of the pooled KS D under the null that the events of the two samples are
    exchangeable: whole events (all their values together) reassigned at random between the
    samples, sizes kept; (1 + count of D >= observed) / (1 + permutations)."""
    events = events_a + events_b
    values = np.concatenate(events)
    owner = np.repeat(np.arange(len(events)), [len(e) for e in events])
    in_a = owner < len(events_a)
    observed = ks_statistic(values[in_a], values[~in_a])
    rng = np.random.default_rng(seed)
    count = 0
    for _ in range(permutations):
        chosen = np.zeros(len(events), dtype=bool)
        chosen[rng.permutation(len(chosen))[: len(events_a)]] = True
        mask = chosen[owner]
        if mask.all() or not mask.any():
            continue  # a sample left without values: D undefined, counted as not extreme
        count += ks_statistic(values[mask], values[~mask]) >= observed - 1e-12
    return (1 + count) / (1 + permutations)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error) of a list of p-values, same order."""
    order = np.argsort(pvalues)
    m = len(pvalues)
    adjusted, running = np.empty(m), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted.tolist()


class _DrawRecorder(np.random.Generator):
    """Measurement only: `np.random.default_rng(seed)` (same PCG64 stream, same draws) that
    notes the event's HU difference and edge-blur sigma as the synthesis draws them, without
    touching the synthesis code. `_blend_hu` draws the edge sigma from `texture.edge_blur` and
    right after it the difference from `texture.hu_drop`; a scalar `uniform` call with the
    hu_drop bounds is the difference, the scalar call just before it (edge_blur bounds) the
    sigma. Other calls pass through unnoted."""

    def __init__(self, seed: int, hu_drop: tuple[float, float], edge_blur: tuple[float, float]):
        super().__init__(np.random.PCG64(seed))
        self._bounds = (hu_drop, edge_blur)
        self.drawn: dict[str, float] = {}
        self._last_edge: float | None = None

    def uniform(self, low=0.0, high=1.0, size=None):
        out = super().uniform(low, high, size)
        bounds = (float(np.asarray(low)), float(np.asarray(high))) if size is None else None
        if bounds == self._bounds[0]:
            if "difference" in self.drawn:  # one per event: anything else is a misreading
                raise RuntimeError("two HU-drop draws in one event: the recorder misreads them")
            self.drawn["difference"] = float(out)
            self.drawn["edge_sigma"] = (
                self._last_edge if self._last_edge is not None else float("nan")
            )
        self._last_edge = float(out) if bounds == self._bounds[1] else None
        return out

    def new_event(self) -> None:
        self.drawn, self._last_edge = {}, None


def ours(case: Path, events: int, seed: int) -> dict:
    """Per type, `events` events of our `synthesize_tumors` (rng seed + k for the k-th type),
    with `event_stats` and the drawn difference and edge sigma of each."""
    from tumorsweep.synthesis import SynthesisConfig, synthesize_tumors

    data = np.load(case)
    image, label = data["image"], data["label"]
    depth = liver_depth(label)
    out = {}
    for k, tumor_type in enumerate(TYPES):
        config = SynthesisConfig(type_probs={t: float(t == tumor_type) for t in TYPES})
        tex = config.texture
        rng = _DrawRecorder(
            seed + k,
            (tex.hu_drop.low, tex.hu_drop.high),
            (tex.edge_blur.low, tex.edge_blur.high),
        )
        rows = []
        for _ in range(events):
            rng.new_event()
            new_image, new_label = synthesize_tumors(image, label, config, rng)
            row = event_stats(image, new_image, new_label, depth)
            row["difference"] = rng.drawn.get("difference", float("nan"))
            row["edge_sigma"] = rng.drawn.get("edge_sigma", float("nan"))
            rows.append(row)
        out[tumor_type] = rows
        print(f"ours {tumor_type}: {events} events", flush=True)
    return out


def ks_table(ours_rows: dict, public_rows: dict, permutations: int = 10000) -> list[tuple]:
    """Per type and quantity: (type, quantity, n ours, n public, medians, KS D, scipy's p,
    the row's p: the event-permutation p for per-component quantities, else scipy's)."""
    from scipy import stats

    table = []
    for tumor_type in TYPES:
        for key in PER_EVENT + (DROP_PER_DIFFERENCE,) + PER_COMPONENT:
            events_a = _per_event(ours_rows[tumor_type], key)
            events_b = _per_event(public_rows[tumor_type], key)
            a, b = np.concatenate(events_a), np.concatenate(events_b)
            if len(a) < 2 or len(b) < 2:
                table.append((tumor_type, key, len(a), len(b), *[np.nan] * 5))
                continue
            test = stats.ks_2samp(a, b)
            exact = test.pvalue
            if key in PER_COMPONENT:
                exact = event_permutation_p(events_a, events_b, permutations)
            table.append(
                (tumor_type, key, len(a), len(b), np.median(a), np.median(b),
                 test.statistic, test.pvalue, exact)
            )  # fmt: skip
    return table


def difference_summary(rows: list[dict], low: float = 65.0, high: float = 145.0) -> dict:
    """Mean drawn HU difference of one sample, its standard error under U(low, high)
    ((high - low) / sqrt(12 n)), the z-score of the mean against (low + high) / 2 and the
    one-sample KS p against the uniform."""
    from scipy import stats

    d = _pooled(rows, "difference")
    n = len(d)
    se = (high - low) / np.sqrt(12 * n) if n else np.nan
    mean = float(d.mean()) if n else np.nan
    p = stats.kstest(d, stats.uniform(low, high - low).cdf).pvalue if n >= 2 else np.nan
    return {"n": n, "mean": mean, "se": se, "z": (mean - (low + high) / 2) / se, "ks_p": p}


def _print_table(table: list[tuple]) -> tuple[float, float, float]:
    """Prints the KS rows; returns, over the quantities of the done-when (drop/diff excluded),
    the smallest p, the smallest with hu_drop replaced by drop/diff, and the
    smallest Holm-adjusted p."""
    print(f"{'type':<7}{'quantity':<12}{'n ours':>7}{'n pub':>7}{'med ours':>12}{'med pub':>12}"
          f"{'KS D':>7}{'p scipy':>9}{'p':>9}")  # fmt: skip
    worst, worst_ratio, family = 1.0, 1.0, []
    for row in table:
        tumor_type, key, n_a, n_b, med_a, med_b, d, p_scipy, p = row
        if np.isfinite(p):
            if key != DROP_PER_DIFFERENCE:
                worst = min(worst, p)
                family.append(p)
            if key != "hu_drop":
                worst_ratio = min(worst_ratio, p)
        flag = "  <- p < 0.01" if np.isfinite(p) and p < 0.01 else ""
        print(f"{tumor_type:<7}{key:<12}{n_a:>7}{n_b:>7}{med_a:>12.3f}{med_b:>12.3f}"
              f"{d:>7.3f}{p_scipy:>9.4f}{p:>9.4f}{flag}")  # fmt: skip
    return worst, worst_ratio, min(holm(family), default=1.0)


def _print_differences(ours_rows: dict, public_rows: dict) -> None:
    from scipy import stats

    print("drawn HU difference per event, U(65, 145): mean +- SE (80 / sqrt(12 n)), z against "
          "105, one-sample KS p against the uniform; two-sample KS p ours vs public")  # fmt: skip
    for tumor_type in TYPES:
        a, b = ours_rows[tumor_type], public_rows[tumor_type]
        sa, sb = difference_summary(a), difference_summary(b)
        p2 = stats.ks_2samp(_pooled(a, "difference"), _pooled(b, "difference")).pvalue
        print(f"{tumor_type:<7}ours {sa['mean']:6.1f} +- {sa['se']:.1f} (z {sa['z']:+.1f}, "
              f"p {sa['ks_p']:.3f})  public {sb['mean']:6.1f} +- {sb['se']:.1f} "
              f"(z {sb['z']:+.1f}, p {sb['ks_p']:.3f})  ours vs public p {p2:.4f}")  # fmt: skip


def public_sample(args: argparse.Namespace, case: Path, seed: int) -> dict:
    """The public code's `args.events` events per type at `seed`, drawn once and cached in
    `args.work` (a cache written before the drawn differences were recorded is drawn again:
    same seeds, same events and statistics; the bank stays cached)."""
    out = args.work / f"public_{args.events}_{seed}.json"
    if not out.exists() or "difference" not in json.loads(out.read_text())["tiny"][0]:
        subprocess.run(
            [str(args.public_python), str(Path(__file__).with_name("public_code.py")), "events",
             "--public", str(args.public), "--cache", str(args.work / "bank"),
             "--case", str(case), "--events", str(args.events), "--seed", str(seed),
             "--out", str(out)],
            check=True,
        )  # fmt: skip
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public", type=Path, required=True, help="SyntheticTumors checkout")
    parser.add_argument("--public-python", type=Path, required=True, help="side venv's python")
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="public seed; ours: seed + 1000")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="our seeds (default: seed + 1000); one table each against the same public sample",
    )
    parser.add_argument(
        "--baseline-seed",
        type=int,
        help="also draw the public code at this seed and print its table against the public "
        "sample at --seed: how small a p the same code gets against itself",
    )
    parser.add_argument(
        "--permutations", type=int, default=10000,
        help="event permutations per per-component row (Monte Carlo SE of a p near 0.01: "
        "0.001 at 10000)",
    )  # fmt: skip
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
    public_rows = public_sample(args, case, args.seed)
    if args.baseline_seed is not None:
        baseline = public_sample(args, case, args.baseline_seed)
        print(
            f"same code, two seeds: public seed {args.seed} (the 'ours' column) against public "
            f"seed {args.baseline_seed}, the KS rows' own spread at this sample size"
        )
        worst, _, family = _print_table(ks_table(public_rows, baseline, args.permutations))
        print(f"smallest p, public against itself: {worst:.4f} (Holm-adjusted over the rows: "
              f"{family:.3f})\n")  # fmt: skip
    for our_seed in args.seeds or [args.seed + 1000]:
        ours_rows = ours(case, args.events, our_seed)
        print(f"(drawn in {time.perf_counter() - start:.0f} s)")
        print(f"ours: seed {our_seed} (+k for the k-th type); public: seed {args.seed}")
        worst, worst_ratio, family = _print_table(
            ks_table(ours_rows, public_rows, args.permutations)
        )
        _print_differences(ours_rows, public_rows)
        print(f"smallest p: {worst:.4f} ({'met' if worst >= 0.01 else 'missed'}: none below "
              f"0.01); with hu_drop replaced by drop/diff: {worst_ratio:.4f}; Holm-adjusted "
              f"over the rows: {family:.3f} ({'no' if family >= 0.01 else 'a'} family-wise "
              "difference at 0.01)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
