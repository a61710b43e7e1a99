"""DiffTumor synthesis on the training batch (tumorsweep.generative.batch, tumorsweep.train):
where the tumour is made, the per-epoch patch fractions every style logs, and the healthy-crop
selection of Chen et al.'s STEP3 (`RandCropByPosNegLabeld_select`).

The generator here has untrained weights (built from the demo config, saved as a folder): these
tests are about where tumours go and how often, not how they look.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from tumorsweep import tracking
from tumorsweep.config import make_config
from tumorsweep.data.cases import REAL_TUMOR_KEY, CaseLists, resolve_cases
from tumorsweep.data.sampling import SelectOrganCropd
from tumorsweep.generative.config import generator_config
from tumorsweep.generative.models import MODEL_NAMES, build_model
from tumorsweep.generative.store import save_generator
from tumorsweep.session import LocalSession
from tumorsweep.tracking import NullLogger
from tumorsweep.train import build, train_epoch


@pytest.fixture(scope="module")
def cases(phantom_dir: Path) -> CaseLists:
    return resolve_cases(make_config("demo", {"data.root": str(phantom_dir)}).data)


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 16^3 generator at the demo's 2 mm, saved as a generator folder."""
    torch.manual_seed(0)
    config = generator_config("demo", (2.0, 2.0, 2.0), {"patch_size": 16})
    weights = {name: build_model(config, name).state_dict() for name in MODEL_NAMES}
    return save_generator(tmp_path_factory.mktemp("gen") / "gen", config, weights, 1.0, [])


def _difftumor(generator: Path, **extra) -> dict:
    return {
        "synthesis.style": "difftumor",
        "synthesis.generator": str(generator),
        "synthesis.difftumor.ddim_steps": 2,
        "data.loader_workers": 0,
        **extra,
    }


class _SeenLabels(torch.nn.Module):
    """The trial's loss, recording every label batch it is given (what the network learns)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.labels = inner, []

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        self.labels.append(label.detach().cpu().clone())
        return self.inner(logits, label)


def test_half_the_patches_get_a_tumour_and_each_lies_in_its_patch(
    cases: CaseLists, generator: Path
) -> None:
    """prob 0.5 on healthy 64^3 crops (the whole 2 mm test phantom: each holds liver): the
    logged share of patches with a synthetic tumour is 0.5 within its binomial sampling error,
    and equals the share of the label batches the loss saw that hold tumour voxels."""
    torch.manual_seed(0)
    cfg = make_config(
        "demo",
        _difftumor(
            generator,
            **{
                "synthesis.difftumor.prob": 0.5,
                "schedule.patch_size": (64, 64, 64),
                "schedule.batch_size": 8,
                "schedule.crops_per_volume": 4,
                "schedule.epochs": 12,
            },
        ),
    )
    trainer = build(cfg, cases, LocalSession(None), NullLogger())
    seen = trainer.loss_fn = _SeenLabels(trainer.loss_fn)
    logged = [train_epoch(trainer, epoch) for epoch in range(12)]
    labels = torch.cat(seen.labels)
    patches = len(labels)
    with_tumour = (labels == 2).flatten(1).any(dim=1)
    per_epoch = patches // 12
    synthetic = [row[tracking.PATCH_SYNTHETIC_FRACTION] for row in logged]
    tumour = [row[tracking.PATCH_TUMOR_FRACTION] for row in logged]
    assert synthetic == tumour  # healthy cases only: every tumour voxel is synthetic
    for epoch, value in enumerate(synthetic):
        chunk = with_tumour[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert value == pytest.approx(float(chunk.float().mean()))
    count = int(with_tumour.sum())
    assert patches >= 150
    assert binomtest(count, patches, 0.5).pvalue > 1e-3, (count, patches)
    # the tumour is inside the patch: its voxels lie on the patch's liver (label 1 around it)
    for label in labels[with_tumour]:
        tumour_voxels = label[0] == 2
        assert tumour_voxels.sum() > 0 and (label[0] >= 1).sum() > tumour_voxels.sum()


def test_batch_synthesis_changes_only_healthy_patches_near_the_mask(
    cases: CaseLists, generator: Path
) -> None:
    """Real-tumour patches and patches without enough liver pass unchanged; in a synthesised
    patch, voxels away from the tumour keep their values bit for bit and label 2 sits on the
    patch's liver."""
    torch.manual_seed(0)
    cfg = make_config(
        "demo",
        _difftumor(
            generator, **{"synthesis.difftumor.prob": 1.0, "schedule.patch_size": (64, 64, 64)}
        ),  # fmt: skip
    )
    trainer = build(cfg, cases, LocalSession(None), NullLogger())
    batch = next(iter(trainer.loader))
    image, label = batch["image"], batch["label"]
    healthy = torch.tensor([True] * (len(image) - 1) + [False])
    rng = np.random.default_rng(0)
    out_image, out_label, received = trainer.synthesis(image, label, healthy, rng)
    assert not received[-1] and torch.equal(out_image[-1], image[-1])
    assert torch.equal(out_label[-1], label[-1])
    assert received[:-1].any()
    for i in torch.nonzero(received).flatten().tolist():
        tumour = out_label[i, 0] == 2
        assert tumour.any() and bool((label[i, 0][tumour] == 1).all())
        assert torch.equal(out_label[i, 0][~tumour], label[i, 0][~tumour])
        # blur sigma <= blur.high (2 voxels in the demo): beyond 4 sigma of the mask, untouched
        far = ~torch.from_numpy(_dilate(tumour.numpy(), 9))
        assert torch.equal(out_image[i, 0][far], image[i, 0][far])
        assert not torch.equal(out_image[i, 0][tumour], image[i, 0][tumour])


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, np.ones((3, 3, 3), bool), iterations=iterations)


