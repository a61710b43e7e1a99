"""The command line every `sweeps/<study>.py` shares.

Embedded defaults for a newcomer (local Ray, the built-in phantom CTs, MLflow in ./mlflow.db, the
demo preset); real use is the same command with --address, --data, --tracking-uri and --preset
paper. Never a separate demo code path: the preset only changes config values.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tumorsweep import preflight, tracking
from tumorsweep.cli.data import add_source_flags, parse_source
from tumorsweep.config import (
    PRESETS,
    TrialConfig,
    apply_overrides,
    make_config,
    parse_assignment,
)
from tumorsweep.data.cases import CaseLists, cache_dir, resolve_cases
from tumorsweep.data.config import DataSource
from tumorsweep.data.splits import NAMED_SPLITS
from tumorsweep.errors import TumorsweepError
from tumorsweep.search_space import SearchSpace, load_search_space, trial_count, trial_probes
from tumorsweep.tracking import default_tracking_uri


def build_parser(study: str) -> argparse.ArgumentParser:
    """Flags shared by all studies, grouped by what they decide."""
    p = argparse.ArgumentParser(
        prog=f"sweeps/{study}.py",
        description=f"Run the {study!r} study (search_spaces/{study}.yaml) with Ray Tune: one "
        "trial per configuration and seed, each recorded as an MLflow run. Without --data it "
        "runs the demo preset on built-in phantom CTs on a local Ray.",
        epilog=f"examples:\n  python sweeps/{study}.py --dry-run\n"
        f"  python sweeps/{study}.py --data /data/Task03_Liver --split hu-val --seeds 3 "
        "--address auto --gpus-per-worker 1 --cpus-per-worker 8 --storage /shared/ts\n"
        "every config field: tumorsweep config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _data_flags(p)
    _trial_flags(p, study)
    _where_flags(p)
    _result_flags(p, study)
    return p


def _data_flags(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data and protocol")
    data.add_argument(
        "--data", help="dataset folder or description JSON: MSD, LiTS, nnU-Net or SyntheticTumors "
        "folds (default: the built-in phantom CTs)",
    )  # fmt: skip
    data.add_argument(
        "--split", choices=sorted(NAMED_SPLITS),
        help="named evaluation set used as the test list (default: the dataset's own test list)",
    )  # fmt: skip
    add_source_flags(data)
    data.add_argument(
        "--preset", choices=sorted(PRESETS),
        help="default: demo (minutes on a laptop) without --data, else paper; paper = Hu et "
        "al.'s paper text (lr 2e-4, AMP), hu2023-commands = their README's commands (lr 4e-4, "
        "--noamp, validation every 200 epochs at overlap 0.5), pixel2cancer = its CA training; "
        "sources in docs/presets.md, values with `tumorsweep config --preset NAME`",
    )  # fmt: skip
    data.add_argument(
        "--folds", type=int, metavar="K",
        help="cross-validation: run every configuration on each of K folds (default: none, "
        "the dataset's own lists)",
    )  # fmt: skip
    data.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="set any config field (repeatable), e.g. --set schedule.epochs=200; list them "
        "with `tumorsweep config` (default: the preset's values)",
    )  # fmt: skip


def _trial_flags(p: argparse.ArgumentParser, study: str) -> None:
    trials = p.add_argument_group("what runs")
    trials.add_argument("--search-space", help=f"YAML (default: search_spaces/{study}.yaml)")
    trials.add_argument(
        "--seeds", type=int, default=0,
        help="seeds per configuration (default 0: the search space's `seeds`, 1 in the demo)",
    )  # fmt: skip
    trials.add_argument(
        "--dry-run", action="store_true",
        help="check data, trials, resources and the store; list the trials; run none",
    )  # fmt: skip
    trials.add_argument("--resume", action="store_true", help="finish the latest interrupted sweep")
    trials.add_argument(
        "--max-failures", type=int, default=1, help="restarts of a failed trial (default 1)"
    )


def _where_flags(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("where it runs")
    where.add_argument("--address", help="Ray cluster address, e.g. auto (default: a local Ray)")
    where.add_argument(
        "--workers-per-trial", type=int, default=1, help="DDP workers per trial (default 1)"
    )
    where.add_argument(
        "--gpus-per-worker", type=int, default=0, dest="gpus_per_trial",
        help="GPUs for each of a trial's workers (default 0: CPU); a trial holds "
        "workers x this many",
    )  # fmt: skip
    # the former spelling, kept working (hidden)
    where.add_argument("--gpus-per-trial", type=int, dest="gpus_per_trial", help=argparse.SUPPRESS,
                       default=argparse.SUPPRESS)  # fmt: skip
    where.add_argument(
        "--cpus-per-worker", type=int, default=1,
        help="CPUs for each worker, its loader processes included (default 1)",
    )  # fmt: skip
    where.add_argument(
        "--max-concurrent", type=int, default=0,
        help="trials at once (default 0: as many as the cluster fits)",
    )  # fmt: skip
    where.add_argument(
        "--storage", help="checkpoints and Tune state: a path every node sees, or an S3/GCS URI "
        "(default: .tumorsweep/ray_results)",
    )  # fmt: skip


def _result_flags(p: argparse.ArgumentParser, study: str) -> None:
    results = p.add_argument_group("results")
    results.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///$PWD/mlflow.db)")
    results.add_argument("--experiment", help=f"MLflow experiment (default: {study})")
    results.add_argument(
        "--register-best", metavar="NAME",
        help="register the best trial (by the study's validation metric) as MLflow model NAME "
        "(default: none registered)",
    )  # fmt: skip
    results.add_argument(
        "--verbose", action="store_true",
        help="show Ray Tune's status boxes and the workers' own output too",
    )  # fmt: skip


def _print_plan(
    space: SearchSpace, base: TrialConfig, args: argparse.Namespace, folds: int, uri: str
) -> None:
    """What a run would do: trials, seeds, epochs and where its results go."""
    seeds = args.seeds or space.seeds
    total = trial_count(space, seeds, folds if folds > 1 else None)
    storage = args.storage or str(cache_dir() / "ray_results")
    print(
        f"  {total} trial(s): {seeds} seed(s) from {base.seed}"
        + (f" x {folds} folds" if folds > 1 else "")
        + f", {base.schedule.epochs} epochs of {list(base.schedule.patch_size)} patches each; "
        f"MLflow {uri} (experiment {args.experiment or space.study!r}); checkpoints {storage}"
    )


def main(study: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of `sweeps/<study>.py`."""
    args = build_parser(study).parse_args(argv)
    try:
        return _run(study, args)
    except TumorsweepError as exc:
        print(f"{study}: error: {exc}", file=sys.stderr)
        return 2


