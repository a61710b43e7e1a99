"""`tumorsweep train-generator`, and what `tumorsweep synthesize --style difftumor` runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from tumorsweep.data.splits import NAMED_SPLITS
from tumorsweep.errors import TumorsweepError
from tumorsweep.outputs import check_output_folder, exclusive


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-generator` sub-command."""
    p = subparsers.add_parser(
        "train-generator",
        help="train a DiffTumor generator on a study's real-tumour training cases",
        description="Train the DiffTumor autoencoder and early/late diffusion models on the "
        "real-tumour training cases of a dataset (never its validation or test cases) and "
        "write a generator folder for synthesis.style=difftumor.",
        epilog="examples:\n  tumorsweep train-generator --out gen/\n"
        "  tumorsweep train-generator --data /data/Task03_Liver --split hu-val --out gen/ "
        "--address auto --workers 4 --gpus-per-worker 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", help="dataset folder or JSON (default: the built-in phantom CTs)")
    data.add_argument(
        "--split", choices=sorted(NAMED_SPLITS),
        help="named evaluation set left out of training (default: the dataset's own test list)",
    )  # fmt: skip
    data.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="with --fold: train on that fold's training cases (default: no folds)",
    )
    data.add_argument("--fold", type=int, help="fold index, 0..K-1 (needs --folds; default: none)")
    data.add_argument(
        "--preset", choices=("demo", "paper"),
        help="default: demo (tiny, minutes) without --data, else paper",
    )  # fmt: skip
    data.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="generator config override (repeatable), e.g. training.autoencoder_epochs=5 "
        "(default: none)",
    )  # fmt: skip
    results = p.add_argument_group("results")
    results.add_argument("--out", required=True, type=Path, help="new folder for the generator")
    results.add_argument("--tracking-uri", help="MLflow URI (default: sqlite:///$PWD/mlflow.db)")
    results.add_argument(
        "--experiment", default="difftumor_generator",
        help="MLflow experiment (default: difftumor_generator)",
    )  # fmt: skip
    _where_flags(p)
    p.set_defaults(func=run_train_generator)