def test_every_style_logs_patch_fractions(cases: CaseLists) -> None:
    """Hu et al.'s volume synthesis (prob 1): synthetic patches are those holding tumour; the
    real-tumour control: patches hold real tumour, none synthetic."""
    small = {"schedule.patch_size": (32, 32, 32), "schedule.batch_size": 4}
    torch.manual_seed(0)
    hu = build(make_config("demo", {**small, "synthesis.prob": 1.0}), cases,
               LocalSession(None), NullLogger())  # fmt: skip
    row = train_epoch(hu, 0)
    assert 0 < row[tracking.PATCH_SYNTHETIC_FRACTION] == row[tracking.PATCH_TUMOR_FRACTION]
    real = build(make_config("demo", {**small, "data.real_fraction": 1.0}), cases,
                 LocalSession(None), NullLogger())  # fmt: skip
    row = train_epoch(real, 0)
    assert row[tracking.PATCH_TUMOR_FRACTION] > 0 and row[tracking.PATCH_SYNTHETIC_FRACTION] == 0


class _Crops:
    """A crop transform that returns patches with given organ voxel counts, one per call."""

    def __init__(self, counts: list[int]) -> None:
        self.counts, self.calls = list(counts), 0

    def set_random_state(self, seed=None, state=None):
        return self

    def __call__(self, data: dict) -> list[dict]:
        organ = self.counts[self.calls]
        self.calls += 1
        label = torch.zeros(1, 100, 100, 100, dtype=torch.uint8)
        label.view(-1)[:organ] = 1
        return [{"image": label.float(), "label": label}]


def _sphere(radius: float) -> float:
    return 4 / 3 * np.pi * radius**3


