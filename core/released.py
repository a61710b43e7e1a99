"""The released-checkpoints study: evaluate the authors' released segmentation files.

`python sweeps/released_checkpoints.py --data DIR --split hu-val --checkpoints CKPT_DIR`
looks in CKPT_DIR for every file of `tumorsweep.models.released.RELEASED` (Hu et al.'s
`runs/<logdir>/model.pt`, with or without the `runs/` folder, and DiffTumor's
`*_synt_liver_tumors.pt`), checks that each loads weights-only into its registry backbone,
then scores each on the named evaluation set with the evaluation its publisher used (spacing,
HU window, sliding window, protocol) and records it in MLflow as a trial of the same shape as
a trained one: a parent run for the invocation, one nested run per file with the flattened
config as params, `seed`, the file's SHA-256, the final metrics and the per-case CSV, tagged
with the published column it reproduces. No training, so no Ray: the files are evaluated one
after another in this process (on a GPU when there is one). The printed table (and
`tumorsweep report`, the notebook) sets the published numbers beside ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tumorsweep import preflight, tracking
from tumorsweep.config import TrialConfig, flatten, make_config, to_yaml
from tumorsweep.errors import TumorsweepError
from tumorsweep.models.released import RELEASED, ReleasedCheckpoint
from tumorsweep.weights import sha256

STUDY = "released_checkpoints"
SWEPT = ["data.real_fraction", "synthesis.style"]  # what tells the files' columns apart


@dataclass(frozen=True)
class Found:
    """A released file present in the checkpoints folder."""

    entry: ReleasedCheckpoint
    path: Path
    sha256: str


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"sweeps/{STUDY}.py",
        description="Evaluate the released checkpoints found in --checkpoints (no training).",
    )
    p.add_argument("--checkpoints", required=True, help="folder holding the downloaded files")
    p.add_argument("--data", help="dataset: MSD/LiTS/nnU-Net/folds (default: phantom CTs)")
    p.add_argument("--split", help="named evaluation set, e.g. hu-val (default: the test list)")
    p.add_argument("--tracking-uri", help="MLflow URI (default: sqlite:///$PWD/mlflow.db)")
    p.add_argument("--experiment", default=STUDY, help=f"MLflow experiment (default: {STUDY})")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `sweeps/released_checkpoints.py`."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except TumorsweepError as exc:
        print(f"{STUDY}: error: {exc}", file=sys.stderr)
        return 2


def find_released(folder: str | Path) -> list[Found]:
    """The known released files in `folder` (Hu et al.'s also under `runs/`), each checked
    to load weights-only into its backbone; a folder with none is an error listing them."""
    root = Path(folder)
    if not root.is_dir():
        raise TumorsweepError(f"--checkpoints {root}: not a folder")
    found = []
    for entry in RELEASED:
        path = next(
            (p for p in (root / entry.file, root / "runs" / entry.file) if p.is_file()), None
        )
        if path is not None:
            load_released(entry, path)  # refuse a bad file before anything is recorded
            found.append(Found(entry, path, sha256(path)))
    if not found:
        names = ", ".join(entry.file for entry in RELEASED)
        raise TumorsweepError(f"--checkpoints {root}: none of the released files ({names})")
    return found


def load_released(entry: ReleasedCheckpoint, path: Path) -> Any:
    """The entry's backbone holding the file's weights (published Swin names mapped)."""
    from tumorsweep.models import build
    from tumorsweep.models.checkpoints import match_keys, read_state_dict

    network = build(entry.backbone, None, **entry.options)
    state = match_keys(read_state_dict(path), network)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise TumorsweepError(f"{path}: does not fit {entry.backbone} ({detail})") from None
    return network.eval()


def trial_config(entry: ReleasedCheckpoint, data: str | None, split: str | None) -> TrialConfig:
    """The paper preset with the evaluation that reproduces the entry's published numbers."""
    overrides = {**entry.overrides(), "data.split": split}
    if data:
        overrides["data.root"] = str(Path(data).resolve())
    return make_config("paper", overrides)


def evaluation_cases(cfg: TrialConfig) -> tuple[list[dict], str, str]:
    """(test cases, evaluation set name, dataset root) of the config's data and split."""
    from tumorsweep.data.cases import CaseEntry, phantom_root
    from tumorsweep.data.layouts import load_split

    root = Path(cfg.data.root) if cfg.data.root else phantom_root(cfg.data)
    split = load_split(root, fmt=cfg.data.format, split=cfg.data.split, val_fraction=0.0)
    if not split.test:
        raise TumorsweepError(f"{root}: no test list and no --split named: nothing to evaluate")
    keys = CaseEntry.__annotations__
    entries = [{k: e.get(k, "") if k == "source" else e[k] for k in keys} for e in split.test]
    return entries, split.eval_set, str(root)


def notes(found: list[Found], cases: list[dict], eval_set: str) -> list[str]:
    """What a reader must know about these numbers: files scored on cases they trained on,
    files selected on the cases they are scored on, files away from their published set."""
    ids = {c.get("case_id") for c in cases} - {None}
    said = []
    for item in found:
        entry = item.entry
        seen = sorted(ids & set(entry.training_cases))
        if seen:
            said.append(
                f"{entry.file}: trained on {len(seen)} of the {len(cases)} {eval_set} cases "
                f"({' '.join(map(str, seen))}); its published set is {entry.eval_set}"
            )
        elif entry.selected_on == eval_set:
            said.append(f"{entry.file}: its publisher selected it on {eval_set} itself")
        elif entry.eval_set != eval_set:
            said.append(f"{entry.file}: published on {entry.eval_set}, scored here on {eval_set}")
    return said


def run(args: argparse.Namespace) -> int:
    """Check everything, then evaluate every released file found; 1 if any file failed."""
    import torch

    tracking_uri = args.tracking_uri or tracking.default_tracking_uri()
    preflight.check_tracking_uri(tracking_uri)
    found = find_released(args.checkpoints)
    configs = {item.entry.file: trial_config(item.entry, args.data, args.split) for item in found}
    cases, eval_set, root = evaluation_cases(next(iter(configs.values())))
    said = notes(found, cases, eval_set)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"Released checkpoints: {len(found)} file(s) in {args.checkpoints}; {len(cases)} "
        f"{eval_set} cases of {args.data or 'the built-in phantom CTs'}; device {device}",
        flush=True,
    )
    for note in said:
        print(f"note: {note}", flush=True)
    store = tracking.RunStore(tracking_uri)
    experiment_id = store.ensure_experiment(args.experiment)
    parent = store.start_parent_run(
        experiment_id,
        f"{STUDY}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            tracking.STUDY_TAG: STUDY,
            tracking.SWEPT_TAG: json.dumps(SWEPT),
            tracking.BASELINE_TAG: "{}",
            tracking.PRESET_TAG: "paper",
            tracking.EVAL_SET_TAG: eval_set,
            tracking.DATA_ROOT_TAG: root,
            tracking.DATA_WARNINGS_TAG: json.dumps(said),
        },
    )
    failed = 0
    for item in found:
        failed += not evaluate_file(item, configs[item.entry.file], cases, eval_set, device,
                                    store, experiment_id, parent)  # fmt: skip
    store.finish_run(parent, status="FAILED" if failed == len(found) else "FINISHED")
    from tumorsweep.report import build_report, to_markdown

    report = build_report(tracking_uri, args.experiment)
    print()
    print(to_markdown(report.table(args.experiment)))
    print(
        f"\nMLflow: mlflow ui --backend-store-uri {tracking_uri} (experiment "
        f"{args.experiment!r}, parent run {parent})"
    )
    return 1 if failed else 0


