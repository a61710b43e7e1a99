"""Backbone registry: one `build(name, **overrides)` for every segmenter a study can sweep.

Each backbone is a `Backbone` entry: a factory whose keyword arguments are the published
defaults (Hu et al.'s UNet and Swin-UNETR, DiffTumor's DynUNet, SegMamba), so an override is
just a keyword and a typo is caught here instead of deep inside MONAI, plus the facts other
modules need (display name in the tables, whether a pretrained encoder applies, whether the
constructor takes the patch size). Importing this module loads neither torch nor MONAI, so the
report reads display names from here without them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tumorsweep.errors import TumorsweepError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SWIN_PRETRAINED_FEATURE_SIZE = 48


def _unet(
    in_channels: int = 1,
    out_channels: int = 3,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=strides,
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )


SWIN_MERGING = ("published", "monai16")


def _swin_factory(feature_size: int) -> Callable[..., torch.nn.Module]:
    def factory(
        in_channels: int = 1,
        out_channels: int = 3,
        feature_size: int = feature_size,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        use_v2: bool = False,
        merging: str = "published",
    ) -> torch.nn.Module:
        """MONAI's SwinUNETR with the published patch merging (`merging="published"`,
        tumorsweep.models.swin) or MONAI 1.6's eight distinct corners (`"monai16"`)."""
        from monai.networks.nets import SwinUNETR

        if merging not in SWIN_MERGING:
            raise ValueError(f"merging must be one of {', '.join(SWIN_MERGING)}, got {merging!r}")
        if merging == "published":
            from tumorsweep.models.swin import PublishedPatchMerging

            downsample = PublishedPatchMerging
        else:
            downsample = "merging"
        return SwinUNETR(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=feature_size,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            dropout_path_rate=dropout_path_rate,
            use_checkpoint=use_checkpoint,
            use_v2=use_v2,
            spatial_dims=3,
            downsample=downsample,
        )

    return factory


def _nnunet(
    in_channels: int = 1,
    out_channels: int = 3,
    filters: Sequence[int] = (32, 64, 128, 256, 320),
    kernel_size: int = 3,
    strides: Sequence[int] = (1, 2, 2, 2, 2),
    norm_name: str | tuple = "instance",
    res_block: bool = False,
    dropout: float | None = None,
) -> torch.nn.Module:
    """MONAI DynUNet as DiffTumor builds it (kernels and strides of its `get_kernels_strides`
    for 96^3 patches, MONAI's default filters, `norm_name="instance"`: InstanceNorm3d without
    affine parameters); no deep supervision, so train and eval return one tensor. Pass
    `norm_name=("instance", {"affine": True})` for MONAI's default (affine) norm."""
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[kernel_size] * len(strides),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=norm_name,
        res_block=res_block,
        dropout=dropout,
        deep_supervision=False,
    )


def _segmamba_factory(version: str) -> Callable[..., torch.nn.Module]:
    def factory(**kwargs: object) -> torch.nn.Module:
        from tumorsweep.models.segmamba import SegMamba

        return SegMamba(version=version, **kwargs)

    return factory


@dataclass(frozen=True)
class Backbone:
    """One registry entry: how to build it and what the rest of tumorsweep needs to know."""

    factory: Callable[..., torch.nn.Module]
    display: str  # column label in the published tables' style
    pretrained_encoder: bool = False  # accepts a self-supervised Swin encoder (model_swinvit.pt)
    takes_patch_size: bool = False  # the constructor needs the training patch size
    source: str = ""  # the public definition this entry reproduces (repository: file)


_HU = "MrGiovanni/SyntheticTumors"
_SWIN_SOURCE = (
    _HU + ": networks/swin3d_unetrv2.py + networks/swin_transformer_3d.py (main.py, "
    "--model_name swin_unetrv2 --swin_type {}), MONAI 0.9.0"
)
_SEGMAMBA_SOURCE = "ge-xing/SegMamba: model_segmamba/segmamba.py ({}), our own CPU scan"

REGISTRY: dict[str, Backbone] = {
    "unet": Backbone(
        _unet,
        "UNET",
        source=f"{_HU}: main.py (--model_name unet): monai.networks.nets.UNet, MONAI 0.9.0",
    ),
    "swin_unetr_base": Backbone(
        _swin_factory(48),
        "Swin-UNETR-Base",
        pretrained_encoder=True,
        source=_SWIN_SOURCE.format("base"),
    ),
    "swin_unetr_small": Backbone(
        _swin_factory(24),
        "Swin-UNETR-Small",
        pretrained_encoder=True,
        source=_SWIN_SOURCE.format("small"),
    ),
    "swin_unetr_tiny": Backbone(
        _swin_factory(12),
        "Swin-UNETR-Tiny",
        pretrained_encoder=True,
        source=_SWIN_SOURCE.format("tiny"),
    ),
    "nnunet": Backbone(
        _nnunet,
        "nnUNet",
        source="MrGiovanni/DiffTumor: STEP3.SegmentationModel/main.py (--model_name nnunet) + "
        "dynunet_pipeline/create_network.py: monai.networks.nets.DynUNet, MONAI 0.9.0",
    ),
    "segmamba_v0": Backbone(
        _segmamba_factory("v0"),
        "SegMambaV0",
        takes_patch_size=True,
        source=_SEGMAMBA_SOURCE.format("January 2024"),
    ),
    "segmamba_v1": Backbone(
        _segmamba_factory("v1"),
        "SegMambaV1",
        takes_patch_size=True,
        source=_SEGMAMBA_SOURCE.format("March 2024"),
    ),
    "segmamba_tom": Backbone(
        _segmamba_factory("tom"),
        "SegMambaToM",
        takes_patch_size=True,
        source=_SEGMAMBA_SOURCE.format("current, with the inter-slice scan"),
    ),
}

