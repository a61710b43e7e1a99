"""`synthesis.generator: auto`: the sweep driver trains the generator once on the study's
real-tumour training cases, caches it under the tumorsweep cache folder keyed by those cases
(paths, sizes, modification times) and the generator config, and hands the trials its folder.
A later sweep on the same data and preset reuses it; trials only load it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from tumorsweep.config import TrialConfig, apply_overrides
from tumorsweep.data.cases import CaseLists, cache_dir
from tumorsweep.difftumor.job import GeneratorJob, run_job, training_entries
from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import AUTO, FORMAT, GeneratorConfig, generator_config
from tumorsweep.generative.store import CONFIG_FILE, read_generator_info

FIELD = "synthesis.generator"


def cache_key(config: GeneratorConfig, cases: CaseLists) -> str:
    """Digest of the generator config and the identity of every training case file."""
    files = []
    for entry in training_entries(cases):
        for key in ("image", "label"):
            stat = os.stat(entry[key])
            files.append([entry["case"], key, str(entry[key]), stat.st_size, stat.st_mtime_ns])
    document = {"format": FORMAT, "config": config.model_dump(mode="json"), "files": files}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def uses_auto(base: TrialConfig, probes: Iterable[Mapping[str, Any]]) -> bool:
    """Whether some trial needs the auto generator: `auto` must come from the base config
    (the study's `fixed` or `--set`), where the driver replaces it by the folder."""
    needed = False
    for probe in probes:
        if probe.get(FIELD) == AUTO:
            raise TumorsweepError(
                f"{FIELD}: 'auto' can be set in the study's fixed fields or with --set, not "
                "per trial (the sweep driver trains it once for all trials)"
            )
        style = probe.get("synthesis.style", base.synthesis.style)
        generator = probe.get(FIELD, base.synthesis.generator)
        needed |= style == "difftumor" and generator == AUTO
    return needed


def resolve_auto(
    base: TrialConfig,
    probes: Iterable[Mapping[str, Any]],
    cases: CaseLists,
    preset: str,
    tracking_uri: str,
    experiment: str,
    dry_run: bool = False,
    **ray: Any,
) -> TrialConfig:
    """The base config with `auto` replaced by a cached (or newly trained) generator folder;
    unchanged when no trial uses it, or in a dry run (which only says what would happen).
    `ray`: `address`, `workers`, `gpus_per_worker`, `cpus_per_worker`, `storage` of
    `GeneratorJob` (with an address the generator trains as a Ray Train run there)."""
    if not uses_auto(base, list(probes)):
        return base
    config = generator_config(preset, base.data.spacing)
    folder = cache_dir() / "generators" / cache_key(config, cases)
    cached = (folder / CONFIG_FILE).is_file()
    if dry_run:
        print(f"DiffTumor generator: would {'reuse' if cached else 'train'} {folder}")
        return base
    if cached:
        read_generator_info(folder)  # a damaged cache entry fails here, naming its file
        print(f"DiffTumor generator: reusing {folder}", flush=True)
    else:
        print(f"DiffTumor generator: training ({preset} preset) into {folder} ...", flush=True)
        job = GeneratorJob(config, cases, folder, tracking_uri, experiment, **ray)
        run_job(job)
    return apply_overrides(base, {FIELD: str(folder)}, source=FIELD)
