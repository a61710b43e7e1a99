"""`tumorsweep synthesize` (one synthesised case from NIfTI files) and `tumorsweep fit-location`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from pydantic import ValidationError
from scipy import ndimage

from core.errors import TumorsweepError
from core.synthesis.config import TUMOR_TYPES, SynthesisConfig
from core.synthesis.location import LocationModel, fit_location_model
from core.synthesis.preview import save_preview
from core.synthesis.synthesize import synthesize_tumors


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synthesize` and `fit-location` sub-commands."""
    syn = subparsers.add_parser("synthesize", help="add synthetic tumours to one CT + liver label")
    syn.add_argument("--image", required=True, type=Path, help="CT NIfTI in HU")
    syn.add_argument("--label", required=True, type=Path, help="liver label NIfTI (0/1)")
    syn.add_argument("--out", required=True, type=Path, help="output folder")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--tumor-type", choices=TUMOR_TYPES, help="force one type (default: Hu mix)")
    syn.add_argument("--sphere-ratio", type=float, default=0.0)
    syn.add_argument("--location", choices=("uniform", "gmm"), default="uniform")
    syn.add_argument("--location-model", type=Path, help="JSON from fit-location (with gmm)")
    syn.add_argument("--style", choices=("hu", "zhang", "difftumor"), default="hu")
    syn.add_argument("--generator", type=Path, help="generator folder (with --style difftumor)")
    syn.add_argument("--hu-drop", type=float, nargs=2, metavar=("MIN", "MAX"))
    syn.add_argument("--edge-blur", type=float, nargs=2, metavar=("MIN", "MAX"))
    syn.add_argument("--u0", type=float, nargs=2, metavar=("MIN", "MAX"))
    syn.add_argument("--sigma-a", type=float, nargs="+")
    syn.add_argument("--sigma-b", type=float, nargs="+")
    syn.set_defaults(func=run_synthesize)

    fit = subparsers.add_parser("fit-location", help="fit the GMM tumour-location model")
    fit.add_argument("--data", required=True, type=Path, help="folder of labels or MSD dataset")
    fit.add_argument("--components", type=int, default=2)
    fit.add_argument("--covariance", choices=("full", "diag", "tied"), default="full")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", required=True, type=Path)
    fit.set_defaults(func=run_fit_location)


def _config_from_args(args: argparse.Namespace) -> SynthesisConfig:
    texture = {}
    for flag, (lo_name, hi_name) in {
        "hu_drop": ("hu_drop_min", "hu_drop_max"),
        "edge_blur": ("edge_blur_min", "edge_blur_max"),
        "u0": ("u0_min", "u0_max"),
    }.items():
        if getattr(args, flag) is not None:
            texture[lo_name], texture[hi_name] = getattr(args, flag)
    for flag in ("sigma_a", "sigma_b"):
        if getattr(args, flag) is not None:
            texture[flag] = getattr(args, flag)
    fields = {
        "sphere_ratio": args.sphere_ratio,
        "location": args.location,
        "location_model": str(args.location_model) if args.location_model else None,
        "style": args.style,
        "texture": texture,
    }
    if args.tumor_type:
        fields["type_probs"] = {t: float(t == args.tumor_type) for t in TUMOR_TYPES}
    try:
        return SynthesisConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "synthesis"
        raise TumorsweepError(f"{where}: {first['msg']}") from exc


def _load(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise TumorsweepError(f"{path}: no such file")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise TumorsweepError(f"{path}: not a readable NIfTI ({exc})") from exc
    if len(image.shape) != 3:
        raise TumorsweepError(f"{path}: expected a 3-D volume, got shape {image.shape}")
    return image


def run_synthesize(args: argparse.Namespace) -> int:
    """Resample to 1 mm, synthesise, resample back to the input grid, write image/label/preview."""
    if args.style == "difftumor":
        from core.generative.cli import synthesize_difftumor

        return synthesize_difftumor(args)
    config = _config_from_args(args)
    ct, liver = _load(args.image), _load(args.label)
    if ct.shape != liver.shape or not np.allclose(ct.affine, liver.affine, atol=1e-3):
        raise TumorsweepError(f"{args.image} and {args.label}: shapes or affines differ")
    model = LocationModel.load(args.location_model) if config.location == "gmm" else None
    spacing = np.asarray(ct.header.get_zooms()[:3], dtype=np.float64)
    image = np.asarray(ct.dataobj, dtype=np.float32)
    label = np.rint(np.asarray(liver.dataobj)).astype(np.uint8)
    one_mm = np.allclose(spacing, 1.0, atol=1e-3)
    work_image = image if one_mm else ndimage.zoom(image, spacing, order=1)
    work_label = label if one_mm else ndimage.zoom(label, spacing, order=0)
    rng = np.random.default_rng(args.seed)
    new_image, new_label = synthesize_tumors(work_image, work_label, config, rng, model)
    if not one_mm:
        factors = np.divide(image.shape, new_image.shape)
        drop = ndimage.zoom(new_image - work_image, factors, order=1)
        new_image = image + drop * (label >= 1)
        new_label = np.where(
            label >= 1, np.maximum(label, ndimage.zoom(new_label, factors, order=0)), label
        )
    args.out.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(new_image.astype(np.float32), ct.affine), args.out / "image.nii.gz")
    nib.save(nib.Nifti1Image(new_label.astype(np.uint8), liver.affine), args.out / "label.nii.gz")
    save_preview(new_image, new_label, args.out / "preview.png")
    print(
        f"wrote {args.out}/image.nii.gz, label.nii.gz, preview.png "
        f"({int((new_label == 2).sum())} tumour voxels)"
    )
    return 0


def _label_paths(data: Path) -> list[Path]:
    """Label files: MSD `dataset.json` training entries, else every NIfTI in the folder."""
    manifest = data / "dataset.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text())["training"]
            paths = [(data / e["label"]).resolve() for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise TumorsweepError(f"{manifest}: no usable 'training' label list ({exc})") from exc
    elif data.is_dir():
        paths = sorted(p for p in data.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    else:
        raise TumorsweepError(f"{data}: not a folder")
    paths = [p for p in paths if not p.name.startswith("._")]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise TumorsweepError(f"{missing[0]}: listed label file does not exist")
    if not paths:
        raise TumorsweepError(f"{data}: no label NIfTI files found")
    return paths


def run_fit_location(args: argparse.Namespace) -> int:
    """Fit the location GMM on every tumour of the labels under `--data` and save it as JSON."""
    model = fit_location_model(_label_paths(args.data), args.components, args.covariance, args.seed)
    model.save(args.out)
    print(f"fitted {args.components} components on {model.n_tumors} tumours -> {args.out}")
    return 0