BACKBONES: tuple[str, ...] = tuple(REGISTRY)


def backbone(name: str) -> Backbone:
    """The registry entry of `name`, or an error listing the valid names."""
    _check_name(name)
    return REGISTRY[name]


def build_options(
    name: str, options: Mapping[str, object], patch_size: Sequence[int]
) -> dict[str, object]:
    """The keyword overrides backbone `name` is built with for a training patch size: the
    given `options`, plus `patch_size` for a backbone whose constructor takes it (e.g.
    SegMamba's inter-slice scan depths) unless the options set it.

    Args:
        name: a registry name (`BACKBONES`).
        options: the config's `model.options`.
        patch_size: the training patch, voxels (`schedule.patch_size`).
    """
    built = dict(options)
    if backbone(name).takes_patch_size:
        built.setdefault("patch_size", tuple(patch_size))
    return built


def _check_name(name: str) -> None:
    if name not in REGISTRY:
        raise TumorsweepError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")


def _allowed_overrides(name: str) -> tuple[str, ...]:
    factory = REGISTRY[name].factory
    if REGISTRY[name].takes_patch_size:  # SegMamba: the class's own keyword arguments
        from tumorsweep.models.segmamba import SegMamba

        params = inspect.signature(SegMamba.__init__).parameters
        return tuple(p for p in params if p not in ("self", "version"))
    return tuple(inspect.signature(factory).parameters)


def build(name: str, pretrained: str | Path | None = None, **overrides: object) -> torch.nn.Module:
    """Build backbone `name` (1 input channel, 3 classes by default) with keyword overrides.

    `pretrained` is a local self-supervised encoder file for the Swin-UNETR backbones.
    """
    _check_name(name)
    allowed = _allowed_overrides(name)
    unknown = [key for key in overrides if key not in allowed]
    if unknown:
        raise TumorsweepError(
            f"unknown override {unknown[0]!r} for backbone {name!r}; allowed: {', '.join(allowed)}"
        )
    if pretrained is not None and not REGISTRY[name].pretrained_encoder:
        with_encoder = ", ".join(n for n, b in REGISTRY.items() if b.pretrained_encoder)
        raise TumorsweepError(
            f"pretrained weights ({pretrained}) apply to {with_encoder} only, not {name!r}"
        )
    try:
        model = REGISTRY[name].factory(**overrides)
    except (TypeError, ValueError, AssertionError) as err:
        raise TumorsweepError(f"backbone {name!r} rejects overrides {overrides}: {err}") from err
    if pretrained is not None:
        load_pretrained_encoder(model, pretrained)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise TumorsweepError(f"pretrained encoder file not found: {path}")
    from tumorsweep.weights import load_weights_only

    payload = load_weights_only(path, "pretrained encoder file")
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise TumorsweepError(f"pretrained encoder file {path} does not hold a state dict")
    return payload


def _encoder_key(file_key: str) -> str:
    """Map a `model_swinvit.pt` key to MONAI's SwinViT key (the same mapping `load_from` uses)."""
    key = file_key.removeprefix("module.")
    return key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def load_pretrained_encoder(model: torch.nn.Module, path: str | Path) -> tuple[int, int]:
    """Load self-supervised Swin encoder weights (`model_swinvit.pt`) into a Swin-UNETR.

    Returns (matched, total): encoder tensors filled from the file and encoder tensors in the
    model. A tensor matches when its name and shape agree; the rest keep their initialisation.
    """
    from monai.networks.nets import SwinUNETR

    path = Path(path)
    if not isinstance(model, SwinUNETR):
        raise TumorsweepError(f"pretrained encoder {path} needs a Swin-UNETR backbone")
    feature_size = model.swinViT.patch_embed.embed_dim
    if feature_size != SWIN_PRETRAINED_FEATURE_SIZE:
        raise TumorsweepError(
            f"pretrained encoder {path} fits feature size {SWIN_PRETRAINED_FEATURE_SIZE} "
            f"(swin_unetr_base) only, model has feature size {feature_size}"
        )
    own = model.swinViT.state_dict()
    loaded = _read_state_dict(path)
    matched = {
        _encoder_key(k): v
        for k, v in loaded.items()
        if _encoder_key(k) in own and own[_encoder_key(k)].shape == v.shape
    }
    if not matched:
        raise TumorsweepError(
            f"pretrained encoder file {path} has no tensor matching the Swin-UNETR encoder"
        )
    model.swinViT.load_state_dict(matched, strict=False)
    log.info("loaded %d of %d Swin encoder tensors from %s", len(matched), len(own), path)
    return len(matched), len(own)