def _run(study: str, args: argparse.Namespace) -> int:
    from tumorsweep.sweep import run_sweep

    preset = args.preset or ("paper" if args.data else "demo")
    space = load_search_space(args.search_space or study, preset=preset)
    base = make_config(preset, _overrides(space, args))
    tracking_uri = args.tracking_uri or default_tracking_uri()
    _preflight(space, base, args, tracking_uri)
    if args.data is None and preset != "demo":
        print(f"note: {preset} preset on the phantom CTs (no --data given)")
    print(
        f"Study {space.study}: preset {preset!r} ({args.data or 'built-in phantom CTs'}); "
        f"{space.searcher.type} search over {', '.join(space.swept_names()) or 'nothing'}; "
        f"metric {space.metric} ({space.mode})",
        flush=True,
    )
    cases_by_fold = _resolve(base)
    cases = next(iter(cases_by_fold.values()))
    if cases.selection != base.eval.select_on:  # recorded as the trials' eval.select_on
        base = apply_overrides(base, {"eval.select_on": cases.selection})
    probes = trial_probes(space)
    for fold, fold_cases in cases_by_fold.items():
        fold_base = apply_overrides(base, {"data.fold": fold}) if fold is not None else base
        trials = (apply_overrides(fold_base, p, source="trial") for p in probes)
        preflight.check_trials(trials, fold_cases)
    base = _generator(base, probes, cases_by_fold, preset, tracking_uri, study, args)
    if args.dry_run:
        for probe in probes:
            folds = f" x {len(cases_by_fold)} folds" if len(cases_by_fold) > 1 else ""
            print("  trial:", json.dumps(probe, default=str) + folds)
        _print_plan(space, base, args, len(cases_by_fold), tracking_uri)
        print("dry run: data, trials, resources and tracking store checked; nothing ran")
        return 0
    options = _sweep_options(args, preset, tracking_uri)
    outcome = run_sweep(space, options, cases_by_fold, base)
    return _finish(space, options.tracking_uri, outcome, args)


