"""Per-trial overhead of a sweep: what tumorsweep adds on top of Ray's own cost per trial.

Measured in the same run, trials one at a time so wall times do not overlap, each as two
sweeps of 2 and 2 + N trials: the difference is the cost of N more trials, so what a sweep
pays once (starting Ray actors and importing torch/MONAI in them, Tune's setup, the parent run)
cancels and is reported separately as the fixed cost.
- Tune baseline: N Tune trials of a function that imports torch and reports once, holding one
  CPU, actors reused - the Ray cost of a one-worker tumorsweep trial (it trains in its Tune
  process).
- Train baseline: N Tune trials each fitting a TorchTrainer whose loop reports once - what a
  trial cost when every trial started a Train controller and worker group (still the path of
  multi-worker trials).
- Ours: N trials through `tumorsweep.sweep.run_sweep` on phantom CTs with one tiny epoch; the
  trainer logs its setup/train/eval seconds, so overhead = wall - train - eval, and what
  tumorsweep adds = overhead - Tune baseline.

    python benchmarks/sweep_overhead.py [--trials 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _tune_noop(config: dict) -> None:
    import torch  # noqa: F401  (any PyTorch trial imports it)
    from ray import tune

    tune.report({"score": 1.0})


def _train_noop_loop(config: dict) -> None:
    import ray.train

    ray.train.report({"score": 1.0})


def _train_trial(config: dict) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        _train_noop_loop,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=f"noop-{config['i']}",
            storage_path=config["storage"],
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def baseline(trials: int, storage: str, function, resources: dict, reuse: bool) -> float:
    """Seconds for `function` as N sequential Tune trials (one Tuner)."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(function, resources),
        param_space={"i": tune.grid_search(list(range(trials))), "storage": storage},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse),
        run_config=tune.RunConfig(
            name=f"{function.__name__}-{trials}", storage_path=storage, verbose=0
        ),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def marginal(measure, extra: int) -> tuple[float, float]:
    """(seconds per extra trial, fixed seconds) from sweeps of 2 and 2 + extra trials."""
    small, large = measure(2), measure(2 + extra)
    per_trial = (large - small) / extra
    return per_trial, small - 2 * per_trial


def ours(trials: int, storage: str, data: Path) -> dict[str, float]:
    """Wall seconds of a tumorsweep sweep of `trials` one-epoch trials, and the summed
    train+eval and setup seconds its trainers logged."""
    from mlflow import MlflowClient

    from tumorsweep.config import apply_overrides, make_config
    from tumorsweep.data.cases import resolve_cases
    from tumorsweep.search_space import SearchSpace
    from tumorsweep.sweep import SweepOptions, run_sweep

    ratios = [round(0.05 * i, 2) for i in range(trials)]
    space = SearchSpace(study="overhead", sweep={"synthesis.sphere_ratio": {"grid": ratios}})
    base = make_config("demo", {"data.root": str(data)})
    base = apply_overrides(
        base,
        {"schedule.epochs": 1, "schedule.warmup_epochs": 0, "schedule.val_every": 1},
    )
    folder = Path(storage) / f"ours-{trials}"
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    options = SweepOptions(tracking_uri=uri, storage=str(folder), max_concurrent=1)
    cases = resolve_cases(base.data)
    start = time.perf_counter()
    run_sweep(space, options, {None: cases}, base)  # no cross-validation folds
    wall = time.perf_counter() - start
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("overhead")
    runs = client.search_runs([experiment.experiment_id])
    runs = [r for r in runs if "time_train_s" in r.data.metrics]
    work = sum(r.data.metrics["time_train_s"] + r.data.metrics["time_eval_s"] for r in runs)
    setup = sum(r.data.metrics["time_setup_s"] for r in runs)
    return {"wall": wall, "work": work, "setup": setup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="N: extra trials measured")
    args = parser.parse_args()
    from tumorsweep.data import write_phantom_dataset
    from tumorsweep.ray_cluster import start_local_ray

    start_local_ray(reserve=1)
    n = args.trials
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "phantom"
        write_phantom_dataset(
            data, cases=8, seed=0, shape=(64, 64, 48), spacing=(2, 2, 2), tumor_cases=4
        )
        tune_trial, tune_fixed = marginal(
            lambda k: baseline(k, f"{tmp}/t", _tune_noop, {"cpu": 1}, True), n
        )
        train_trial, _ = marginal(
            lambda k: baseline(k, f"{tmp}/r", _train_trial, {"cpu": 0.01}, False), n
        )
        sweeps = {k: ours(k, tmp, data) for k in (2, 2 + n)}
    small, large = sweeps[2], sweeps[2 + n]
    wall = (large["wall"] - small["wall"]) / n
    work = (large["work"] - small["work"]) / n
    setup = (large["setup"] - small["setup"]) / n
    fixed = small["wall"] - small["work"] - 2 * (wall - work)
    added = wall - work - tune_trial
    print(f"per extra trial, from sweeps of 2 and {2 + n} trials run one at a time:")
    print(f"  Tune trial, empty function (baseline) : {tune_trial:6.2f} s")
    # A marginal cost under ~0.5 s is within the run-to-run noise (it can come out negative):
    # the ratio is printed against that floor rather than divided by noise.
    floor = max(tune_trial, 0.5)
    print(f"  Train run inside Tune, empty loop     : {train_trial:6.2f} s "
          f"(>= {train_trial / floor:.0f}x a Tune trial: every trial paid it before)")  # fmt: skip
    print(f"  tumorsweep trial, wall                : {wall:6.2f} s")
    print(f"    of which training + evaluation      : {work:6.2f} s")
    print(f"    in-trainer setup (model, loader)    : {setup:6.2f} s")
    print(f"  what tumorsweep adds over Ray         : {added:6.2f} s per trial")
    print(f"once per sweep: Tune {tune_fixed:.1f} s; tumorsweep (imports in fresh actors, "
          f"parent run, data) {fixed:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
