"""Is this file an MLflow store? Asked before MLflow opens it, because MLflow creates its tables
inside any SQLite file it is pointed at (an empty file, another application's database) and
refuses a plain folder only with a long text about its file store.

The checks open SQLite read-only (`mode=ro`), so asking changes nothing; nothing here imports
MLflow.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from tumorsweep.errors import TumorsweepError

# Tables every MLflow SQLite store has had since MLflow 1.x (alembic records its schema).
MLFLOW_TABLES = frozenset({"experiments", "runs", "alembic_version"})
SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_tables(path: Path) -> set[str] | None:
    """The table names of a SQLite file, read-only; None when the file is not SQLite."""
    with path.open("rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return None
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(name) for (name,) in rows}
    except sqlite3.Error:
        return None
    finally:
        connection.close()


def check_mlflow_sqlite(path: Path, what: str) -> None:
    """Refuse an existing file that is not an MLflow SQLite store: empty, not SQLite, or a
    SQLite database without MLflow's tables (MLflow would add its tables into it)."""
    if path.is_dir():
        raise TumorsweepError(f"{what}: {path} is a folder, not an SQLite database file")
    if path.stat().st_size == 0:
        raise TumorsweepError(
            f"{what}: {path} is an empty file, not an MLflow store (tumorsweep does not write "
            "MLflow's tables into an existing file); remove it or name another file"
        )
    tables = sqlite_tables(path)
    if tables is None:
        raise TumorsweepError(f"{what}: {path} is not an SQLite database")
    if not MLFLOW_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:5]) or "none"
        raise TumorsweepError(
            f"{what}: {path} is an SQLite database without MLflow's tables (tables: {shown}); "
            "it belongs to something else and is left untouched"
        )


def check_not_file_store(path: Path, what: str) -> None:
    """A plain folder as a tracking URI means MLflow's file store, which MLflow 3 refuses
    unless MLFLOW_ALLOW_FILE_STORE is set; say so in one line, with the fix."""
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
        return
    raise TumorsweepError(
        f"{what}: {path} is a folder (MLflow's file store, no longer supported by MLflow 3); "
        "use an SQLite store such as sqlite:///PATH/mlflow.db"
    )
