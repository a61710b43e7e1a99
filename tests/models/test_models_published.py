"""The registry builds the published networks: same weights and input as the pinned library's
(MONAI 0.9.0 in the side environment, tests/oracles/networks.py) give the same outputs, and the
publishers' checkpoint files load weights-only."""

import json

import numpy as np
import pytest
import torch

from tumorsweep.errors import TumorsweepError
from tumorsweep.models import build
from tumorsweep.models.checkpoints import match_keys, read_state_dict
from tumorsweep.models.swin import PUBLISHED_CORNERS, PublishedPatchMerging
from tumorsweep.predict import read_weights

PUBLISHED = ["unet", "swin_unetr_tiny", "swin_unetr_small", "swin_unetr_base", "nnunet"]
SIZE = (64, 64, 64)  # divisible by 32, as Swin-UNETR needs


@pytest.fixture(scope="module")
def oracle(monai09, tmp_path_factory):
    """One side-environment run: each published network with random weights saved like the
    publishers' save_checkpoint, its output on one input, and the output of MONAI 0.9's
    Swin-UNETR given our Swin-UNETR-Tiny built with MONAI 1.6's merging instead."""
    root = tmp_path_factory.mktemp("published")
    x = torch.randn(1, 1, *SIZE, generator=torch.Generator().manual_seed(0))
    torch.save(x, root / "input.pt")
    jobs = [
        {
            "mode": "publish",
            "name": name,
            "seed": 10 + i,
            "input": str(root / "input.pt"),
            "checkpoint": str(root / f"{name}.pt"),
            "output": str(root / f"{name}_out.pt"),
            "best_acc_dtype": "float64" if name == "unet" else "float32",  # numpy 1.23 both
        }
        for i, name in enumerate(PUBLISHED)
    ]
    torch.manual_seed(5)
    ours_monai16 = build("swin_unetr_tiny", merging="monai16").eval()
    torch.save(ours_monai16.state_dict(), root / "monai16.pt")
    jobs.append(
        {
            "mode": "forward",
            "name": "swin_unetr_tiny",
            "weights": str(root / "monai16.pt"),
            "input": str(root / "input.pt"),
            "output": str(root / "monai16_out.pt"),
        }
    )
    (root / "jobs.json").write_text(json.dumps(jobs))
    assert monai09.run("networks.py", root / "jobs.json").strip() == "ok"
    return {"root": root, "input": x, "monai16": ours_monai16}


def _forward(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("name", PUBLISHED)
def test_registry_network_equals_the_published_one(oracle, name):
    """The publishers' checkpoint (numpy best_acc, optimizer and scheduler state, their key
    names) loads into build(name) through the production reader, and the outputs agree."""
    root = oracle["root"]
    state = read_weights(root / f"{name}.pt")
    model = build(name)
    model.load_state_dict(match_keys(state, model), strict=True)
    expected = torch.load(root / f"{name}_out.pt", weights_only=True)
    ours = _forward(model, oracle["input"])
    assert ours.shape == (1, 3, *SIZE)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_monai16_merging_is_another_function(oracle):
    """Negative control: the same weights with MONAI 1.6's patch merging do not reproduce the
    pinned library, so the comparison above can tell the two apart."""
    expected = torch.load(oracle["root"] / "monai16_out.pt", weights_only=True)
    ours = _forward(oracle["monai16"], oracle["input"])
    assert (ours - expected).abs().max() > 1e-2
    published = build("swin_unetr_tiny")
    published.load_state_dict(oracle["monai16"].state_dict())
    torch.testing.assert_close(_forward(published, oracle["input"]), expected, atol=1e-5, rtol=0)


def test_published_swin_keys_are_mapped(oracle):
    """fc1/fc2 become linear1/linear2 and the unused final norm is dropped; nothing else."""
    state = read_state_dict(oracle["root"] / "swin_unetr_base.pt")
    assert "swinViT.norm.weight" in state
    assert "swinViT.layers2.0.blocks.1.mlp.fc2.bias" in state
    model = build("swin_unetr_base")
    mapped = match_keys(state, model)
    assert set(mapped) == set(model.state_dict())
    assert len(state) - len(mapped) == 2
    assert torch.equal(
        mapped["swinViT.layers2.0.blocks.1.mlp.linear2.bias"],
        state["swinViT.layers2.0.blocks.1.mlp.fc2.bias"],
    )


def test_unet_state_dict_passes_unchanged():
    model = build("unet", channels=(4, 8, 16, 32, 64))
    state = model.state_dict()
    assert match_keys(state, model) is state


def test_published_corner_order_repeats_two_corners():
    """The order the public code concatenates: (0,1,0) and (0,0,1) twice, two corners never."""
    corners = list(PUBLISHED_CORNERS)
    assert len(corners) == 8
    assert {c for c in corners if corners.count(c) == 2} == {(0, 1, 0), (0, 0, 1)}
    every = {(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)}
    assert every - set(corners) == {(1, 1, 0), (0, 1, 1)}
    merging = PublishedPatchMerging(dim=1)
    x = torch.arange(8.0).reshape(1, 2, 2, 2, 1)  # value = 4d + 2h + w
    with torch.no_grad():
        merging.norm = torch.nn.Identity()
        merging.reduction = torch.nn.Identity()
        taken = merging(x).flatten().tolist()
    assert taken == [4 * d + 2 * h + w for d, h, w in corners]


def test_nnunet_instance_norm_has_no_affine_parameters():
    model = build("nnunet")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and not any(m.affine for m in norms)
    affine = build("nnunet", norm_name=("instance", {"affine": True}))
    extra = sum(p.numel() for p in affine.parameters()) - sum(p.numel() for p in model.parameters())
    assert extra == 2 * sum(m.num_features for m in norms)


def test_unknown_merging_is_refused():
    with pytest.raises(TumorsweepError, match="merging must be one of published, monai16"):
        build("swin_unetr_tiny", merging="v2")


def _publisher_file(path, best_acc, **extra):
    """A file as SyntheticTumors/DiffTumor `monai_trainer.save_checkpoint` writes it."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4000)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler.step()
    payload = {
        "epoch": 3,
        "best_acc": best_acc,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **extra,
    }
    torch.save(payload, path)
    return model.state_dict()


@pytest.mark.parametrize("best_acc", [np.float32(0.75), np.float64(0.75)])
def test_publisher_file_written_with_numpy2_loads(tmp_path, best_acc):
    saved = _publisher_file(tmp_path / "model.pt", best_acc)
    loaded = read_weights(tmp_path / "model.pt")
    assert set(loaded) == {"weight", "bias"}
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


class Payload:
    """An object a weights-only load must not construct."""


@pytest.mark.parametrize(
    ("extra", "type_name"),
    [
        ({"args": Payload()}, "Payload"),
        ({"epoch": np.int64(3)}, "numpy.dtypes.Int64DType"),
        ({"val_acc": np.zeros(2)}, "numpy._core.multiarray._reconstruct"),
    ],
)
def test_other_pickled_objects_are_refused_in_one_line(tmp_path, extra, type_name):
    path = tmp_path / "model.pt"
    _publisher_file(path, np.float32(0.5), **extra)
    with pytest.raises(TumorsweepError) as err:
        read_weights(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: holds pickled code or Python objects")
    assert type_name in message
    assert "weights_only=False" not in message