def evaluate_file(
    item: Found,
    cfg: TrialConfig,
    cases: list[dict],
    eval_set: str,
    device: str,
    store: tracking.RunStore,
    experiment_id: str,
    parent: str,
) -> bool:
    """One nested run: params, the file's SHA-256, metrics and per-case CSV; False if the
    evaluation failed (the run is then FAILED with the reason)."""
    entry = item.entry
    run_id = _attach_run(item, cfg, eval_set, store, experiment_id, parent)
    print(f"evaluating {entry.file} ({entry.backbone}) ...", flush=True)
    try:
        rows, metrics = _score(item, cfg, cases, device)
        logger = store.trial_logger(run_id)
        results, bookkeeping = tracking.split_bookkeeping(metrics)
        logger.log_metrics(results, step=0)
        with tempfile.TemporaryDirectory() as tmp:
            per_case = Path(tmp) / tracking.PER_CASE_TEST_ARTIFACT
            pd.DataFrame.from_records(rows).to_csv(per_case, index=False)
            config = Path(tmp) / tracking.CONFIG_ARTIFACT
            config.write_text(to_yaml(cfg))
            books = Path(tmp) / tracking.BOOKKEEPING_ARTIFACT
            books.write_text(json.dumps(bookkeeping, indent=1, sort_keys=True), encoding="utf-8")
            logger.log_artifacts([per_case, config, books])
    except Exception as exc:  # one bad file never takes the others down
        reason = " ".join(str(exc).split())[:500] or type(exc).__name__
        print(f"{entry.file}: failed: {reason}", file=sys.stderr, flush=True)
        store.finish_run(run_id, status="FAILED", error=reason)
        return False
    store.finish_run(run_id)
    return True


