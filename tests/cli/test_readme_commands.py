"""Every command line the README and the docs show runs, in its cheap form, so the
documentation cannot drift from the code.

Cheap forms: `make TARGET` is dry-run (`make -n`); a study with no external paths runs as
written with `--dry-run` (checks data, trials and resources, trains nothing); a study or a
`tumorsweep` command that names data a user has (`/data/...`, `RUN_ID`, ...) has its whole
command line parsed by the command's own parser and not run (an unknown flag, a bad choice or
a missing required flag fails); a `tumorsweep` command without arguments and a benchmark print
their `--help`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def _commands(page: Path) -> list[str]:
    """Shell commands of the page's ```bash blocks: comments dropped, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


CASES = [(page.name, command) for page in PAGES for command in _commands(page)]


# Parse a command line with the command's own parser, run nothing (exit 2 on a bad flag).
PARSE_TUMORSWEEP = (
    "import sys; from tumorsweep.cli import build_parser; "
    "args = build_parser().parse_args(sys.argv[1:]); sys.exit(0 if args.func else 3)"
)
PARSE_STUDY = (
    "import sys; from tumorsweep.cli.study import build_parser; "
    "build_parser(sys.argv[1]).parse_args(sys.argv[2:])"
)
SHELL_OPERATORS = (">", ">>", "|", "&&", ";", "2>&1")


def _cheap(argv: list[str]) -> list[str]:
    argv = [a for a in argv if not re.fullmatch(r"[A-Z_]+=\S*", a)]  # OMP_NUM_THREADS=1 ...
    cut = [i for i, a in enumerate(argv) if a in SHELL_OPERATORS]
    argv = argv[: cut[0]] if cut else argv  # `tumorsweep config --markdown > docs/config.md`
    if argv[0] == "make":
        return ["make", "-n", *argv[1:]]
    external = any(a.startswith(("/data", "/shared", "/weights")) or a.isupper() for a in argv)
    if argv[0] == "tumorsweep":
        if len(argv) == 1 or "--help" in argv:
            return [str(BIN / "tumorsweep"), "--help"]
        return [sys.executable, "-c", PARSE_TUMORSWEEP, *argv[1:]]
    if argv[0] == "python" and argv[1].startswith("sweeps/") and "--help" not in argv:
        if external or "--resume" in argv:
            return [sys.executable, "-c", PARSE_STUDY, Path(argv[1]).stem, *argv[2:]]
        return [sys.executable, *argv[1:], "--dry-run"]
    if argv[0] == "python":
        return [sys.executable, argv[1], "--help"]
    raise AssertionError(f"no cheap form for {shlex.join(argv)}: teach tests/{Path(__file__).name}")


@pytest.mark.parametrize(("page", "command"), CASES, ids=[f"{p}: {c[:60]}" for p, c in CASES])
def test_documented_command_runs(page: str, command: str) -> None:
    if command.startswith(("source ", "cd ")):
        return
    argv = _cheap(shlex.split(command.replace("$PWD", str(ROOT))))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, (
        f"{page}: {command}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    )


def test_every_page_was_read() -> None:
    assert len(CASES) >= 20
    assert ("README.md", "make study") in CASES
