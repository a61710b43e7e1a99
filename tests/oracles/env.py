"""A side environment with the libraries the public code pins (MONAI 0.9.0, numpy 1.23).

Faithfulness tests compare tumorsweep with what the original code computes with the library
versions it pins. Those versions cannot live in the project's environment (numpy >= 2, MONAI
1.5+), so the oracle runs as a subprocess in a virtual environment of its own, built from the
package registry the first time a test asks for it and cached per machine under
`$TUMORSWEEP_SIDE_ENV_DIR` (default `~/.cache/tumorsweep/side-envs`), keyed by the hash of
its requirements file. A file lock keeps concurrent test runs from building it twice. If it
cannot be built, the test fails: a faithfulness test never skips its oracle.

Oracle scripts live beside this file; they import only the side environment's packages (never
tumorsweep) and exchange arrays through .npz / .pt files.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "tumorsweep" / "side-envs"
    return Path(os.environ.get("TUMORSWEEP_SIDE_ENV_DIR", default))


class SideEnv:
    """One cached virtual environment built from `requirements-<name>.txt` beside this file."""

    def __init__(self, name: str) -> None:
        self.requirements = HERE / f"requirements-{name}.txt"
        digest = hashlib.sha256(self.requirements.read_bytes()).hexdigest()[:12]
        self.root = _cache_root() / f"{name}-py{sys.version_info[0]}{sys.version_info[1]}-{digest}"
        self.python = self.root / "bin" / "python"

    def ensure(self) -> SideEnv:
        """Build the environment unless a complete one is cached; raise if that fails."""
        done = self.root / ".complete"
        if done.exists():
            return self
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f"{self.root.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if done.exists():
                return self
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(self.root)],
                [str(self.python), "-m", "pip", "install", "-q", "-r", str(self.requirements)],
            ]
            for step in steps:
                result = subprocess.run(step, capture_output=True, text=True, timeout=1800)
                if result.returncode != 0:
                    raise RuntimeError(
                        f"cannot build the oracle environment {self.root} "
                        f"({' '.join(step[-3:])}):\n{result.stderr[-3000:]}"
                    )
            done.write_text(self.requirements.read_text())
        return self

    def run(self, script: str, *args: str | os.PathLike, timeout: float = 900) -> str:
        """Run `tests/oracles/<script>` with this environment's Python; return its stdout.

        Raises with the oracle's stderr if it exits non-zero (the test then fails)."""
        self.ensure()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        result = subprocess.run(
            [str(self.python), str(HERE / script), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if result.returncode != 0:
            raise RuntimeError(f"oracle {script} failed:\n{result.stderr[-4000:]}")
        return result.stdout