def _attach_run(
    item: Found,
    cfg: TrialConfig,
    eval_set: str,
    store: tracking.RunStore,
    experiment_id: str,
    parent: str,
) -> str:
    """The file's nested run, tagged with its backbone, checkpoint hash and published
    column."""
    entry = item.entry
    column = [entry.published_table, entry.published_label] if entry.published_table else None
    tags = {
        tracking.BACKBONE_TAG: entry.backbone,
        tracking.EVAL_SET_TAG: eval_set,
        tracking.CONFIG_KEY_TAG: json.dumps({"checkpoint": entry.file}),
        tracking.CHECKPOINT_SHA256_TAG: item.sha256,
    }
    if column is not None:
        tags[tracking.PUBLISHED_COLUMN_TAG] = json.dumps(column)
    params = {
        **flatten(cfg),
        tracking.SEED_PARAM: cfg.seed,
        "checkpoint.file": entry.file,
        "checkpoint.sha256": item.sha256,
        "checkpoint.publisher": entry.publisher,
    }
    return store.attach_trial_run(
        experiment_id, parent, entry.file, entry.name, tags=tags, params=params
    )


def _score(
    item: Found, cfg: TrialConfig, cases: list[dict], device: str
) -> tuple[list[dict], dict[str, float]]:
    """The released network's per-case rows on `cases` and their summary metrics."""
    from tumorsweep.evaluate import PROTOCOLS, evaluate_cases
    from tumorsweep.train import summarise

    started = time.perf_counter()
    network = load_released(item.entry, item.path).to(device)
    rows = evaluate_cases(
        network,
        cases,
        PROTOCOLS[cfg.eval.protocol].transforms(cfg.data.spacing, cfg.data.window),
        roi=cfg.eval.roi or cfg.schedule.patch_size,
        overlap=cfg.eval.overlap,
        sw_batch_size=cfg.eval.sw_batch_size,
        amp=False,  # the publishers' validation.py runs float32
        tolerance_mm=cfg.eval.tolerance_mm,
        protocol=cfg.eval.protocol,
        postprocess=cfg.eval.postprocess,
        device=device,
    )
    return rows, {**summarise(rows), "time_eval_s": time.perf_counter() - started}
