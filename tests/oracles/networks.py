"""Oracle: the published segmentation networks, built with the library the public code pins.

Runs in the side environment (MONAI 0.9.0, numpy 1.23; never imports tumorsweep). For each
job it builds the network the public code builds, with the published arguments:
- unet: SyntheticTumors `main.py` / DiffTumor STEP3 `main.py` (`--model_name unet`),
  `monai.networks.nets.UNet`.
- swin_unetr_{tiny,small,base}: SyntheticTumors `networks/swin3d_unetrv2.py` (`--model_name
  swin_unetrv2 --swin_type ...`). That file is a copy of MONAI 0.9's SwinUNETR with the same
  blocks, arguments and forward (patch embedding, shifted-window blocks, the 0.9 patch
  merging order, a parameter-free LayerNorm on each stage output, UNETR decoder); it differs
  only in names (`mlp.fc1/fc2` for MONAI's `mlp.linear1/linear2`), in a final LayerNorm
  `swinViT.norm` its forward never uses, and in padding odd depths in the merging (never
  reached for inputs divisible by 32). So MONAI 0.9's SwinUNETR computes the published
  function; its checkpoints are written here in the published key layout.
- nnunet: DiffTumor STEP3 `main.py` (`--model_name nnunet`): DynUNet with the kernels and
  strides of `dynunet_pipeline/create_network.py:get_kernels_strides` for task "custom"
  (patch 96^3, spacing 0.77 x 0.77 x 1 mm), `norm_name="instance"`, no deep supervision.

Usage: networks.py JOBS.json, a list of jobs:
- {"mode": "publish", "name", "seed", "input", "checkpoint", "output", "best_acc_dtype"}:
  random weights (torch seed), saved as the publishers' `save_checkpoint` does (`epoch`,
  `best_acc` the mean validation Dice as a numpy scalar of `best_acc_dtype`, float32 by
  default, `state_dict`, AdamW `optimizer` state after one step, warm-up cosine `scheduler`
  state), and the network's output on the input tensor.
- {"mode": "forward", "name", "weights", "input", "output"}: load a state dict (MONAI names)
  strictly and write the output on the input tensor.
"""

import json
import math
import sys

import numpy as np
import torch
from monai.networks.nets import DynUNet, SwinUNETR, UNet

SWIN_FEATURES = {"swin_unetr_tiny": 12, "swin_unetr_small": 24, "swin_unetr_base": 48}


def kernels_strides(patch=(96, 96, 96), spacing=(0.77, 0.77, 1.0)):
    """DiffTumor's rule: halve every axis whose spacing is within 2x of the finest and whose
    size is at least 8, until no axis halves; kernel 3 (1 for a much coarser axis)."""
    sizes, spacings = list(patch), list(spacing)
    strides, kernels = [], []
    while True:
        ratio = [s / min(spacings) for s in spacings]
        stride = [2 if r <= 2 and n >= 8 else 1 for r, n in zip(ratio, sizes, strict=True)]
        kernel = [3 if r <= 2 else 1 for r in ratio]
        if all(s == 1 for s in stride):
            break
        sizes = [n / s for n, s in zip(sizes, stride, strict=True)]
        spacings = [p * s for p, s in zip(spacings, stride, strict=True)]
        strides.append(stride)
        kernels.append(kernel)
    strides.insert(0, [1, 1, 1])
    kernels.append([3, 3, 3])
    return kernels, strides


def build(name, size):
    if name == "unet":
        return UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=3,
            channels=(16, 32, 64, 128, 256),
            strides=(2, 2, 2, 2),
            num_res_units=2,
        )
    if name in SWIN_FEATURES:
        return SwinUNETR(
            img_size=size,
            in_channels=1,
            out_channels=3,
            feature_size=SWIN_FEATURES[name],
            depths=(2, 2, 2, 2),
            num_heads=(3, 6, 12, 24),
            norm_name="instance",
        )
    if name == "nnunet":
        kernels, strides = kernels_strides()
        return DynUNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=3,
            kernel_size=kernels,
            strides=strides,
            upsample_kernel_size=strides[1:],
            norm_name="instance",
            deep_supervision=False,
            deep_supr_num=3,
        )
    raise SystemExit(f"unknown network {name}")


class WarmupCosine(torch.optim.lr_scheduler._LRScheduler):
    """Linear warm-up then cosine, stepped per epoch (the public LinearWarmupCosineAnnealingLR's
    attributes, so its state dict has the same plain values)."""

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0):
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.warmup_start_lr, self.eta_min = warmup_start_lr, eta_min
        super().__init__(optimizer)

    def get_lr(self):
        e = self.last_epoch
        if e < self.warmup_epochs:
            return [
                self.warmup_start_lr + e * (b - self.warmup_start_lr) / max(1, self.warmup_epochs)
                for b in self.base_lrs
            ]
        t = (e - self.warmup_epochs) / max(1, self.max_epochs - self.warmup_epochs)
        return [
            self.eta_min + 0.5 * (b - self.eta_min) * (1 + math.cos(math.pi * t))
            for b in self.base_lrs
        ]


def published_layout(name, state, generator):
    """Swin keys as swin3d_unetrv2 names them, with its unused final LayerNorm."""
    if name not in SWIN_FEATURES:
        return state
    out = {
        k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
        for k, v in state.items()
    }
    width = 8 * SWIN_FEATURES[name]
    out["swinViT.norm.weight"] = torch.randn(width, generator=generator)
    out["swinViT.norm.bias"] = torch.randn(width, generator=generator)
    return out


def forward(model, path):
    x = torch.load(path)
    model.eval()
    with torch.no_grad():
        return model(x)


def publish(job):
    torch.manual_seed(job["seed"])
    x = torch.load(job["input"])
    model = build(job["name"], tuple(x.shape[2:]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=1e-5)
    scheduler = WarmupCosine(optimizer, warmup_epochs=100, max_epochs=4000)
    for param in model.parameters():  # one AdamW step, so the optimizer holds its state
        param.grad = torch.randn(param.shape) * 1e-3
    optimizer.step()
    scheduler.step()
    # liver and tumour Dice as the trainer holds them: float32 from a tensor, or float64
    val_acc = np.array([0.95, 0.55], dtype=job.get("best_acc_dtype", "float32"))
    generator = torch.Generator().manual_seed(job["seed"] + 1)
    torch.save(
        {
            "epoch": 199,
            "best_acc": np.mean(val_acc),  # a numpy scalar
            "state_dict": published_layout(job["name"], model.state_dict(), generator),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        job["checkpoint"],
    )
    torch.save(forward(model, job["input"]), job["output"])


def run(job):
    if job["mode"] == "publish":
        publish(job)
    else:
        x = torch.load(job["input"])
        model = build(job["name"], tuple(x.shape[2:]))
        model.load_state_dict(torch.load(job["weights"]), strict=True)
        torch.save(forward(model, job["input"]), job["output"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    with open(sys.argv[1]) as handle:
        for item in json.load(handle):
            run(item)
    print("ok")
