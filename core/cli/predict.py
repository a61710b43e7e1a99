"""`tumorsweep predict`: segment new CTs with a trial's selected weights, or an ensemble of them.

Weights come from MLflow runs (`--run`: the trial's `model/` artifact), registered models
(`--model models:/NAME/VERSION`) or local files (`--checkpoint`, with the `config.yaml` beside
it or `--config`); several of them, e.g. the folds of one configuration, are averaged as an
ensemble. Everything is checked first (images, output folder, store, weights against their
config); labels and `volumes.csv` are written into a scratch folder inside `--out` and moved
into place only when every case succeeded, so a failure leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from tumorsweep import tracking
from tumorsweep.data.io import open_nifti
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate.naming import case_name
from tumorsweep.predict import (
    VOLUME_COLUMNS,
    TrainedModel,
    check_out_dir,
    find_images,
    label_path,
    label_volumes,
    load_trained,
    predict_ct,
    save_labels,
    shared_settings,
)

VOLUMES_FILE = "volumes.csv"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` sub-command."""
    parser = subparsers.add_parser(
        "predict",
        help="segment new CTs with a trial's best weights (label NIfTIs + volumes.csv)",
        description="Segment new CTs with a trial's selected weights and its own config, or "
        "with an ensemble of trials (their probabilities averaged); write one label NIfTI per "
        "CT on the CT's grid and volumes.csv (liver and tumour ml, tumour count).",
    )
    weights = parser.add_argument_group("weights (several together are an ensemble)")
    weights.add_argument(
        "--run",
        action="extend",
        nargs="+",
        default=[],
        metavar="RUN_ID",
        help="MLflow trial run id(s) (default: none)",
    )
    weights.add_argument(
        "--model",
        action="extend",
        nargs="+",
        default=[],
        metavar="URI",
        help="registered model(s), models:/NAME/VERSION (default: none)",
    )
    weights.add_argument(
        "--checkpoint",
        action="extend",
        nargs="+",
        default=[],
        type=Path,
        metavar="PATH",
        help="weights file (model/best_weights.pt) or a trainer checkpoint (state.pt) "
        "(default: none)",
    )
    weights.add_argument(
        "--config", type=Path, help="config.yaml of --checkpoint (default: the one beside it)"
    )
    files = parser.add_argument_group("input and output")
    files.add_argument(
        "--images", nargs="+", required=True, metavar="DIR_OR_FILE", help="CTs (.nii/.nii.gz)"
    )
    files.add_argument("--out", type=Path, required=True, help="folder for the label files")
    files.add_argument("--tracking-uri", help="MLflow URI (default: sqlite:///$PWD/mlflow.db)")
    files.add_argument(
        "--device", choices=("cuda", "cpu"), help="default: cuda when available, else cpu"
    )
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Check everything, predict every CT, then move labels and volumes.csv into --out."""
    if not (args.run or args.model or args.checkpoint):
        raise TumorsweepError("no weights given: pass --run, --model or --checkpoint")
    images = find_images(args.images)
    check_out_dir(args.out, images, args.images)
    device = _device(args.device)
    models = _load_models(args)
    settings = shared_settings(models)
    print(
        f"{len(images)} CT(s), {len(models)} model(s) on {device}: spacing {settings.spacing} "
        f"mm, HU window {settings.window}, sliding window {settings.roi} overlap "
        f"{settings.overlap}, protocol {settings.protocol}"
        f"{'' if settings.postprocess else ' (no post-processing)'}",
        flush=True,
    )
    started = time.perf_counter()
    written = _predict_into(args.out, models, images, device)
    elapsed = time.perf_counter() - started
    print(
        f"{len(images)} label file(s) and {VOLUMES_FILE} in {args.out} "
        f"({elapsed:.1f} s, {elapsed / len(images):.1f} s per case)"
    )
    print(pd.read_csv(written).to_string(index=False))
    return 0


def _device(name: str | None) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise TumorsweepError(
            f"--device cuda: no CUDA device available (torch {torch.__version__})"
        )
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _load_models(args: argparse.Namespace) -> list[TrainedModel]:
    """Every named model, its weights loaded into its config's network (downloads go to a
    temporary folder that is removed afterwards)."""
    models = []
    for checkpoint in args.checkpoint:
        config = args.config or checkpoint.parent / tracking.CONFIG_ARTIFACT
        if not config.is_file():
            raise TumorsweepError(
                f"--checkpoint {checkpoint}: no {config.name} beside it; give its --config"
            )
        models.append(load_trained(checkpoint, config, source=str(checkpoint)))
    if not (args.run or args.model):
        return models
    from tumorsweep.report.store import check_tracking_uri

    uri = args.tracking_uri or tracking.default_tracking_uri()
    check_tracking_uri(uri)
    with tempfile.TemporaryDirectory(prefix="tumorsweep-predict-") as tmp:
        for index, run_id in enumerate(args.run):
            folder = tracking.download_trial_model(uri, run_id, Path(tmp, f"run{index}"))
            models.append(_from_folder(folder, f"run {run_id}"))
        for index, uri_text in enumerate(args.model):
            folder = tracking.download_registered_model(uri, uri_text, Path(tmp, f"model{index}"))
            models.append(_from_folder(folder, uri_text))
    return models


def _from_folder(folder: Path, source: str) -> TrainedModel:
    return load_trained(
        folder / tracking.BEST_WEIGHTS_FILE, folder / tracking.CONFIG_ARTIFACT, source
    )


def _predict_into(
    out_dir: Path, models: list[TrainedModel], images: list[Path], device: str
) -> Path:
    """Predict every CT into a scratch folder inside `out_dir`, then move the results in;
    on any failure nothing is left (not even `out_dir`, if this created it)."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".predict-", dir=out_dir))
    except OSError as exc:
        raise TumorsweepError(f"--out {out_dir}: cannot create it ({exc})") from None
    try:
        rows = []
        for image in progress(images):
            labels = predict_ct(models, image, device)
            target = save_labels(labels, image, scratch / label_path(image, out_dir).name)
            volumes = label_volumes(labels, open_nifti(image).affine)
            rows.append({"case": case_name(image), "image": str(image), "labels": target.name})
            rows[-1].update(volumes)
        pd.DataFrame(rows, columns=list(VOLUME_COLUMNS)).to_csv(scratch / VOLUMES_FILE, index=False)
        for name in [row["labels"] for row in rows] + [VOLUMES_FILE]:
            os.replace(scratch / name, out_dir / name)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    return out_dir / VOLUMES_FILE


def progress(images: Iterable[Path]) -> Iterator[Path]:
    """The images with a progress bar (tqdm, if installed) or one line per case."""
    images = list(images)
    try:
        from tqdm import tqdm
    except ImportError:
        for index, image in enumerate(images, 1):
            print(f"[{index}/{len(images)}] {image.name}", flush=True)
            yield image
        return
    yield from tqdm(images, desc="predict", unit="case")