@pytest.mark.parametrize(
    ("counts", "kept_at"),
    [
        # draw 1 holds more than a 30-voxel-radius sphere: kept at once
        ([int(_sphere(30)) + 1], 1),
        # draws 1-5 need R 30; draw 6 needs only R 25 (public: `flag > 5`)
        ([int(_sphere(25)) + 1] * 6, 6),
        # draws 26-30 need R 5; below that every draw fails and the 31st is kept
        ([int(_sphere(10))] * 25 + [int(_sphere(5)) + 1], 26),
        ([0] * 31, 31),
    ],
)
def test_healthy_crops_are_redrawn_as_chen_et_al_relax_them(counts, kept_at) -> None:
    """Chen et al.'s STEP3 main.py: a healthy crop is kept once it holds more organ voxels than
    (4/3) pi R^3, R = fg_thresh (30 for liver) for draws 1-5, 25 for 6-10, ... 5 for 26-30;
    the 31st draw is kept whatever it holds. A real-tumour sample is cropped once."""
    crops = _Crops(counts + [0] * 40)
    select = SelectOrganCropd(crops, 30.0, (1.0, 1.0, 1.0))
    select({"image": None, "label": None})
    assert crops.calls == kept_at == select.draws
    real = _Crops([0] * 40)
    SelectOrganCropd(real, 30.0, (1.0, 1.0, 1.0))({REAL_TUMOR_KEY: True})
    assert real.calls == 1


def test_crop_selection_in_the_loader_fills_healthy_crops_with_liver(cases: CaseLists) -> None:
    """With the published 30 mm threshold, healthy training crops hold far more liver than
    plain 1:1 crops do (half of which are centred off the liver)."""
    small = {"schedule.patch_size": (32, 32, 32), "schedule.batch_size": 4,
             "synthesis.prob": 0.0}  # fmt: skip

    def liver_share(extra: dict) -> float:
        torch.manual_seed(0)
        trainer = build(make_config("demo", {**small, **extra}), cases, LocalSession(None),
                        NullLogger())  # fmt: skip
        labels = torch.cat([b["label"] for _ in range(3) for b in trainer.loader])
        return float((labels >= 1).flatten(1).float().mean(1).mean())

    assert liver_share({"data.healthy_crop_organ_mm": 30.0}) > 1.2 * liver_share({})


def test_semi_supervised_arm_trains_on_both_lists_and_synthesises_on_healthy_only(
    cases: CaseLists, generator: Path
) -> None:
    """data.semi_supervised: every real-tumour and healthy training case once an epoch (no mix
    sampler), each patch flagged; real-tumour patches keep their own labels and image."""
    torch.manual_seed(0)
    cfg = make_config(
        "demo",
        _difftumor(
            generator,
            **{
                "synthesis.difftumor.prob": 1.0,
                "data.semi_supervised": True,
                "schedule.patch_size": (64, 64, 64),
            },
        ),  # fmt: skip
    )
    trainer = build(cfg, cases, LocalSession(None), NullLogger())
    assert len(trainer.loader.dataset) == len(cases.train) + len(cases.train_tumor)
    batches = list(trainer.loader)
    flags = torch.cat([b[REAL_TUMOR_KEY] for b in batches])
    assert int(flags.sum()) == len(cases.train_tumor) * cfg.schedule.crops_per_volume
    rng = np.random.default_rng(1)
    for batch in batches:
        real = batch[REAL_TUMOR_KEY]
        image, label, received = trainer.synthesis(batch["image"], batch["label"], ~real, rng)
        assert not received[real].any()
        assert torch.equal(image[real], batch["image"][real])
        assert torch.equal(label[real], batch["label"][real])
        assert received[~real].all()  # prob 1, 64^3 crops hold liver
    row = train_epoch(trainer, 0)
    assert row[tracking.PATCH_TUMOR_FRACTION] > row[tracking.PATCH_SYNTHETIC_FRACTION] > 0