def _where_flags(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("where it runs")
    where.add_argument(
        "--address", help="Ray cluster address: train as a Ray Train DDP run there "
        "(default: in this process)",
    )  # fmt: skip
    where.add_argument(
        "--workers", type=int, default=1, help="DDP workers, with --address (default: 1)"
    )
    where.add_argument("--workers-per-trial", type=int, dest="workers", help=argparse.SUPPRESS,
                       default=argparse.SUPPRESS)  # fmt: skip
    where.add_argument(
        "--gpus-per-worker", type=int, default=0, help="GPUs for each worker (default: 0, CPU)"
    )
    where.add_argument(
        "--cpus-per-worker", type=int, default=1,
        help="CPUs for each worker, its loader processes included (default: 1)",
    )  # fmt: skip
    where.add_argument(
        "--storage",
        help="Ray checkpoints: a path every node sees (default: .tumorsweep/ray_results)",
    )


def run_train_generator(args: argparse.Namespace) -> int:
    """Resolve the study's cases, train, write the folder, say where it is."""
    from tumorsweep import preflight
    from tumorsweep.config import make_config, parse_assignment
    from tumorsweep.data.cases import resolve_cases
    from tumorsweep.difftumor.job import GeneratorJob, run_job
    from tumorsweep.generative.config import generator_config
    from tumorsweep.tracking import default_tracking_uri

    if args.workers < 1 or args.cpus_per_worker < 1 or args.gpus_per_worker < 0:
        raise TumorsweepError("--workers and --cpus-per-worker must be >= 1, --gpus >= 0")
    preset = args.preset or ("paper" if args.data else "demo")
    overrides = {"data.split": args.split} if args.split else {}
    if args.data:
        overrides["data.root"] = str(Path(args.data).resolve())
    if (args.folds is None) != (args.fold is None):
        raise TumorsweepError("--folds and --fold go together (the fold's training cases)")
    if args.folds is not None:
        overrides.update({"data.folds": args.folds, "data.fold": args.fold})
    data = make_config(preset, overrides).data
    config = generator_config(preset, data.spacing, dict(map(parse_assignment, args.set)))
    tracking_uri = args.tracking_uri or default_tracking_uri()
    preflight.check_tracking_uri(tracking_uri)
    check_output_folder(args.out, "--out", new=True)
    cases = resolve_cases(data)
    print(
        f"DiffTumor generator ({preset} preset, {config.patch_size}^3 patches at "
        f"{data.spacing} mm): {len(cases.train_tumor)} real-tumour training cases of "
        f"{cases.root}",
        flush=True,
    )
    job = GeneratorJob(
        config=config,
        cases=cases,
        out=args.out,
        tracking_uri=tracking_uri,
        experiment=args.experiment,
        address=args.address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        storage=args.storage or "",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # beside the folder, as the partial folder the generator is written into before its rename
    with exclusive(args.out.parent / f".{args.out.name}.lock", f"--out {args.out}"):
        if args.out.exists():  # finished by another run while this one resolved its cases
            raise TumorsweepError(f"--out {args.out}: already exists; choose a new folder")
        out = run_job(job)
    print(f"wrote {out} (use: --set synthesis.style=difftumor --set synthesis.generator={out})")
    return 0


_KIND_OF_TYPE = {"tiny": "early", "small": "early", "medium": "medium", "large": "large"}


def synthesize_difftumor(args: argparse.Namespace) -> int:
    """`tumorsweep synthesize --style difftumor --generator DIR`: resample the CT to the
    generator's spacing, add one generated tumour, resample the change back, write image,
    label and preview (each file written whole, then renamed into place)."""
    import nibabel as nib

    from tumorsweep.data.io import load_pair
    from tumorsweep.generative.store import load_generator
    from tumorsweep.generative.synthesis import synthesize_difftumor_inplace
    from tumorsweep.synthesis import SynthesisConfig, save_preview

    if not getattr(args, "generator", None):
        raise TumorsweepError("--generator DIR is required with --style difftumor")
    if args.tumor_type == "mix":
        raise TumorsweepError("--tumor-type mix: DiffTumor draws early, medium or large tumours")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = load_generator(args.generator, device)
    image, label, affine, spacing = load_pair(args.image, args.label)
    image = image.astype(np.float32)
    target = np.asarray(generator.config.spacing, dtype=np.float64)
    factors = np.asarray(spacing, dtype=np.float64) / target
    resample = not np.allclose(factors, 1.0, atol=1e-3)
    work_image = ndimage.zoom(image, factors, order=1) if resample else image.copy()
    work_label = ndimage.zoom(label, factors, order=0) if resample else label.copy()
    mm = float(np.mean(target))  # radii are in voxels at the generator's spacing
    defaults = SynthesisConfig()
    knobs = {}
    if args.tumor_type:
        wanted = _KIND_OF_TYPE[args.tumor_type]
        knobs = {kind: float(kind == wanted) for kind in ("early", "medium", "large")}
    config = SynthesisConfig(
        style="difftumor",
        generator=str(args.generator),
        radius={k: max(1.0, r / mm) for k, r in defaults.radius.items()},
        elastic_sigma={k: (a / mm, b / mm) for k, (a, b) in defaults.elastic_sigma.items()},
        difftumor={**knobs, "prob": 1.0},
    )
    before = work_image.copy()
    rng = np.random.default_rng(args.seed)
    added = synthesize_difftumor_inplace(work_image, work_label, generator, config, rng)
    if resample:
        back = np.divide(image.shape, work_image.shape)
        new_image = image + ndimage.zoom(work_image - before, back, order=1)
        new_label = np.maximum(label, ndimage.zoom(work_label, back, order=0) * (label >= 1))
    else:
        new_image, new_label = work_image, work_label
    args.out.mkdir(parents=True, exist_ok=True)
    for name, array, dtype in (("image", new_image, np.float32), ("label", new_label, np.uint8)):
        partial = args.out / f".{name}.partial.nii.gz"
        nib.save(nib.Nifti1Image(array.astype(dtype), affine), partial)
        os.replace(partial, args.out / f"{name}.nii.gz")
    partial_png = args.out / ".preview.partial.png"
    save_preview(new_image, new_label, partial_png, before=image, affine=affine)
    os.replace(args.out / ".preview.partial.png", args.out / "preview.png")
    print(
        f"wrote {args.out}/image.nii.gz, label.nii.gz, preview.png ({added} tumour voxels at "
        f"{generator.config.spacing} mm, {int((new_label == 2).sum())} on the input grid)"
    )
    return 0
