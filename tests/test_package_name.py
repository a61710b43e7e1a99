"""`import tumorsweep` is the public name of the `core` package: the same module objects."""

from __future__ import annotations

import subprocess
import sys


def test_tumorsweep_modules_are_the_core_modules() -> None:
    import tumorsweep.evaluate.registry
    import tumorsweep.synthesis.config
    from tumorsweep.synthesis.config import SynthesisConfig

    import core.evaluate.registry
    import core.synthesis.config

    assert tumorsweep.synthesis.config is core.synthesis.config
    assert tumorsweep.evaluate.registry.METRICS is core.evaluate.registry.METRICS
    assert SynthesisConfig is core.synthesis.config.SynthesisConfig


def test_tumorsweep_first_then_core_in_a_fresh_process() -> None:
    code = (
        "import tumorsweep.data.splits as a, core.data.splits as b, sys;"
        "assert a is b, 'two copies';"
        "assert sys.modules['tumorsweep.data.splits'] is sys.modules['core.data.splits'];"
        "import tumorsweep.nonexistent"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "No module named 'tumorsweep.nonexistent'" in result.stderr, result.stderr
    assert "two copies" not in result.stderr
