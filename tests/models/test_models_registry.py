"""Registry: names, output shapes, overrides, patch-size checks and pretrained Swin loading."""

import pytest
import torch

from tumorsweep.errors import TumorsweepError
from tumorsweep.models import (
    BACKBONES,
    REGISTRY,
    build,
    count_parameters,
    load_pretrained_encoder,
)

CLASSIC = ["unet", "swin_unetr_base", "swin_unetr_small", "swin_unetr_tiny", "nnunet"]


def test_registry_entries_carry_their_facts():
    assert [REGISTRY[n].display for n in ("unet", "nnunet", "segmamba_tom")] == [
        "UNET",
        "nnUNet",
        "SegMambaToM",
    ]
    assert {n for n, b in REGISTRY.items() if b.pretrained_encoder} == {
        "swin_unetr_base",
        "swin_unetr_small",
        "swin_unetr_tiny",
    }
    assert {n for n, b in REGISTRY.items() if b.takes_patch_size} == {
        "segmamba_v0",
        "segmamba_v1",
        "segmamba_tom",
    }


def test_every_entry_cites_its_public_source():
    for name, entry in REGISTRY.items():
        assert "/" in entry.source and ".py" in entry.source, name
    assert "swin_transformer_3d.py" in REGISTRY["swin_unetr_small"].source
    assert "DiffTumor" in REGISTRY["nnunet"].source


def test_registry_lists_every_backbone():
    assert BACKBONES == (
        "unet",
        "swin_unetr_base",
        "swin_unetr_small",
        "swin_unetr_tiny",
        "nnunet",
        "segmamba_v0",
        "segmamba_v1",
        "segmamba_tom",
    )


@pytest.mark.parametrize("name", CLASSIC)
def test_output_has_three_classes_at_input_size(name):
    if name.startswith("swin"):
        pytest.importorskip("einops", reason="MONAI SwinUNETR.forward needs einops")
    torch.manual_seed(0)
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 64, 32))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 3, 32, 64, 32)
    assert torch.isfinite(out).all()


def test_nnunet_returns_one_tensor_in_train_mode():
    model = build("nnunet", filters=(8, 16, 32, 64, 80)).train()
    out = model(torch.randn(2, 1, 32, 32, 32))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3, 32, 32, 32)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unet", 4_807_482),
        ("swin_unetr_base", 62_186_757),
        ("swin_unetr_small", 15_703_029),
        ("swin_unetr_tiny", 4_078_077),
        ("nnunet", 16_538_563),  # instance norm without affine (DiffTumor main.py), 5,120 fewer
    ],
)
def test_parameter_counts_match_protocol(name, expected):
    """Published sizes (UNet 4.8 M, Swin-UNETR B/S/T 62.2/15.7/4.1 M, DynUNet 16.5 M with
    DiffTumor's non-affine instance norm); exact counts pin the architecture."""
    assert count_parameters(build(name)) == expected


def test_override_changes_the_model():
    small = build("unet", channels=(4, 8, 16, 32, 64))
    assert count_parameters(small) < count_parameters(build("unet")) / 10


def test_unknown_name_lists_valid_ones():
    with pytest.raises(TumorsweepError, match="unknown backbone 'resnet'.*unet.*segmamba_tom"):
        build("resnet")


def test_unknown_override_is_named():
    with pytest.raises(TumorsweepError, match="'chanels'"):
        build("unet", chanels=(1, 2))


def test_pretrained_rejected_for_non_swin(tmp_path):
    with pytest.raises(TumorsweepError, match="unet"):
        build("unet", pretrained=str(tmp_path / "w.pt"))


def _save_encoder_like_model_swinvit(model, path):
    """Write the encoder in the layout of the public `model_swinvit.pt` (`module.` + fc1/fc2)."""
    state = {
        "module." + k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
        for k, v in model.swinViT.state_dict().items()
    }
    state["module.contrastive_head.weight"] = torch.zeros(4, 4)
    torch.save({"state_dict": state}, path)


def test_pretrained_encoder_loads_every_encoder_tensor(tmp_path):
    torch.manual_seed(1)
    source = build("swin_unetr_base")
    path = tmp_path / "model_swinvit.pt"
    _save_encoder_like_model_swinvit(source, path)
    torch.manual_seed(2)
    target = build("swin_unetr_base")
    qkv = "layers3.0.blocks.1.attn.qkv.weight"
    assert not torch.equal(target.swinViT.state_dict()[qkv], source.swinViT.state_dict()[qkv])
    assert load_pretrained_encoder(target, path) == (126, 126)
    for key, value in source.swinViT.state_dict().items():
        assert torch.equal(target.swinViT.state_dict()[key], value), key
    # MONAI's own loader accepts the same file, so the real `model_swinvit.pt` layout is right.
    build("swin_unetr_base").load_from(torch.load(path, weights_only=True))


def test_build_with_pretrained_file(tmp_path):
    path = tmp_path / "model_swinvit.pt"
    _save_encoder_like_model_swinvit(build("swin_unetr_base"), path)
    model = build("swin_unetr_base", pretrained=str(path))
    assert isinstance(model, torch.nn.Module)


def test_missing_pretrained_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "model_swinvit.pt"
    with pytest.raises(TumorsweepError, match="not found.*model_swinvit.pt"):
        build("swin_unetr_base", pretrained=str(path))


def test_wrong_pretrained_file_names_path(tmp_path):
    unrelated = tmp_path / "unet.pt"
    torch.save(build("unet").state_dict(), unrelated)
    with pytest.raises(TumorsweepError, match="unet.pt has no tensor matching"):
        load_pretrained_encoder(build("swin_unetr_base"), unrelated)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(TumorsweepError, match="notes.pt"):
        load_pretrained_encoder(build("swin_unetr_base"), text)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(TumorsweepError, match="list.pt does not hold a state dict"):
        load_pretrained_encoder(build("swin_unetr_base"), listing)


def test_pretrained_needs_feature_size_48(tmp_path):
    path = tmp_path / "model_swinvit.pt"
    _save_encoder_like_model_swinvit(build("swin_unetr_base"), path)
    with pytest.raises(TumorsweepError, match="feature size 48.*model has feature size 12"):
        build("swin_unetr_tiny", pretrained=str(path))
