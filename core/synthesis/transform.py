"""`TumorSynthesisd`: the synthesis as a MONAI dictionary transform for training pipelines.

It is the first random transform of a chain (a CacheDataset caches everything before it).
Randomness flows from MONAI's `self.R` (set per worker/rank by `set_random_state`) into one
`numpy.random.Generator` per call, so every worker draws different tumours reproducibly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_dst_type

from tumorsweep.data.edits import VolumeEdit
from tumorsweep.errors import TumorsweepError
from tumorsweep.synthesis.config import SynthesisConfig
from tumorsweep.synthesis.location import LocationModel
from tumorsweep.synthesis.synthesize import plan_tumors, synthesize_tumors_inplace

SYNTHETIC_KEY = "synthetic_tumor"  # set on every sample: whether this call added a tumour


def _as_numpy(value: Any, key: Hashable) -> tuple[np.ndarray, bool]:
    """The (X, Y, Z) array of a channel-first sample value and whether writing into it writes
    into the sample (a CPU tensor's or an array's own memory)."""
    if isinstance(value, torch.Tensor):
        shared = value.device.type == "cpu"
        array = value.detach().cpu().numpy()
    else:
        array = np.asarray(value)
        shared = array is value or np.shares_memory(array, value)
    if array.ndim != 4 or array.shape[0] != 1:
        raise TumorsweepError(
            f"{key}: expected a channel-first (1, X, Y, Z) array, got {array.shape}"
        )
    return array[0], shared and array.flags.writeable


class GatedSynthesisd(MapTransform, Randomizable):
    """What every synthesis transform shares: per call MONAI's `self.R` draws the gate (open
    with probability `probability()`) and the seed of the call's `numpy.random.Generator`, in
    that order, so a seeded loader gives the same tumours on any worker count; `synthesise`
    runs only when `config.enabled` and the gate is open."""

    config: SynthesisConfig
    _apply: bool = False
    _seed: int = 0

    def probability(self) -> float:
        """The chance a sample gets a synthesis event."""
        raise NotImplementedError

    def synthesise(self, d: dict[Hashable, Any]) -> dict[Hashable, Any]:
        """The event itself on a shallow copy of the sample, seeded by `self._seed`."""
        raise NotImplementedError

    def randomize(self, data: Any = None) -> None:
        """Draw the gate and the seed of this call's Generator from MONAI's `self.R`."""
        self._apply = self.R.rand() < self.probability()
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[SYNTHETIC_KEY] = False
        if not self.config.enabled:
            return d
        self.randomize()
        return self.synthesise(d) if self._apply else d


class TumorSynthesisd(GatedSynthesisd):
    """Add synthetic tumours to `image` (HU, 1 mm, channel first) and mark them 2 in `label`.

    Applied with probability `config.prob`, only when the label has no tumour (max <= 1)
    unless `config.healthy_only` is false (Pixel2Cancer fires on real-tumour CTs too);
    identity when `config.enabled` is False. Returns the same types (MetaTensor meta kept).

    `inplace=True` (default) writes into the sample's own arrays: no volume copies. That is
    safe in MONAI's Dataset and PersistentDataset (fresh arrays per item) and CacheDataset /
    SmartCacheDataset with their default `copy_cache=True` (the cached item is deep-copied
    before the first random transform). Use `inplace=False` with `copy_cache=False` or
    when the input sample must stay unchanged: then the image and label are copied once.
    A non-float image (or one not in CPU memory) is converted once either way.
    `plan_event` gives the same event as an edit without writing anything (the fast chain).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        config: SynthesisConfig | None = None,
        location_model: LocationModel | None = None,
        inplace: bool = True,
    ):
        super().__init__(keys)
        if len(self.keys) != 2:
            raise TumorsweepError(f"TumorSynthesisd keys: expected (image, label), got {self.keys}")
        self.config = config or SynthesisConfig()
        if self.config.style == "difftumor":
            raise TumorsweepError(
                "synthesis.style 'difftumor' needs its generator: use "
                "tumorsweep.generative.DiffTumorSynthesisd"
            )
        if location_model is None and self.config.location == "gmm":
            if self.config.location_model is None:
                raise TumorsweepError("synthesis.location_model: required when location is 'gmm'")
            location_model = LocationModel.load(self.config.location_model)
        self.location_model = location_model
        self.inplace = inplace

    def probability(self) -> float:
        return self.config.prob

    def synthesise(self, d: dict[Hashable, Any]) -> dict[Hashable, Any]:
        image_key, label_key = self.keys
        image, image_shared = _as_numpy(d[image_key], image_key)
        label, label_shared = _as_numpy(d[label_key], label_key)
        image_in_place = self.inplace and image_shared and image.dtype.kind == "f"
        label_in_place = self.inplace and label_shared
        if not image_in_place:
            image = np.array(image, dtype=np.float32 if image.dtype.kind != "f" else image.dtype)
        if not label_in_place:
            label = label.copy(order="K")
        rng = np.random.default_rng(self._seed)
        added = synthesize_tumors_inplace(
            image,
            label,
            self.config,
            rng,
            self.location_model,
            healthy_only=self.config.healthy_only,
        )
        d[SYNTHETIC_KEY] = bool(added)
        if added and not image_in_place:
            d[image_key] = convert_to_dst_type(image[None], d[image_key])[0]
        if added and not label_in_place:
            d[label_key] = convert_to_dst_type(label[None], d[label_key])[0]
        return d

    def plan_event(
        self, image: np.ndarray, label: np.ndarray, memo: dict | None = None
    ) -> tuple[VolumeEdit | None, dict[Hashable, Any]]:
        """The gate and one event as an edit of an (X, Y, Z) float HU `image` and its
        `label`, which are only read: the same draws, in the same order, and the same voxels
        as calling the transform on a sample holding them. For a cache that must not be
        written (`tumorsweep.data.sampling.SynthesiseLiverBoxd`); the edit reads the arrays
        again when it is written (a Hu blend is computed on the patch it is pasted into), so
        they must not change before that.

        Args:
            image: HU volume (read only).
            label: 0/1/2 labels of the same shape (read only).
            memo: a dict that belongs to this very label and outlives the call (a cached
                case's): the label's scan (liver box, value check) is kept there and read
                back on later events instead of scanning the label again.

        Returns:
            The edit (None when nothing changes) and the flags `__call__` sets on a sample.
        """
        flags: dict[Hashable, Any] = {SYNTHETIC_KEY: False}
        if not self.config.enabled:
            return None, flags
        self.randomize()
        if not self._apply:
            return None, flags
        rng = np.random.default_rng(self._seed)
        edit = plan_tumors(
            image, label, self.config, rng, self.location_model, self.config.healthy_only, memo
        )
        flags[SYNTHETIC_KEY] = bool(edit.added)
        return (edit if edit.image or edit.label else None), flags
