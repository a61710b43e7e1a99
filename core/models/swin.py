"""The published Swin-UNETR patch merging and the published Swin state-dict layout.

Hu et al. (MrGiovanni/SyntheticTumors `networks/swin_transformer_3d.py`, `PatchMerging`; the
same file in DiffTumor's STEP3) and MONAI up to 1.2 merge each 2x2x2 block of tokens by
concatenating eight corner slices in an order that takes the (0,1,0) and (0,0,1) corners twice
and never takes (1,1,0) or (0,1,1). MONAI 1.3+ (`"merging"`) concatenates the eight distinct
corners, so with the same weights it computes another function, and the released checkpoints
and the self-supervised encoder `model_swinvit.pt` were trained with the published order.
`PublishedPatchMerging` restores it as a `downsample` module for MONAI's `SwinUNETR`.

The published network also names its MLP layers `mlp.fc1`/`mlp.fc2` (MONAI: `linear1`/
`linear2`) and has a final LayerNorm `swinViT.norm` that its forward never uses;
`from_published_keys` maps such a state dict onto MONAI's names.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMergingV2

# Offsets (depth, height, width) of the eight slices, in the order the published code (and
# MONAI <= 1.2) concatenates them: (0,1,0) and (0,0,1) appear twice, (1,1,0) and (0,1,1) never.
PUBLISHED_CORNERS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (1, 0, 0),
    (0, 1, 0),
    (0, 0, 1),
    (1, 0, 1),
    (0, 1, 0),
    (0, 0, 1),
    (1, 1, 1),
)


class PublishedPatchMerging(PatchMergingV2):
    """3-D patch merging with the published corner order (same parameters as MONAI's).

    Input (B, D, H, W, C) channels-last tokens; odd sizes are zero-padded at the end (MONAI's
    rule; the published code pads height and width only, which differs only for odd depths,
    never reached with inputs divisible by 32).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)  # 2-D: MONAI's order (the published network is 3-D)
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in PUBLISHED_CORNERS], -1)
        return self.reduction(self.norm(x))


_MLP_KEY = re.compile(r"(\.mlp\.)fc([12])\.")
UNUSED_PUBLISHED_KEYS = ("swinViT.norm.weight", "swinViT.norm.bias")


def from_published_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Swin-UNETR state dict in the published layout (`mlp.fc1/fc2`, the unused
    `swinViT.norm`) with MONAI's names; other keys pass unchanged."""
    return {
        _MLP_KEY.sub(r"\1linear\2.", key): value
        for key, value in state.items()
        if key not in UNUSED_PUBLISHED_KEYS
    }
