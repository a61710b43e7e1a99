"""Opening an MLflow store for reading: check the URI first, bound the waits, create nothing.

MLflow creates a new empty SQLite database (and its folder) for a URI that names none, and
retries an unreachable server for minutes; a report must do neither. So a local store must
exist, a server must answer a short probe, and while the report reads, MLflow's HTTP retries
and timeout are bounded (unless the user set them) and its progress bars are off.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from tumorsweep.errors import TumorsweepError
from tumorsweep.stores import check_mlflow_sqlite, check_not_file_store

PROBE_TIMEOUT_S = 3.0
# MLflow's environment variables and the values a report uses unless the user set them.
BOUNDED_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def _local_path(tracking_uri: str) -> Path | None:
    """The file or folder a local store URI names (None for servers and databases)."""
    if tracking_uri.startswith("sqlite:"):
        path = tracking_uri.removeprefix("sqlite:").split("?", 1)[0].removeprefix("///")
        if path in ("", "//", ":memory:"):
            raise TumorsweepError(
                f"tracking URI {tracking_uri!r} is an in-memory SQLite store: it holds no runs"
            )
        return Path(path)
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (or a Windows drive)
        return Path(tracking_uri)
    return None


def _probe(tracking_uri: str) -> None:
    """Fail fast when nothing answers at a server URI (any HTTP answer counts)."""
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # something answered; MLflow's own errors will say more
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return  # a TLS server answered; MLflow's TLS settings decide the rest
        raise TumorsweepError(
            f"cannot reach the MLflow server at {tracking_uri} "
            f"(no answer within {PROBE_TIMEOUT_S:g} s: {reason})"
        ) from None


def check_tracking_uri(tracking_uri: str) -> None:
    """Raise unless the store exists: a local file or folder, or a server that answers."""
    if not tracking_uri.strip():
        raise TumorsweepError("tracking URI is empty")
    path = _local_path(tracking_uri)
    if path is not None:
        sqlite = tracking_uri.startswith("sqlite:")
        kind = "SQLite database" if sqlite else "MLflow store folder"
        what = f"tracking URI {tracking_uri!r}"
        if not path.exists():
            raise TumorsweepError(
                f"{what}: {kind} {path} does not exist (a report never creates a store)"
            )
        if sqlite:
            check_mlflow_sqlite(path, what)  # before MLflow could create its tables in it
        elif path.is_dir():
            check_not_file_store(path, what)
        else:
            raise TumorsweepError(f"{what}: {path} is a file; an SQLite store is sqlite:///{path}")
    elif urlparse(tracking_uri).scheme in ("http", "https"):
        _probe(tracking_uri)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(getattr(exc, "message", None) or exc).split())


@contextlib.contextmanager
def reading(tracking_uri: str) -> Iterator[MlflowClient]:
    """A client for an existing store, with bounded HTTP waits; store errors become
    `TumorsweepError` naming the URI."""
    check_tracking_uri(tracking_uri)
    before = {name: os.environ.get(name) for name in BOUNDED_ENV}
    for name, value in BOUNDED_ENV.items():
        os.environ.setdefault(name, value)
    try:
        yield MlflowClient(tracking_uri=tracking_uri)
    except (MlflowException, SQLAlchemyError) as exc:
        raise TumorsweepError(f"MLflow store {tracking_uri}: {one_line(exc)}") from exc
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
