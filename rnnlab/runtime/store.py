"""Where the tracking store is, and whether this process can use it: checked before anything heavy is imported (no
MLflow here: a SQLite header and two pragmas, or one HTTP request), so an unfit store fails a command in a second."""

from __future__ import annotations

import contextlib
import difflib
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


def query(uri: str, sql: str, *params: object) -> list[tuple]:
    """Rows of a SQLite store, read with SQLite alone (MLflow's client costs ~3 s of imports before its first query):
    the store is checked first (a missing one, a damaged one), and a SQLite file without MLflow's tables is named as
    such."""
    path = store_path(uri)
    check_local_store(uri, write=False)
    if not path.is_file():
        raise LookupError(
            f"no tracking store at {path}: nothing has been run in this project yet (or set "
            "MLFLOW_TRACKING_URI, or RNNLAB_HOME to the project that has one)"
        )
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.Error as err:
        raise EnvironmentProblem(
            f"MLflow store {path} is not an MLflow store, or a damaged one (SQLite says: {err}); "
            f"move it aside (mv {path} {path}.damaged), or restore it from a backup"
        ) from None


def experiments(uri: str) -> dict[str, str]:
    """Name → id of the live experiments of a SQLite store, read with SQLite alone: `rnnlab ui` must listen within
    seconds."""
    rows = query(
        uri, "SELECT name, experiment_id FROM experiments WHERE lifecycle_stage = 'active' ORDER BY experiment_id"
    )
    return {name: str(experiment_id) for name, experiment_id in rows}


def server_answer(uri: str, endpoint: str, **params: str) -> tuple[int, dict] | None:
    """(HTTP status, JSON body) of a GET on a tracking server's REST API (`/api/2.0/mlflow/<endpoint>`), with the
    login of MLFLOW_TRACKING_USERNAME/PASSWORD; None when the server cannot be asked (then MLflow's client, which
    retries and says why, takes over). One request and no MLflow import: a refusal in a fraction of a second."""
    import base64
    import json
    import urllib.parse

    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        login = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {login}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except (OSError, ValueError):
        return None


def server_experiments(uri: str) -> list[str]:
    """The names of a tracking server's live experiments (the first 1,000), or none where it does not say."""
    listed = server_answer(uri, "experiments/search", max_results="1000")
    return [e["name"] for e in (listed[1].get("experiments", []) if listed and listed[0] == 200 else [])]


def check_study(name: str) -> None:
    """A study (an MLflow experiment) that the project's store does not hold is refused at once, naming the ones it
    does, before a command imports MLflow: read with SQLite alone, or with one request to a tracking server."""
    uri = tracking_uri()
    if is_local_store(uri):
        check_study_in(uri, name)
    elif is_server(uri):
        answer = server_answer(uri, "experiments/get-by-name", experiment_name=name)
        if answer is not None and answer[1].get("error_code") == "RESOURCE_DOES_NOT_EXIST":
            found = server_experiments(uri)
            close = difflib.get_close_matches(name, found, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise LookupError(
                f"no study '{name}' on the tracking server {uri}; {hint}there are: {', '.join(sorted(found)) or 'none'}"
            )


def check_study_in(uri: str, name: str) -> None:
    found = experiments(uri)
    if name not in found:
        close = difflib.get_close_matches(name, list(found), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise LookupError(
            f"no study '{name}' in the tracking store {uri}; {hint}there are: {', '.join(sorted(found)) or 'none'}"
        )


def check_run(run_id: str) -> None:
    """A run id that the project's SQLite store does not hold is refused at once, before a command imports torch or
    MLflow, with what the store holds (its studies, how many runs each) and how to list their ids; on a tracking
    server, with one request (and how to list them)."""
    uri = tracking_uri()
    if is_server(uri):
        answer = server_answer(uri, "runs/get", run_id=run_id)
        if answer is not None and answer[1].get("error_code") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            found = sorted(server_experiments(uri))
            raise LookupError(
                f"no run {run_id!r} on the tracking server {uri}; its studies and experiments: "
                f"{', '.join(found) or 'none'}; list one's run ids with `rnnlab runs STUDY`"
            )
        return
    if not is_local_store(uri):
        return
    rows = query(
        uri, "SELECT run_uuid FROM runs WHERE substr(run_uuid, 1, length(?)) = ? ORDER BY start_time", run_id, run_id
    )
    ids = [row[0] for row in rows]
    if run_id in ids:
        return
    if len(ids) == 1 and len(run_id) >= 4:
        hint = f"did you mean '{ids[0]}' (the whole id)?"
    else:
        counts = query(
            uri,
            "SELECT e.name, count(*) FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' GROUP BY e.name "
            "ORDER BY max(r.start_time) DESC",
        )
        shown = ", ".join(f"'{name}' ({n} run{'s' if n != 1 else ''})" for name, n in counts[:10])
        more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
        hint = (
            f"its studies and experiments: {shown}{more}; list one's run ids with `rnnlab runs STUDY`"
            if counts
            else "it holds no run yet"
        )
    raise LookupError(f"no run {run_id!r} in the tracking store {uri}; {hint}")


RUN_TAGS = ("rnnlab.role", "rnnlab.variant", "rnnlab.outcome", "rnnlab.metric", "rnnlab.trial", "mlflow.parentRunId")


def study_runs(uri: str, name: str) -> list[dict]:
    """Every live run of a study (an MLflow experiment) of a SQLite store, oldest first: its id, name, status, start
    time (ms), the tags of RUN_TAGS, its `seed` param and its latest metrics; read with SQLite alone."""
    check_study_in(uri, name)
    scope = (
        "JOIN runs r ON r.run_uuid = x.run_uuid JOIN experiments e ON e.experiment_id = r.experiment_id "
        "WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active'"
    )
    runs: dict[str, dict] = {}
    for run_id, run_name, status, start in query(
        uri, f"SELECT x.run_uuid, x.name, x.status, x.start_time FROM runs x {scope} ORDER BY x.start_time", name
    ):
        runs[run_id] = {"run_id": run_id, "name": run_name, "status": status, "start_time": start}
        runs[run_id].update(tags={}, params={}, metrics={})
    marks = ", ".join("?" * len(RUN_TAGS))
    for run_id, key, value in query(
        uri, f"SELECT x.run_uuid, x.key, x.value FROM tags x {scope} AND x.key IN ({marks})", name, *RUN_TAGS
    ):
        runs[run_id]["tags"][key] = value
    for run_id, key, value in query(
        uri, f"SELECT x.run_uuid, x.key, x.value FROM params x {scope} AND x.key = 'seed'", name
    ):
        runs[run_id]["params"][key] = value
    for run_id, key, value, is_nan in query(
        uri, f"SELECT x.run_uuid, x.key, x.value, x.is_nan FROM latest_metrics x {scope}", name
    ):
        runs[run_id]["metrics"][key] = float("nan") if is_nan else value
    return list(runs.values())


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
