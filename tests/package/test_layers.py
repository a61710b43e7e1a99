"""The layering the README draws holds by construction: every import in the package (module
level or inside a function) points down, and the library layers know nothing of Ray or MLflow.

Layers, top to bottom; a module imports its own layer or lower ones. In the two library layers
the rooms are independent of each other, so each is usable alone in a MONAI pipeline.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"

LAYERS: list[tuple[set[str], bool]] = [  # (rooms, may the rooms import each other)
    ({"cli"}, True),
    ({"sweep", "preflight", "search_space", "progress", "report", "released"}, True),
    (
        {"train", "session", "tracking", "optim", "predict", "difftumor", "config"}
        | {"config_reference", "presets_doc", "ray_cluster", "ray_watchdog"},
        True,
    ),
    ({"evaluate", "generative"}, False),
    ({"synthesis"}, False),  # reads label files through data's one NIfTI reader
    ({"data", "models"}, False),
    ({"preview", "weights", "outputs", "stores"}, False),
    ({"errors", "__init__", "strict", "defaults"}, False),
]
LIBRARY = {"evaluate", "generative", "data", "synthesis", "models", "errors", "preview"}
LIBRARY |= {"weights", "outputs", "strict", "defaults"}
FRAMEWORKS = ("ray", "mlflow", "optuna")


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _level(room: str) -> int:
    for level, (rooms, _) in enumerate(LAYERS):
        if room in rooms:
            return level
    raise AssertionError(f"room {room!r} is in no layer: add it to tests/package/test_layers.py")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tumorsweep":
                found += [(node.lineno, f"tumorsweep.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _modules() -> list[tuple[Path, str]]:
    return [(p, _room("tumorsweep." + ".".join(p.relative_to(CORE).parts))) for p in
            sorted(CORE.rglob("*.py"))]  # fmt: skip


def test_every_room_is_in_a_layer() -> None:
    for _, room in _modules():
        _level(room.removesuffix(".py"))


def _upward_imports(modules: list[tuple[Path, str]]) -> list[str]:
    wrong = []
    for path, room in modules:
        room = room.removesuffix(".py")
        level = _level(room)
        for line, target in _imports(path):
            if not target.startswith("tumorsweep.") or _room(target) == room:
                continue
            other_level = _level(_room(target))
            if other_level < level or (other_level == level and not LAYERS[level][1]):
                wrong.append(f"{path.name}:{line} {room} -> {target}")
    return wrong


def test_imports_point_down() -> None:
    assert _upward_imports(_modules()) == []


def test_the_library_layers_know_nothing_of_ray_mlflow_or_optuna() -> None:
    wrong = []
    for path, room in _modules():
        if room.removesuffix(".py") not in LIBRARY:
            continue
        for line, target in _imports(path):
            if target.split(".")[0] in FRAMEWORKS:
                wrong.append(f"{path.relative_to(CORE.parent)}:{line} imports {target}")
    assert wrong == []


def test_the_contract_catches_upward_and_sibling_imports(tmp_path: Path) -> None:
    # a late import inside a function (how the old cycles were hidden) and a library sibling
    late = tmp_path / "late.py"
    late.write_text("def f():\n    from tumorsweep.config import TrialConfig\n")
    sibling = tmp_path / "sibling.py"
    sibling.write_text("import numpy\nfrom tumorsweep.synthesis import shapes\n")
    down = tmp_path / "down.py"
    down.write_text("from tumorsweep.data.io import voxels\nfrom tumorsweep import errors\n")
    found = _upward_imports([(late, "evaluate"), (sibling, "data"), (down, "train")])
    assert found == [
        "late.py:2 evaluate -> tumorsweep.config",
        "sibling.py:2 data -> tumorsweep.synthesis",
    ]
