"""`tumorsweep synthesize` (one synthesised case from NIfTI files) and `tumorsweep fit-location`."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from pydantic import ValidationError
from scipy import ndimage

from tumorsweep.data.io import open_nifti, resolve_path, voxels
from tumorsweep.errors import TumorsweepError
from tumorsweep.outputs import check_output_file, check_output_folder, write_error
from tumorsweep.synthesis.config import TUMOR_TYPES, SynthesisConfig
from tumorsweep.synthesis.location import LocationModel, case_name, fit_location_model
from tumorsweep.synthesis.preview import save_preview
from tumorsweep.synthesis.synthesize import synthesize_tumors


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
    syn.add_argument(
        "--style",
        choices=("hu", "zhang", "ca", "difftumor"),
        default="hu",
        help="ca: Pixel2Cancer's cellular automaton with its as-coded defaults "
        "(synthesis.ca; see docs/synthesis-styles.md)",
    )
    syn.add_argument("--generator", type=Path, help="generator folder (with --style difftumor)")
    syn.add_argument("--hu-drop", type=float, nargs=2, metavar=("MIN", "MAX"))
    syn.add_argument("--edge-blur", type=float, nargs=2, metavar=("MIN", "MAX"))
    syn.add_argument("--u0", type=float, nargs=2, metavar=("MIN", "MAX"))
    syn.add_argument("--sigma-a", type=float, nargs="+")
    syn.add_argument("--sigma-b", type=float, nargs="+")
    syn.set_defaults(func=run_synthesize)

    fit = subparsers.add_parser("fit-location", help="fit the GMM tumour-location model")
    fit.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a dataset (MSD / LiTS / nnU-Net / folds JSON: its training tumour cases only) or "
        "a folder of label files (all of them)",
    )
    fit.add_argument(
        "--split", help="named evaluation set to leave out (e.g. hu-val), as the study will"
    )
    fit.add_argument("--components", type=int, default=2)
    fit.add_argument("--covariance", choices=("full", "diag", "tied"), default="full")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--tiny-radius-mm", type=float, default=None, metavar="MM", help="separate mixtures for "
        "tiny tumours (equivalent-sphere radius <= MM, e.g. 5) and larger ones (default: one)",
    )  # fmt: skip
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
        flag = f"--{where.replace('_', '-')}" if where in fields else where
        raise TumorsweepError(f"{flag} {first.get('input')!r}: {first['msg']}") from None


def _load(path: Path) -> nib.Nifti1Image:
    """The one NIfTI reader's checks (link loops, sizes, shear), then strictly 3-D."""
    image = open_nifti(path)
    if len(image.shape) != 3:
        raise TumorsweepError(f"{path}: expected a 3-D volume, got shape {image.shape}")
    return image


OUTPUTS = ("image.nii.gz", "label.nii.gz", "preview.png")


