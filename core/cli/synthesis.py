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

from tumorsweep.data.io import (
    AFFINE_TOLERANCE,
    affine_gap,
    as_labels,
    open_nifti,
    resolve_path,
    voxels,
)
from tumorsweep.data.splits import NAMED_SPLITS
from tumorsweep.errors import TumorsweepError
from tumorsweep.outputs import check_output_file, check_output_folder, write_error
from tumorsweep.synthesis.config import TUMOR_TYPES, SynthesisConfig
from tumorsweep.synthesis.location import LocationModel, case_name, fit_location_model
from tumorsweep.synthesis.preview import save_preview
from tumorsweep.synthesis.synthesize import synthesize_tumors


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synthesize` and `fit-location` sub-commands."""
    _register_synthesize(subparsers)
    _register_fit_location(subparsers)


def _register_synthesize(subparsers: argparse._SubParsersAction) -> None:
    syn = subparsers.add_parser(
        "synthesize",
        help="add synthetic tumours to one CT + liver label",
        description="Synthesise tumours into one healthy liver (the training-time transform of "
        "a study, run once): writes image.nii.gz, label.nii.gz (liver 1, tumour 2) and "
        "preview.png (radiological orientation, liver window) into --out.",
        epilog="example:\n  tumorsweep synthesize --image ct.nii.gz --label liver.nii.gz "
        "--out syn/ --sphere-ratio 0.05 --seed 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = syn.add_argument_group("input and output")
    io.add_argument("--image", required=True, type=Path, help="CT NIfTI in HU (required)")
    io.add_argument(
        "--label", required=True, type=Path, help="liver label NIfTI, 0/1 (2 = tumour allowed)"
    )
    io.add_argument("--out", required=True, type=Path, help="output folder (created)")
    io.add_argument("--seed", type=int, default=0, help="random seed of the draw (default: 0)")
    knobs = syn.add_argument_group("synthesis knobs (defaults: Hu et al.'s public code)")
    knobs.add_argument(
        "--style",
        choices=("hu", "zhang", "ca", "difftumor"),
        default="hu",
        help="hu: Hu et al. CVPR 2023; zhang: Zhang et al. JBHI 2023; ca: Pixel2Cancer's "
        "cellular automaton with its as-coded defaults; difftumor: a trained generator "
        "(default: hu; docs/synthesis-styles.md)",
    )
    knobs.add_argument(
        "--tumor-type", choices=TUMOR_TYPES, help="force one size type (default: Hu's mix)"
    )
    knobs.add_argument(
        "--sphere-ratio",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction 0-1 of tumours drawn as spheres, 0.05 = the '+5%% Sphere' column "
        "(default: 0, Hu et al.)",
    )
    knobs.add_argument(
        "--location",
        choices=("uniform", "gmm"),
        default="uniform",
        help="tumour centres: uniform in the liver (Hu's slice rule) or gmm (default: uniform)",
    )
    knobs.add_argument(
        "--location-model",
        type=Path,
        help="JSON from `tumorsweep fit-location` (with gmm; default: none)",
    )
    knobs.add_argument(
        "--generator",
        type=Path,
        help="generator folder (with --style difftumor, required then; default: none)",
    )
    _texture_flags(syn)
    syn.set_defaults(func=run_synthesize)


def _texture_flags(syn: argparse.ArgumentParser) -> None:
    texture = syn.add_argument_group("texture (ranges drawn uniformly per tumour)")
    texture.add_argument(
        "--hu-drop", type=float, nargs=2, metavar=("MIN", "MAX"),
        help="intensity drop of the tumour, HU (default: 65 145)",
    )  # fmt: skip
    texture.add_argument(
        "--edge-blur", type=float, nargs=2, metavar=("MIN", "MAX"),
        help="Gaussian sigma of the mask edge, voxels (default: 1 2)",
    )  # fmt: skip
    texture.add_argument(
        "--u0", type=float, nargs=2, metavar=("MIN", "MAX"),
        help="mean intensity u0 of the texture, 0-1 (default: 0.5 0.55)",
    )  # fmt: skip
    texture.add_argument(
        "--sigma-a", type=float, nargs="+", metavar="VOXELS",
        help="noise smoothing before the Bernoulli step, voxels, one drawn per tumour "
        "(default: 3 ... 15)",
    )  # fmt: skip
    texture.add_argument(
        "--sigma-b", type=float, nargs="+", metavar="VOXELS",
        help="smoothing after the Bernoulli step, voxels, one drawn per tumour (default: 4 7)",
    )  # fmt: skip
    texture.add_argument(
        "--texture-draws", choices=("public_bank", "per_event"),
        help="scale, base and u0 of the texture: public_bank, the values the public code drew "
        "once per start-up texture (needs the default --u0 and sigmas within theirs), or "
        "per_event, drawn per tumour from the ranges (default: public_bank)",
    )  # fmt: skip


def _register_fit_location(subparsers: argparse._SubParsersAction) -> None:
    fit = subparsers.add_parser(
        "fit-location",
        help="fit the GMM tumour-location model",
        description="Fit a Gaussian mixture to where real tumours sit in the liver (normalised "
        "liver coordinates), for synthesis.location=gmm; writes a JSON file.",
        epilog="example:\n  tumorsweep fit-location --data /data/Task03_Liver --split hu-val "
        "--out location.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = fit.add_argument_group("input and output")
    io.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a dataset (MSD / LiTS / nnU-Net / folds JSON: its training tumour cases only) or "
        "a folder of label files (all of them)",
    )
    io.add_argument(
        "--split",
        choices=sorted(NAMED_SPLITS),
        help="named evaluation set to leave out, as the study will (default: none left out)",
    )
    io.add_argument("--out", required=True, type=Path, help="JSON file to write (required)")
    model = fit.add_argument_group("the mixture")
    model.add_argument(
        "--components", type=int, default=2, help="Gaussian components, >= 1 (default: 2)"
    )
    model.add_argument(
        "--covariance",
        choices=("full", "diag", "tied"),
        default="full",
        help="covariance type of the components (default: full)",
    )
    model.add_argument("--seed", type=int, default=0, help="seed of the EM fit (default: 0)")
    model.add_argument(
        "--tiny-radius-mm", type=float, default=None, metavar="MM", help="separate mixtures for "
        "tiny tumours (equivalent-sphere radius <= MM, e.g. 5) and larger ones (default: one)",
    )  # fmt: skip
    fit.set_defaults(func=run_fit_location)


def _config_from_args(args: argparse.Namespace) -> SynthesisConfig:
    texture = {}
    for flag in ("hu_drop", "edge_blur", "u0"):
        if getattr(args, flag) is not None:
            texture[flag] = list(getattr(args, flag))
    for flag in ("sigma_a", "sigma_b"):
        if getattr(args, flag) is not None:
            texture[flag] = getattr(args, flag)
    if args.texture_draws is not None:
        texture["draws"] = args.texture_draws
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
        if where == "texture":  # a rule across texture flags (public_bank vs --u0, --sigma-*)
            message = first["msg"].removeprefix("Value error, ")
            message = message.replace("set synthesis.texture.draws=", "add --texture-draws ")
            raise TumorsweepError(f"texture: {message}") from None
        name, _, end = where.removeprefix("texture.").partition(".")  # a range's low / high
        if where in fields or (where.startswith("texture.") and name in texture):
            where = f"--{name.replace('_', '-')}" + (f" {end}" if end else "")
        raise TumorsweepError(f"{where} {first.get('input')!r}: {first['msg']}") from None


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
    """The label as uint8, refused (one message, as every command words it) unless every
    voxel is exactly 0, 1 or 2."""
    return as_labels(path, voxels(liver, path))


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
    gap = affine_gap(ct.affine, liver.affine)
    if gap > AFFINE_TOLERANCE:
        raise TumorsweepError(
            f"{args.image} and {args.label}: affines differ (by up to {gap:.3g} mm)"
        )
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