def _preflight(
    space: SearchSpace, base: TrialConfig, args: argparse.Namespace, tracking_uri: str
) -> None:
    """The checks that need no data read: model name, resources, store, resume, cluster."""
    if args.register_best is not None:
        _check_register(args.register_best, space, base)
    preflight.check_resources(
        args.workers_per_trial, args.cpus_per_worker, args.gpus_per_trial, args.seeds,
        args.max_concurrent, args.address,
    )  # fmt: skip
    preflight.check_tracking_uri(tracking_uri)
    if args.resume:
        storage = args.storage or str(cache_dir() / "ray_results")
        storage = storage if "://" in storage else str(Path(storage).resolve())
        preflight.check_resume(storage, tracking_uri, args.experiment or space.study)
    preflight.check_address(args.address)


def _sweep_options(args: argparse.Namespace, preset: str, tracking_uri: str) -> Any:
    from tumorsweep.sweep import SweepOptions

    return SweepOptions(
        preset=preset,
        address=args.address,
        tracking_uri=tracking_uri,
        experiment=args.experiment or "",
        storage=args.storage or str(cache_dir() / "ray_results"),
        workers_per_trial=args.workers_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_worker=args.cpus_per_worker,
        max_concurrent=args.max_concurrent,
        seeds=args.seeds,
        resume=args.resume,
        max_failures=args.max_failures,
        verbose=args.verbose,
    )


def _finish(
    space: SearchSpace, tracking_uri: str, outcome: dict[str, Any], args: argparse.Namespace
) -> int:
    """The results table, the MLflow link, registration; the exit code."""
    print()
    print(results_table(tracking_uri, outcome))
    url = tracking.trials_view_url(
        tracking_uri, outcome["experiment_id"], space.metric, space.swept_names()
    )
    print(
        f"\nMLflow: mlflow ui --backend-store-uri {tracking_uri}  "
        f"(experiment {outcome['experiment']!r}, parent run {outcome['parent_run_id']}), then "
        f"open {url}"
    )
    if args.register_best is not None and not outcome["interrupted"]:
        _register(args.register_best, space, tracking_uri, outcome)
    if outcome["interrupted"]:
        print("interrupted: the unfinished trials are marked KILLED; --resume finishes them")
        return 130
    return 1 if outcome["failed"] else 0


def _resolve(base: TrialConfig) -> dict[int | None, CaseLists]:
    """The study's case lists (one per fold with --folds), checked and described."""
    folds: list[int | None] = [base.data.fold]  # None, or the one fold fixed by data.fold
    if base.data.folds is not None and base.data.fold is None:
        folds = list(range(base.data.folds))
    resolved = {}
    for fold in folds:
        data = base.data if fold is None else base.data.model_copy(update={"fold": fold})
        cases = resolve_cases(data, base.eval.select_on, base.eval.allow_test_selection)
        where = "" if fold is None else f"fold {fold}: "
        print(
            f"Data: {where}{len(cases.train)} healthy + {len(cases.train_tumor)} real-tumour "
            f"training, {len(cases.validation)} validation, {len(cases.test)} test cases (test "
            f"list: {cases.eval_set}; checkpoints selected on: {cases.selection})",
            flush=True,
        )
        if len(cases.sources) > 1:
            for name, arms in cases.pool(0.5).items():
                print(f"  source {name}: {arms['healthy']} healthy + {arms['real_tumor']} "
                      "real-tumour training cases", flush=True)  # fmt: skip
        for note in [*cases.warnings, *preflight.check_data(cases)]:
            print(f"note: {note}", flush=True)
        resolved[fold] = cases
    return resolved


