"""No function in the package is longer than 60 lines (decorators and docstring included): a
longer one does several jobs, which get names of their own instead."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
LIMIT = 60


def too_long(path: Path, limit: int = LIMIT) -> list[str]:
    """`file:line name (N lines)` for each function or method of `path` over `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length > limit:
                where = path.relative_to(CORE.parent) if path.is_relative_to(CORE) else path.name
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_core_is_longer_than_60_lines() -> None:
    found = [line for path in sorted(CORE.rglob("*.py")) for line in too_long(path)]
    assert found == [], "functions over 60 lines:\n" + "\n".join(found)


def test_the_measure_counts_decorators_docstrings_and_nested_functions(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(57))
    source = tmp_path / "mod.py"
    # 1 decorator + def + docstring + 57 lines = 60: allowed; one more line is not
    source.write_text(f'@staticmethod\ndef ok():\n    """doc"""\n{body}\n')
    assert too_long(source) == []
    source.write_text(f'@staticmethod\ndef long():\n    """doc"""\n{body}\n    x = 0\n')
    assert too_long(source) == ["mod.py:2 long (61 lines)"]
    nested = "\n".join(f"        y{i} = {i}" for i in range(60))
    source.write_text(f"class A:\n    def method(self):\n{nested}\n")
    assert too_long(source) == ["mod.py:2 method (61 lines)"]
