"""Oracle: Hu et al.'s evaluation chain (SyntheticTumors `validation.py`) run with MONAI 0.9.0.

Runs in the `monai090` side environment (tests/oracles/env.py), never in the project's. Written
from the chain their script describes, with the library it pins doing every step:

  LoadImaged(image, label) -> AddChanneld(image, label) -> Orientationd(image, RAS) ->
  Spacingd(image, spacing, bilinear; MONAI's default float64) ->
  ScaleIntensityRanged(image, -21..189 -> 0..1, clip) -> SpatialPadd(image, roi, "minimum") ->
  ToTensord; Dataset + DataLoader(batch_size=1); sliding_window_inference(roi, sw_batch_size 1,
  overlap, mode="gaussian") of the model -> decollate -> Invertd(pred, nearest_interp=False) ->
  AsDiscreted(pred, argmax, one-hot 3), AsDiscreted(label, one-hot 3) -> their post-processing
  (largest component of the liver channel with scipy's default structure, tumour channel kept
  within 30 default binary dilations of it, background the rest).

Only the `.cuda()` calls are left out (CPU) and the 1 mm spacing, window size and overlap come
from the command line. The per-channel masks it writes are scored by the test with DeepMind's
`surface-distance` and their Dice formula (the scoring needs nothing of MONAI 0.9).

Usage: python hu2023_validation.py SPEC.json OUT.npz
SPEC: {"cases": [{"image", "label"}], "weights": state-dict .pt, "unet": UNet kwargs,
       "spacing": [x, y, z], "roi": [x, y, z], "overlap": float}
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from monai import data, transforms
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from monai.transforms import AsDiscreted, Compose, Invertd
from scipy import ndimage


def chain(spacing, roi) -> Compose:
    """Their `val_org_transform` at the given spacing and window size."""
    return transforms.Compose(
        [
            transforms.LoadImaged(keys=["image", "label"]),
            transforms.AddChanneld(keys=["image", "label"]),
            transforms.Orientationd(keys=["image"], axcodes="RAS"),
            transforms.Spacingd(keys=["image"], pixdim=tuple(spacing), mode=("bilinear")),
            transforms.ScaleIntensityRanged(
                keys=["image"], a_min=-21, a_max=189, b_min=0.0, b_max=1.0, clip=True
            ),
            transforms.SpatialPadd(keys=["image"], mode="minimum", spatial_size=list(roi)),
            transforms.ToTensord(keys=["image", "label"]),
        ]
    )


def post_chain(preprocess: Compose) -> Compose:
    """Their `post_transforms`: invert the logits linearly, argmax, one-hot; label one-hot."""
    return Compose(
        [
            Invertd(
                keys="pred",
                transform=preprocess,
                orig_keys="image",
                meta_keys="pred_meta_dict",
                orig_meta_keys="image_meta_dict",
                meta_key_postfix="meta_dict",
                nearest_interp=False,
                to_tensor=True,
            ),
            AsDiscreted(keys="pred", argmax=True, to_onehot=3),
            AsDiscreted(keys="label", to_onehot=3),
        ]
    )


def denoise(pred: np.ndarray) -> np.ndarray:
    """Their post-processing of a (3, X, Y, Z) one-hot prediction, as `denoise_pred` reads:
    the first largest connected component (scipy default structure) of channel 1, channel 2
    gated by 30 default binary dilations of it, channel 0 the rest."""
    out = np.zeros_like(pred)
    components, count = ndimage.label(pred[1])
    best, best_size = -1, -1
    for index in range(1, count + 1):
        size = np.sum(components == index)
        if size > best_size:
            best, best_size = index, size
    out[1] = components == best
    gate = ndimage.binary_dilation(out[1], iterations=30).astype(bool)
    out[2] = pred[2].astype(bool) * gate
    out[0] = 1 - np.logical_or(out[1], out[2])
    return out


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    torch.manual_seed(0)
    model = UNet(**spec["unet"])
    model.load_state_dict(torch.load(spec["weights"], map_location="cpu"), strict=True)
    model.eval()
    preprocess = chain(spec["spacing"], spec["roi"])
    post = post_chain(preprocess)
    loader = data.DataLoader(
        data.Dataset(spec["cases"], transform=preprocess), batch_size=1, shuffle=False
    )
    result = {}
    with torch.no_grad():
        for index, batch in enumerate(loader):
            pixdim = batch["label_meta_dict"]["pixdim"].cpu().numpy()
            batch["pred"] = sliding_window_inference(
                batch["image"],
                roi_size=list(spec["roi"]),
                sw_batch_size=1,
                predictor=model,
                overlap=spec["overlap"],
                mode="gaussian",
            )
            item = [post(i) for i in data.decollate_batch(batch)][0]
            pred = denoise(item["pred"].detach().cpu().numpy())
            label = item["label"].detach().cpu().numpy()
            for channel, name in ((1, "liver"), (2, "tumor")):
                result[f"{index}_pred_{name}"] = pred[channel].astype(bool)
                result[f"{index}_label_{name}"] = label[channel].astype(bool)
            result[f"{index}_spacing"] = np.asarray(pixdim[0][1:4], dtype=np.float64)
            result[f"{index}_image"] = batch["image"][0, 0].numpy()  # the window's input
    np.savez_compressed(out_path, **result)
    print(json.dumps({"cases": len(spec["cases"])}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
