"""Backbone registry: UNet, Swin-UNETR, nnU-Net (DynUNet) and our own SegMamba variants."""

from tumorsweep.models.registry import (
    BACKBONES,
    REGISTRY,
    Backbone,
    backbone,
    build,
    count_parameters,
    load_pretrained_encoder,
)

__all__ = [
    "BACKBONES",
    "REGISTRY",
    "Backbone",
    "backbone",
    "build",
    "count_parameters",
    "load_pretrained_encoder",
]