def _check_output_folder(out: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, an --out that is a file or whose outputs would be an input."""
    if out.exists() and not out.is_dir():
        raise TumorsweepError(f"--out {out}: exists and is not a folder")
    sources = {resolve_path(p) for p in inputs}
    for name in OUTPUTS:
        target = out / name
        same = target.exists() and any(p.exists() and os.path.samefile(target, p) for p in inputs)
        if same or resolve_path(target) in sources:
            raise TumorsweepError(
                f"--out {out}: would overwrite the input {(out / name).resolve()}; "
                "choose another folder"
            )


def _read_image(path: Path, ct: nib.Nifti1Image) -> np.ndarray:
    return voxels(ct, path).astype(np.float32, copy=False)


def _read_label(path: Path, liver: nib.Nifti1Image) -> np.ndarray:
    """The label as uint8, refused unless every voxel is exactly 0, 1 or 2."""
    try:
        values = np.asarray(liver.dataobj)
    except MemoryError:
        raise TumorsweepError(f"{path}: not enough memory to read its voxels") from None
    except Exception as exc:  # a truncated file fails only when its voxels are read
        reason = str(exc) or type(exc).__name__
        raise TumorsweepError(f"{path}: cannot read voxel data ({reason})") from None
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise TumorsweepError(f"{path}: label has NaN or inf voxels")
        if np.any(values != np.rint(values)):
            raise TumorsweepError(
                f"{path}: label has fractional values (e.g. {values[values != np.rint(values)][0]}"
                "); expected 0 (background), 1 (liver) or 2 (tumour)"
            )
    if values.dtype == bool:
        values = values.astype(np.uint8)
    low, high = values.min(), values.max()
    if low < 0 or high > 2:
        found = sorted(int(v) for v in np.unique(values) if not 0 <= v <= 2)[:5]
        raise TumorsweepError(
            f"{path}: label values {found} found; expected 0 (background), 1 (liver), 2 (tumour)"
        )
    return values.astype(np.uint8)


def _write_atomically(path: Path, write) -> None:
    """`write(tmp)` into a temporary file beside `path`, then rename it onto `path`, so an
    interrupted run never leaves a half-written output."""
    suffix = "".join(path.suffixes)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_synthesize(args: argparse.Namespace) -> int:
    """Resample to 1 mm, synthesise, resample back to the input grid, write image/label/preview.

    Every input is checked before any work and nothing is written on bad input; outputs
    never replace an input and are written atomically."""
    if args.style == "difftumor":
        from tumorsweep.cli.generator import synthesize_difftumor

        _check_output_folder(args.out, [args.image, args.label])
        check_output_folder(args.out, "--out")
        return synthesize_difftumor(args)
    config = _config_from_args(args)
    if config.location == "gmm" and args.location_model is None:
        raise TumorsweepError("--location gmm needs --location-model (a JSON from fit-location)")
    inputs = [args.image, args.label] + ([args.location_model] if args.location_model else [])
    _check_output_folder(args.out, inputs)
    check_output_folder(args.out, "--out")
    ct, liver = _load(args.image), _load(args.label)
    if ct.shape != liver.shape:
        raise TumorsweepError(
            f"{args.image} shape {ct.shape} and {args.label} shape {liver.shape} differ"
        )
    if not np.allclose(ct.affine, liver.affine, atol=1e-3):
        raise TumorsweepError(f"{args.image} and {args.label}: affines differ")
    model = LocationModel.load(args.location_model) if config.location == "gmm" else None
    image = _read_image(args.image, ct)
    label = _read_label(args.label, liver)
    spacing = np.asarray(ct.header.get_zooms()[:3], dtype=np.float64)
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
    out_image = nib.Nifti1Image(new_image.astype(np.float32), ct.affine)
    out_label = nib.Nifti1Image(new_label.astype(np.uint8), liver.affine)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        _write_atomically(args.out / "image.nii.gz", lambda tmp: nib.save(out_image, tmp))
        _write_atomically(args.out / "label.nii.gz", lambda tmp: nib.save(out_label, tmp))
        _write_atomically(
            args.out / "preview.png",
            lambda tmp: save_preview(new_image, new_label, tmp, before=image, affine=ct.affine),
        )
    except OSError as exc:
        raise write_error(args.out, exc) from None
    print(
        f"wrote {args.out}/image.nii.gz, label.nii.gz, preview.png "
        f"({int((new_label == 2).sum())} tumour voxels)"
    )
    return 0


def _label_paths(data: Path, split: str | None) -> list[tuple[str, Path]]:
    """(case name, label file) to fit on: a dataset's real-tumour *training* cases (its
    validation and test lists, or the named split, left out as a study leaves them out), else
    every NIfTI in a plain folder of labels."""
    from tumorsweep.data.layouts import NIFTI_SUFFIXES, load_split

    is_folder_of_labels = (
        data.is_dir()
        and not any(data.glob("*.json"))
        and not any(p.name.startswith("volume-") for p in data.iterdir())
    )
    if not is_folder_of_labels:
        dataset = load_split(data, split=split)
        return [(e["case"], Path(e["label"])) for e in dataset.train_cases(real_tumors=True)]
    if split is not None:
        raise TumorsweepError(f"--split {split}: {data} is a folder of labels, not a dataset")
    paths = sorted(resolve_path(p) for p in data.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    paths = [p for p in paths if not p.name.startswith("._")]
    if not paths:
        raise TumorsweepError(f"{data}: no label NIfTI files found")
    return [(case_name(p), p) for p in paths]


def run_fit_location(args: argparse.Namespace) -> int:
    """Fit the location GMM on every tumour of the labels under `--data` and save it as JSON,
    with the cases (names and label paths) it was fitted on."""
    if args.components < 1:
        raise TumorsweepError(f"--components {args.components}: must be >= 1")
    if args.out.is_dir():
        raise TumorsweepError(f"--out {args.out}: is a folder; give the JSON file to write")
    check_output_file(args.out, "--out")
    cases = _label_paths(args.data, args.split)
    if not cases:
        raise TumorsweepError(f"{args.data}: no real-tumour training cases to fit on")
    if resolve_path(args.out) in {resolve_path(p) for _, p in cases}:
        raise TumorsweepError(f"--out {args.out}: is one of the input label files")
    model = fit_location_model(
        [p for _, p in cases],
        args.components,
        args.covariance,
        args.seed,
        cases=[c for c, _ in cases],
        tiny_radius_mm=args.tiny_radius_mm,
    )
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(args.out, model.save)
    except OSError as exc:
        raise write_error(args.out, exc) from None
    tiny = "" if model.tiny is None else (
        f" and {args.components} on {model.tiny.n_tumors} tiny tumours (radius <= "
        f"{args.tiny_radius_mm:g} mm)"
    )  # fmt: skip
    print(
        f"fitted {args.components} components on {model.n_tumors} tumours{tiny} of "
        f"{len(cases)} cases -> {args.out}"
    )
    return 0