def test_an_early_event_draws_one_blob_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public get_fixed_geo: an early event is 1-3 blobs all tiny or all small (one type
    drawn per event, even odds)."""
    from tumorsweep.generative import synthesis as module

    kinds: list[str] = []
    blob = module._blob

    def recorded(kind, centre, config, rng):
        kinds.append(kind)
        return blob(kind, centre, config, rng)

    monkeypatch.setattr(module, "_blob", recorded)
    liver = np.zeros((40, 40, 40), bool)
    liver[5:35, 5:35, 5:35] = True
    config = make_config("demo").synthesis
    rng = np.random.default_rng(0)
    events = []
    for _ in range(200):
        kinds.clear()
        module.draw_mask(liver, "early", config, rng)
        events.append(list(kinds))
    assert all(len(set(e)) == 1 and 1 <= len(e) <= 3 for e in events)
    tiny = sum(e[0] == "tiny" for e in events)
    assert binomtest(tiny, len(events), 0.5).pvalue > 1e-3
    assert {len(e) for e in events} == {1, 2, 3}


def test_the_mask_reaches_the_latent_by_nearest_interpolation() -> None:
    """Chen et al.: `F.interpolate(mask, size=latent)` (torch's default, nearest): latent voxel
    i takes mask voxel 4 i; the mask arrives as -1/1."""
    from tumorsweep.generative.config import generator_config
    from tumorsweep.generative.models import build_autoencoder, condition

    config = generator_config("demo", (2.0, 2.0, 2.0))
    autoencoder = build_autoencoder(config).eval()
    factor = config.latent_factor
    image = torch.zeros(1, 1, 32, 32, 32)
    mask = torch.zeros_like(image)
    mask[0, 0, 4, 8, 12] = 1  # a sampled voxel: latent (1, 2, 3)
    mask[0, 0, 5:8, 5:8, 5:8] = 1  # 27 voxels between samples: absent from the condition
    with torch.no_grad():
        grid = condition(autoencoder, image, mask, 1.0, factor)[0, -1]
    assert factor == 4 and grid.shape == (8, 8, 8)
    expected = -torch.ones(8, 8, 8)
    expected[1, 2, 3] = 1
    assert torch.equal(grid, expected)


class _ConstantGenerator:
    """Fills every patch with one HU value: what the paste does is all that is left to see."""

    def __init__(self, size: int, hu: float) -> None:
        self.config = generator_config("demo", (2.0, 2.0, 2.0), {"patch_size": size})
        self.device = torch.device("cpu")
        self.hu = hu

    def inpaint(self, image_hu: torch.Tensor, mask: torch.Tensor, kind: str, **_) -> torch.Tensor:
        return torch.full_like(image_hu, self.hu)


def test_the_paste_blurs_the_mask_in_reflect_mode() -> None:
    """Chen et al. blur the mask with scipy's `gaussian_filter` default (mode 'reflect'): a
    mask on the window's edge keeps its full weight there (constant mode would fade it)."""
    from scipy.ndimage import gaussian_filter

    from tumorsweep.generative.batch import BatchDiffTumor, _Event

    sigma, size, window = 1.5, 16, (-175.0, 250.0)
    synthesis = make_config(
        "demo",
        {
            "synthesis.style": "difftumor",
            "synthesis.generator": "unused",
            "synthesis.difftumor.blur": [sigma, sigma],
        },
    ).synthesis
    paste = BatchDiffTumor(_ConstantGenerator(size, 250.0), synthesis, window)
    image = torch.full((1, 1, size, size, size), 0.25)
    label = torch.ones_like(image)
    mask = np.zeros((size,) * 3, bool)
    mask[:4, 5:10, 5:10] = True  # on the window's first face
    place = (slice(0, size),) * 3
    paste._fill(image, label, [_Event(0, place, "late", mask)], "late", np.random.default_rng(0))
    for mode, equal in (("reflect", True), ("constant", False)):
        weight = torch.from_numpy(gaussian_filter(mask.astype(np.float32), sigma, mode=mode))
        expected = (1 - weight) * 0.25 + weight * 1.0
        assert torch.allclose(image[0, 0], expected, atol=1e-6) is equal, mode
    assert bool((label[0, 0][torch.from_numpy(mask)] == 2).all())


class _Params(NullLogger):
    """Keeps the params a trial logs."""

    records = True

    def __init__(self) -> None:
        self.params: dict = {}

    def log_params(self, params) -> None:
        self.params.update(params)


def test_a_trial_on_released_weights_logs_it(cases: CaseLists, generator: Path) -> None:
    """`generator.released` is logged exactly when the trial's generator is the publishers'
    (the report's note beside its column reads it)."""
    from tumorsweep.train import start_trial

    for released in (False, True):
        logger = _Params()
        trainer = build(
            make_config("demo", _difftumor(generator)), cases, LocalSession(None), logger
        )
        if released:
            trainer.synthesis.generator.released = True
        start_trial(trainer, preview=False)
        assert logger.params.get(tracking.GENERATOR_RELEASED_PARAM) is (True if released else None)


class _RecordingGenerator(_ConstantGenerator):
    """A constant fill that keeps every mask it is asked to fill (what reaches the denoiser)."""

    def __init__(self, size: int, hu: float) -> None:
        super().__init__(size, hu)
        self.masks: list[np.ndarray] = []

    def inpaint(self, image_hu: torch.Tensor, mask: torch.Tensor, kind: str, **_) -> torch.Tensor:
        self.masks.extend(m[0].numpy() > 0 for m in mask)
        return super().inpaint(image_hu, mask, kind)


def test_no_tumour_is_labelled_that_misses_the_latent_grid() -> None:
    """Issue 22: at the demo's 2 mm an early blob (semi-axes 1-5 voxels) can fall between the
    voxels the nearest interpolation samples (every 4th), so the denoiser's condition holds no
    tumour and the generator paints none, while the label said tumour. Such masks are redrawn;
    every mask that reaches the generator, and so every synthetic label, touches the grid."""
    from tumorsweep.generative.batch import BatchDiffTumor, reaches_latent
    from tumorsweep.generative.synthesis import draw_mask

    size, factor = 32, 4
    synthesis = make_config(
        "demo",
        {
            "synthesis.style": "difftumor",
            "synthesis.generator": "unused",
            "synthesis.difftumor.prob": 1.0,
            "synthesis.difftumor.early": 1.0,
            "synthesis.difftumor.medium": 0.0,
        },
    ).synthesis
    liver = np.zeros((size,) * 3, bool)
    liver[4:28, 4:28, 4:28] = True
    rng = np.random.default_rng(0)
    raw = [draw_mask(liver, "early", synthesis, rng) for _ in range(200)]
    missed = sum(not reaches_latent(m, factor) for m in raw if m.any())
    assert missed >= 10  # the demo's early sizes do miss the grid: the check below can fail
    generator = _RecordingGenerator(size, 0.0)
    step = BatchDiffTumor(generator, synthesis, (-175.0, 250.0))
    image = torch.full((8, 1, size, size, size), 0.5)
    label = torch.from_numpy(np.broadcast_to(liver, (8, 1, size, size, size)).astype(np.int64))
    received = 0
    for seed in range(6):
        _, new_label, got = step(image, label.clone(), None, np.random.default_rng(seed))
        received += int(got.sum())
        for k in np.flatnonzero(got.numpy()):
            tumour = new_label[k, 0].numpy() == 2
            assert reaches_latent(tumour, factor)
    assert received == 48  # redrawn, not dropped: the gate's share is unchanged
    assert len(generator.masks) == 48
    assert all(reaches_latent(m, factor) for m in generator.masks)


def test_a_generator_config_rule_is_refused_in_one_readable_line() -> None:
    from tumorsweep.errors import TumorsweepError

    with pytest.raises(TumorsweepError) as caught:
        generator_config("demo", (2.0, 2.0, 2.0), {"window": (250.0, -175.0)})
    assert str(caught.value) == (
        "generator config: window must be (low, high) with low < high, got (250.0, -175.0)"
    )
    with pytest.raises(TumorsweepError, match=r"^generator config: patch_size: Input should be"):
        generator_config("demo", (2.0, 2.0, 2.0), {"patch_size": "big"})
