"""One import name: the `core/` folder is installed as `tumorsweep`, and nothing named `core`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_of_core_is_installed_under_tumorsweep() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"tumorsweep": "core"}
    on_disk = {
        "tumorsweep" + "".join("." + part for part in init.parent.relative_to(ROOT / "core").parts)
        for init in (ROOT / "core").rglob("__init__.py")
    }
    assert set(config["packages"]) == on_disk


def test_no_source_file_imports_core() -> None:
    offenders = []
    for path in ROOT.glob("**/*.py"):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path}:{node.lineno}" for n in names if n.split(".")[0] == "core"]
    assert offenders == []


def test_tumorsweep_imports_and_core_does_not_in_a_fresh_process(tmp_path: Path) -> None:
    # run from an empty folder, so the checkout's `core/` folder is not on sys.path
    code = (
        "import importlib.util, tumorsweep.synthesis, tumorsweep.cli;"
        "assert importlib.util.find_spec('core') is None, 'a top-level core is importable';"
        "print(tumorsweep.synthesis.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tumorsweep.synthesis"
