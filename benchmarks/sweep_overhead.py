"""Per-trial overhead of a sweep: ours versus Ray's own cost for a Train run inside Tune.

Baseline (measured in the same run): N Tune trials, each fitting a TorchTrainer whose loop only
reports once - the cost of Ray itself (controller, placement group, worker start, teardown).
Ours: the same N trials through `core.sweep` on the phantom CTs with one tiny epoch; the trainer
reports its own setup/train/eval seconds, so overhead = trial wall time - train - eval.
Trials run one at a time so wall times do not overlap.

    python benchmarks/sweep_overhead.py [--trials 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _noop_loop(config: dict) -> None:
    import ray.train

    ray.train.report({"done": 1})


def _ray_trial(config: dict) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        _noop_loop,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=f"noop-{config['i']}",
            storage_path=config["storage"],
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def ray_baseline(trials: int, storage: str) -> float:
    """Seconds per trial of Train-inside-Tune with an empty training loop."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(_ray_trial, {"cpu": 0.01}),
        param_space={"i": tune.grid_search(list(range(trials))), "storage": storage},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="baseline", storage_path=storage, verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return (time.perf_counter() - start) / trials


def ours(trials: int, storage: str, data: Path) -> dict[str, float]:
    """Seconds per trial of our sweep, split into overhead and training + evaluation."""
    from mlflow import MlflowClient

    from core.sweep_cli import main

    Path(storage).mkdir(parents=True, exist_ok=True)
    space = Path(storage) / "space.yaml"
    ratios = ", ".join(str(round(0.1 * i, 2)) for i in range(trials))
    space.write_text(f"study: overhead\nsweep:\n  synthesis.sphere_ratio: {{grid: [{ratios}]}}\n")
    uri = f"sqlite:///{Path(storage) / 'mlflow.db'}"
    args = ["--data", str(data), "--preset", "demo", "--search-space", str(space),
            "--tracking-uri", uri, "--storage", storage, "--max-concurrent", "1",
            "--set", "schedule.epochs=1", "--set", "schedule.warmup_epochs=0",
            "--set", "schedule.patch_size=[32, 32, 32]", "--set", "eval.overlap=0.0"]  # fmt: skip
    start = time.perf_counter()
    main("overhead", args)
    wall = (time.perf_counter() - start) / trials
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("overhead")
    runs = [r for r in client.search_runs([exp.experiment_id]) if "time_train_s" in r.data.metrics]
    work = sum(r.data.metrics["time_train_s"] + r.data.metrics["time_eval_s"] for r in runs)
    setup = sum(r.data.metrics["time_setup_s"] for r in runs)
    return {"wall": wall, "work": work / len(runs), "setup": setup / len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    from core.data import write_phantom_dataset
    from core.sweep import start_local_ray

    start_local_ray()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "phantom"
        write_phantom_dataset(
            data, cases=8, seed=0, shape=(64, 64, 48), spacing=(2, 2, 2), tumor_cases=4
        )
        base = ray_baseline(args.trials, str(Path(tmp) / "ray"))
        mine = ours(args.trials, str(Path(tmp) / "ours"), data)
    overhead = mine["wall"] - mine["work"]
    print(f"trials: {args.trials}, one at a time")
    print(f"Ray Train inside Tune, empty loop : {base:6.1f} s per trial (baseline)")
    print(f"tumorsweep trial, wall            : {mine['wall']:6.1f} s per trial")
    print(f"  of which training + evaluation  : {mine['work']:6.1f} s")
    print(
        f"  overhead (wall - train - eval)  : {overhead:6.1f} s = {overhead / base:.2f}x baseline"
    )
    print(f"  in-trainer setup (model, cache) : {mine['setup']:6.1f} s")
    print(f"what tumorsweep adds over Ray     : {overhead - base:6.1f} s per trial")


if __name__ == "__main__":
    main()
