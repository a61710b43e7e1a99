"""Backbone registry: UNet, Swin-UNETR, nnU-Net (DynUNet) and our own SegMamba variants."""

from core.models.registry import (
    BACKBONES,
    build,
    check_patch_size,
    count_parameters,
    load_pretrained_encoder,
)

__all__ = ["BACKBONES", "build", "check_patch_size", "count_parameters", "load_pretrained_encoder"]
