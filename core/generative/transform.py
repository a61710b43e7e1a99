"""`DiffTumorSynthesisd`: DiffTumor synthesis as a MONAI dictionary transform (the drop-in
counterpart of `tumorsweep.synthesis.TumorSynthesisd` for `synthesis.style: difftumor`).

Randomness flows from MONAI's `self.R` (set per worker/rank by `set_random_state`) into one
`numpy.random.Generator` per call, which also seeds the generator's noise: the same seed gives
the same voxels (on the same device).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.utils import convert_to_dst_type

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.sampler import Generator
from tumorsweep.generative.synthesis import synthesize_difftumor_inplace
from tumorsweep.synthesis.config import SynthesisConfig
from tumorsweep.synthesis.transform import SYNTHETIC_KEY, GatedSynthesisd


def _plane(value: Any, key: Hashable) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != 4 or array.shape[0] != 1:
        raise TumorsweepError(
            f"{key}: expected a channel-first (1, X, Y, Z) array, got {array.shape}"
        )
    return array[0]


class DiffTumorSynthesisd(GatedSynthesisd):
    """Add one generated tumour to `image` (HU, at the generator's spacing, channel first) and
    mark it 2 in `label`, with probability `config.difftumor.prob`, only when the label has no
    tumour (max <= 1); identity when `config.enabled` is False. Returns the same types."""

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        config: SynthesisConfig | None = None,
        generator: Generator | None = None,
    ):
        super().__init__(keys)
        if len(self.keys) != 2:
            raise TumorsweepError(
                f"DiffTumorSynthesisd keys: expected (image, label), got {self.keys}"
            )
        if generator is None:
            raise TumorsweepError("DiffTumorSynthesisd: a loaded generator is required")
        self.config = config or SynthesisConfig(
            style="difftumor", generator=generator.path or "in-memory"
        )
        if self.config.difftumor.ddim_steps > generator.config.late.timesteps:
            raise TumorsweepError(
                f"synthesis.difftumor.ddim_steps {self.config.difftumor.ddim_steps}: more than "
                f"the {generator.config.late.timesteps} steps generator {generator.path} was "
                "trained with"
            )
        self.generator = generator

    def probability(self) -> float:
        return self.config.difftumor.prob

    def synthesise(self, d: dict[Hashable, Any]) -> dict[Hashable, Any]:
        image_key, label_key = self.keys
        label = _plane(d[label_key], label_key)
        if float(label.max()) > 1:
            return d
        image = np.array(_plane(d[image_key], image_key), dtype=np.float32)
        label = label.copy()
        rng = np.random.default_rng(self._seed)
        added = synthesize_difftumor_inplace(image, label, self.generator, self.config, rng)
        d[SYNTHETIC_KEY] = bool(added)
        d[image_key] = convert_to_dst_type(image[None], d[image_key])[0]
        d[label_key] = convert_to_dst_type(label[None], d[label_key])[0]
        return d
