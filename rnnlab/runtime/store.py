"""Where the tracking store is, and whether this process can use it: checked before anything heavy is imported (no
MLflow here: a SQLite header and two pragmas, or one HTTP request), so an unfit store fails a command in a second."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from rnnlab.runtime.env import EnvironmentProblem, project_dir


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_dir() / 'mlruns' / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@contextlib.contextmanager
def tracking_at(uri: str):
    """Record into `uri` for the duration: a cell on a Dask worker, whose own environment may name no tracking
    server (its runs would go to a local store nobody reads), records where its study does."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


READ_ONLY = False


def read_only() -> None:
    """This process only reads the store (`rnnlab compare`, `report`, `ui`): it creates nothing (no store in an empty
    project, no lock file) and works on a store it cannot write."""
    global READ_ONLY
    READ_ONLY = True


def store_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


SQLITE_HEADER = b"SQLite format 3\x00"


def check_local_store(uri: str, write: bool) -> None:
    """A SQLite store is usable: its folder can be written (unless only read), and an existing file is a whole
    SQLite database. Cheap (a header and two pragmas), so every process checks before its first use."""
    path = store_path(uri)
    hint = "set MLFLOW_TRACKING_URI to another store, or RNNLAB_HOME to another project directory"
    if path.parent.exists() and not path.parent.is_dir():
        raise EnvironmentProblem(f"MLflow store {uri}: {path.parent} is a file, not a directory; {hint}")
    if write:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as err:
            raise EnvironmentProblem(
                f"MLflow store {uri}: cannot write in {path.parent} ({err.strerror}); {hint}"
            ) from None
    if not path.is_file():
        if path.exists():
            raise EnvironmentProblem(f"MLflow store {uri}: {path} is not a file; {hint}")
        return
    damaged = (
        f"MLflow store {path} is damaged: {{}}. Move it aside (mv {path} {path}.damaged) to start an empty "
        "store, or restore it from a backup"
    )
    if path.stat().st_size:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise EnvironmentProblem(damaged.format("it is not a SQLite database"))
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            # Inside one read transaction: its shared lock keeps other processes from writing to the file meanwhile,
            # so the page count and the file's size are of the same moment (outside it, a store that another
            # process was growing looked cut short).
            db.execute("BEGIN")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
            size = path.stat().st_size
            db.execute("COMMIT")
    except sqlite3.Error as err:
        raise EnvironmentProblem(damaged.format(f"SQLite says: {err}")) from None
    if size < pages:
        raise EnvironmentProblem(damaged.format(f"it is cut short ({size:,} of {pages:,} bytes)"))


def experiments(uri: str) -> dict[str, str]:
    """Name → id of the live experiments of a SQLite store, read with SQLite alone: `rnnlab ui` must listen within
    seconds, and MLflow's client costs ~3 s of imports before its first query. The store is checked first (a missing
    one, a damaged one), and a SQLite file without MLflow's tables is named as such."""
    path = store_path(uri)
    check_local_store(uri, write=False)
    if not path.is_file():
        raise LookupError(
            f"no tracking store at {path}: nothing has been run in this project yet (or set "
            "MLFLOW_TRACKING_URI, or RNNLAB_HOME to the project that has one)"
        )
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            rows = db.execute(
                "SELECT name, experiment_id FROM experiments WHERE lifecycle_stage = 'active' ORDER BY experiment_id"
            ).fetchall()
    except sqlite3.Error as err:
        raise EnvironmentProblem(
            f"MLflow store {path} is not an MLflow store, or a damaged one (SQLite says: {err}); "
            f"move it aside (mv {path} {path}.damaged), or restore it from a backup"
        ) from None
    return {name: str(experiment_id) for name, experiment_id in rows}


def check_remote_store(uri: str, timeout: float = 5.0) -> None:
    """A tracking server answers (any HTTP answer will do), within `timeout` seconds, instead of after minutes of
    retries."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answered
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise EnvironmentProblem(
            f"MLFLOW_TRACKING_URI={uri}: the tracking server does not answer ({reason}); start "
            "it (`rnnlab server start`), or unset MLFLOW_TRACKING_URI to use this project's "
            "local store"
        ) from None


def check_store() -> None:
    """The tracking store named by MLFLOW_TRACKING_URI (or the project's) can be used by this process."""
    uri = tracking_uri()
    if is_local_store(uri):
        check_local_store(uri, write=not READ_ONLY)
    elif uri.startswith(("http://", "https://")):
        check_remote_store(uri)