def _check_register(name: str, space: SearchSpace, base: TrialConfig) -> None:
    """Refuse --register-best before anything runs when it could not register a model."""
    from tumorsweep.sweep import check_registrable
    from tumorsweep.tracking import check_model_name

    check_model_name(name, "--register-best")
    check_registrable(space.metric)
    if not base.eval.log_best_model or "eval.log_best_model" in space.swept_names():
        raise TumorsweepError(f"--register-best {name}: needs eval.log_best_model=true")


def _register(name: str, space: SearchSpace, tracking_uri: str, outcome: dict[str, Any]) -> None:
    """Register the sweep's best trial and say how to predict with it."""
    from tumorsweep.sweep import register_best

    version, run_id, value = register_best(
        tracking_uri,
        outcome["experiment_id"],
        outcome["parent_run_id"],
        space.metric,
        space.mode,
        name,
    )
    print(
        f"Registered trial run {run_id} ({space.metric} {value:.5f}) as models:/{name}/{version}"
        f"\npredict with: tumorsweep predict --model models:/{name}/{version} "
        f"--tracking-uri {tracking_uri} --images CT_DIR --out LABEL_DIR"
    )


def _generator(
    base: TrialConfig,
    probes: list,
    cases_by_fold: dict[int | None, CaseLists],
    preset: str,
    tracking_uri: str,
    study: str,
    args: argparse.Namespace,
) -> TrialConfig:
    """`synthesis.generator: auto` -> the folder of a generator trained once (or cached) on
    the study's real-tumour training cases; refused with folds, whose training cases differ."""
    from tumorsweep.difftumor.auto import resolve_auto, uses_auto

    if len(cases_by_fold) > 1 and uses_auto(base, probes):
        raise TumorsweepError(
            "synthesis.generator=auto with --folds: each fold trains on other cases, so one "
            "generator would have seen the others' test cases; run one fold per sweep with "
            "--folds N --set data.fold=K (auto then trains on that fold's training cases)"
        )
    cases = next(iter(cases_by_fold.values()))
    return resolve_auto(
        base, probes, cases, preset, tracking_uri, args.experiment or study, args.dry_run,
        address=args.address, workers=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_trial, storage=args.storage or "",
    )  # fmt: skip


def _overrides(space: SearchSpace, args: argparse.Namespace) -> dict[str, Any]:
    """The study's fixed fields, then --data / --split / --folds, then every --set."""
    overrides = dict(space.fixed)
    if args.data:
        overrides["data.root"] = str(Path(args.data).resolve())
    if args.split:
        overrides["data.split"] = args.split
    if args.base_dir:
        overrides["data.base_dir"] = str(Path(args.base_dir).resolve())
    if args.source:
        overrides["data.sources"] = [_absolute(parse_source(spec)) for spec in args.source]
    if args.folds is not None:
        overrides["data.folds"] = args.folds
    overrides.update(parse_assignment(text) for text in args.set)
    return overrides


def _absolute(source: DataSource) -> dict[str, Any]:
    """A source with absolute paths (Ray workers and the MLflow params see the same files)."""
    fields = source.model_dump()
    fields["path"] = str(Path(source.path).expanduser().resolve())
    if source.base_dir:
        fields["base_dir"] = str(Path(source.base_dir).expanduser().resolve())
    return fields


def results_table(tracking_uri: str, outcome: dict[str, Any]) -> str:
    """The study's results table (mean over seeds), read back from MLflow."""
    from tumorsweep.report import summary_table

    return summary_table(tracking_uri, outcome["experiment"], outcome["parent_run_id"])
