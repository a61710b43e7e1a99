"""`import tumorsweep` for use in your own MONAI pipelines: the same modules as `core`.

The code lives in the `core/` folder (the layout the project has always had); this package
is its public name. `tumorsweep.X` is `core.X` itself - the same module object, not a copy -
so `isinstance` checks and module state agree whichever name imported them:

    from tumorsweep.synthesis import TumorSynthesisd
    from tumorsweep.evaluate import case_metrics
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

from core import __version__

__all__ = ["__version__"]
_PREFIX = __name__ + "."


class _AliasLoader(importlib.abc.Loader):
    """Loads `tumorsweep.X` by importing `core.X` and registering the same module object."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return importlib.import_module(self.target)

    def exec_module(self, module: object) -> None:  # already executed as core.X
        return None


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves `tumorsweep.X` to `core.X` for every submodule X."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PREFIX):
            return None
        real = "core." + fullname[len(_PREFIX) :]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())
