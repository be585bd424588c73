"""A Prefect server and an MLflow tracking server for this project, on 127.0.0.1 by default: start, stop, status.

They are the libraries' own servers (`prefect server start`, `mlflow server`) on the project's stores (Prefect's
SQLite in .prefect/, MLflow's mlruns/mlflow.db and mlruns/artifacts); rnnlab only keeps their pids and logs in
.servers/ and checks their health. `rnnlab serve` processes are stopped before the servers they talk to.

MLflow serves the runs' artifacts itself (experiments it creates are rooted at `mlflow-artifacts:/`, kept under the
project's mlruns/artifacts on the server's machine), with one web worker and without its job runner (GenAI
evaluation jobs, which this lab does not record: `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`): 2 processes and
~0.5 GB instead of 10 and ~2.3 GB.

For a team (`rnnlab server start --database postgresql://USER[:PASSWORD]@HOST[:PORT]/NAME --host 0.0.0.0`):
- `--database`: both servers keep their stores in PostgreSQL, each in a database of its own, NAME_prefect and
  NAME_mlflow (and NAME_mlflow_auth for MLflow's users, with credentials), created on the first start where the user
  may create databases (else a DBA creates them once). Databases rather than schemas of one database: Prefect's and
  MLflow's migrations each keep an `alembic_version` table, and Prefect would need a search_path setting besides the
  URL; a database each is backed up, restored, dropped or granted on its own. The password (from the URL, or the
  drivers' own PGPASSWORD or ~/.pgpass) reaches the servers as PGPASSWORD, never in a URL on a command line or in a
  log. The drivers are the `team` extra: `pip install -e ".[team]"`.
- Credentials: bound beyond loopback, the servers start only with credentials, given as the clients' own variables,
  MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (at least 12 characters, MLflow's rule) and/or
  PREFECT_API_AUTH_STRING=user:password (rnnlab commands derive either from the other). Given, they turn
  authentication on, on loopback too: Prefect's basic authentication (PREFECT_SERVER_API_AUTH_STRING) and MLflow's
  `basic-auth` app, whose admin user they are (its user store: mlruns/mlflow-auth.db, or NAME_mlflow_auth; every
  user may read and record runs in every experiment: default_permission EDIT). Every rnnlab command, Prefect worker
  and flow run that has them in its environment passes them; none of them is written to a file, a log, a run or the
  console. Over plain HTTP they cross the network in the clear: beyond a trusted network, put the servers behind a
  TLS proxy. MLflow answers only requests addressed to localhost or a private IP unless MLFLOW_SERVER_ALLOWED_HOSTS
  (in the environment of `rnnlab server start`) names the server's host name.

`rnnlab ui` runs MLflow's server in the foreground instead, over the project's store, for one person's browser.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from rnnlab.runtime.env import (
    MLFLOW_PASSWORD,
    MLFLOW_USER,
    PREFECT_AUTH,
    pid_alive,
    project_dir,
    verbose,
    without_userinfo,
)
from rnnlab.runtime.processes import guarded


class ServerError(RuntimeError):
    """A server could not be started or reached; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    name: str
    default_port: int
    health_path: str

    def url(self, host: str, port: int) -> str:
        return local_url(host, port) if host in ("0.0.0.0", "::", "") else http_url(host, port)

    def client_url(self, host: str, port: int) -> str:
        return self.url(host, port) + ("/api" if self.name == "prefect" else "")


SERVERS = {"prefect": Server("prefect", 4200, "/api/health"), "mlflow": Server("mlflow", 5000, "/health")}
SERVE = "serve"  # pid file of `rnnlab serve`
LOOPBACK = ("127.0.0.1", "::1", "localhost")
INSTALL_TEAM = 'pip install -e ".[team]"'


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class Auth:
    """What the servers ask of every request: Prefect the `auth` string (user:password, by HTTP basic
    authentication), MLflow its admin user's name and password."""

    prefect: str
    user: str
    password: str


def credentials() -> Auth | None:
    """The credentials in this process's environment (the clients' own variables; `rnnlab.runtime.env.configure`
    has derived a missing pair from the other), or None where none is given. Incomplete ones are refused."""
    user, password, prefect = (os.environ.get(name) for name in (MLFLOW_USER, MLFLOW_PASSWORD, PREFECT_AUTH))
    if not (user or password or prefect):
        return None
    if not (user and password):
        raise ServerError(
            f"incomplete credentials: set both {MLFLOW_USER} and {MLFLOW_PASSWORD} (MLflow's admin user), and "
            f"{PREFECT_AUTH}=user:password for Prefect if it differs"
        )
    if ":" in user:
        raise ServerError(f"{MLFLOW_USER} cannot contain ':' (HTTP basic authentication splits on it)")
    if len(password) < 12:
        raise ServerError(f"{MLFLOW_PASSWORD} is too short: MLflow requires at least 12 characters")
    return Auth(prefect=prefect or f"{user}:{password}", user=user, password=password)


def check_exposure(host: str, auth: Auth | None) -> None:
    """Bound beyond loopback, the servers need credentials: without them anyone who reaches the address could read,
    change and delete every run, and start flow runs on the team's workers."""
    if host not in LOOPBACK and auth is None:
        raise ServerError(
            f"refusing to bind the servers to {host} without credentials (anyone who reaches it could read and "
            f"change every run): set {MLFLOW_USER} and {MLFLOW_PASSWORD} (and {PREFECT_AUTH}=user:password), or "
            "bind 127.0.0.1"
        )


@dataclass(frozen=True)
class Database:
    """A PostgreSQL server whose databases NAME_prefect, NAME_mlflow (and NAME_mlflow_auth) hold the servers'
    stores. `password` is kept out of every URL: the servers get it as PGPASSWORD."""

    user: str | None
    password: str | None
    location: str  # host[:port], or empty (the drivers' default: a local socket)
    name: str
    query: str

    def url(self, suffix: str | None, driver: str = "postgresql") -> str:
        """The URL (without password) of database NAME_suffix, or of the maintenance database `postgres`."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        database = f"{self.name}_{suffix}" if suffix else "postgres"
        return f"{driver}://{user}{self.location}/{database}" + (f"?{self.query}" if self.query else "")

    @property
    def shown(self) -> str:
        """Where the databases are, for messages: no password."""
        return f"postgresql://{self.user + '@' if self.user else ''}{self.location}/{self.name}"

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password} if self.password is not None else {}


DATABASES = ("prefect", "mlflow")
AUTH_DATABASE = "mlflow_auth"


def database(url: str) -> Database:
    """`--database`: postgresql://USER[:PASSWORD]@HOST[:PORT]/NAME (NAME defaults to rnnlab)."""
    bare, user, password = without_userinfo(url)
    parts = urlsplit(bare)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ServerError(
            f"--database takes a PostgreSQL URL, postgresql://USER[:PASSWORD]@HOST[:PORT]/NAME, not "
            f"{parts.scheme or 'a path'}:…"
        )
    name = parts.path.strip("/") or "rnnlab"
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ServerError(
            f"--database: the name {name!r} must be letters, digits, '_' or '-' (databases are named after it)"
        )
    return Database(user or None, password, parts.netloc, name, parts.query)


def drivers() -> None:
    """The PostgreSQL drivers: psycopg2 for MLflow (and these checks), asyncpg for Prefect."""
    try:
        import asyncpg  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError as err:
        raise ServerError(
            f"--database needs the PostgreSQL drivers ({err.name} is not installed): {INSTALL_TEAM}"
        ) from None


def auth_app() -> None:
    """MLflow's basic-auth app imports Flask-WTF (the `auth` extra of mlflow), which MLflow itself does not need."""
    try:
        import flask_wtf  # noqa: F401
    except ImportError:
        raise ServerError(f"credentials need MLflow's basic-auth app, which needs Flask-WTF: {INSTALL_TEAM}") from None


def prepare(db: Database, auth: Auth | None) -> None:
    """The servers' databases exist: each is reached; those missing are created (CREATE DATABASE, which needs the
    CREATEDB privilege: without it, say what to ask a DBA for)."""
    drivers()
    import psycopg2

    wanted = [*DATABASES, *([AUTH_DATABASE] if auth else [])]
    missing = []
    for suffix in wanted:
        try:
            psycopg2.connect(db.url(suffix), password=db.password, connect_timeout=10).close()
        except psycopg2.OperationalError as err:
            reason = first_line(err)
            if "does not exist" in reason:
                missing.append(f"{db.name}_{suffix}")
                continue
            raise ServerError(f"cannot reach PostgreSQL at {db.shown}: {reason}") from None
    if not missing:
        return
    try:
        connection = psycopg2.connect(db.url(None), password=db.password, connect_timeout=10)
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with contextlib.closing(connection), connection.cursor() as cursor:
            for name in missing:
                cursor.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error as err:
        raise ServerError(
            f"cannot create the database(s) {', '.join(missing)} at {db.shown} ({first_line(err)}): have them created "
            f"(CREATE DATABASE …; owned by {db.user or 'the connecting user'}), or grant that user CREATEDB"
        ) from None


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def state_dir() -> Path:
    folder = project_dir() / ".servers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_state(name: str) -> dict | None:
    path = state_dir() / f"{name}.json"
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return state if pid_alive(state["pid"]) else None


def write_state(name: str, **state) -> None:
    (state_dir() / f"{name}.json").write_text(json.dumps(state))


def port_taken(host: str, port: int) -> bool:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        family = socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in a file only its owner reads, made once."""
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(make())
    return path.read_text().strip()


def launch_spec(name: str, host: str, port: int, db: Database | None, auth: Auth | None) -> tuple[list, dict]:
    """The server's command and what its environment adds to this process's."""
    bin_dir = Path(sys.executable).parent
    env = db.env() if db else {}
    if name == "prefect":
        if db:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = db.url("prefect", "postgresql+asyncpg")
        if auth:
            env["PREFECT_SERVER_API_AUTH_STRING"] = auth.prefect
        return [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", str(port)], env
    home = project_dir()
    store = db.url("mlflow") if db else f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
    command = [str(bin_dir / "mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", store, "--artifacts-destination", str(home / "mlruns" / "artifacts")]
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if auth:
        (home / "mlruns").mkdir(parents=True, exist_ok=True)
        users = db.url(AUTH_DATABASE) if db else f"sqlite:///{home / 'mlruns' / 'mlflow-auth.db'}"
        config = state_dir() / "mlflow-auth.ini"  # no secret in it: the password comes by the environment
        config.write_text(
            "[mlflow]\n"
            f"default_permission = EDIT\ndatabase_uri = {users}\nadmin_username = {auth.user}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        command += ["--app-name", "basic-auth"]
        env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_USERNAME": auth.user,
            "MLFLOW_AUTH_ADMIN_PASSWORD": auth.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or secret_file(state_dir() / "mlflow-secret-key", lambda: secrets.token_hex(32)),
        }
    return command, env


def launch(name: str, host: str, port: int, db: Database | None, auth: Auth | None) -> tuple[subprocess.Popen, dict]:
    if port_taken(host, port):
        raise ServerError(
            f"cannot start the {name} server: port {port} on {host} is already taken by another "
            f"program; choose another with --{name}-port"
        )
    server = SERVERS[name]
    command, env = launch_spec(name, host, port, db, auth)
    log = state_dir() / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=project_dir(),
            env={**os.environ, **env},
        )
    state = {
        "pid": process.pid,
        "host": host,
        "port": port,
        "url": server.client_url(host, port),
        "log": str(log),
        "auth": auth is not None,
        "database": db.url(name) if db else None,
    }
    return process, state


def wait_healthy(name: str, process: subprocess.Popen, state: dict, timeout: float) -> None:
    server, log = SERVERS[name], Path(state["log"])
    deadline = time.monotonic() + timeout
    while not healthy(server.url(state["host"], state["port"]) + server.health_path):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise ServerError(
                f"the {name} server did not become healthy on {state['host']}:{state['port']} "
                f"({'it exited' if process.poll() is not None else f'{timeout:.0f} s'}); "
                f"its log ({log}) ends with:\n{tail}"
            )
        time.sleep(0.5)


# A request that each server answers only with valid credentials.
AUTH_PROBES = {"prefect": "/api/admin/version", "mlflow": "/api/2.0/mlflow/experiments/search?max_results=1"}


def check_login(name: str, state: dict, auth: Auth, db: Database | None) -> None:
    """The credentials open the server. MLflow creates its admin user on its first start only: a user store from an
    earlier start with another password keeps that one."""
    login = auth.prefect if name == "prefect" else f"{auth.user}:{auth.password}"
    request = urllib.request.Request(
        SERVERS[name].url(state["host"], state["port"]) + AUTH_PROBES[name],
        headers={"Authorization": "Basic " + base64.b64encode(login.encode()).decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            return
    except urllib.error.HTTPError as err:
        if name == "prefect" or err.code not in (401, 403):
            raise ServerError(f"the {name} server answered {err.code} to a request with its credentials") from None
    users = db.url(AUTH_DATABASE) if db else project_dir() / "mlruns" / "mlflow-auth.db"
    raise ServerError(
        f"the MLflow server refuses {MLFLOW_USER}/{MLFLOW_PASSWORD}: its user store ({users}) has user "
        f"'{auth.user}' with another password, from an earlier start; use that password, change it (MLflow's "
        "users/update-password API, as an admin), or remove the user store to start a new one (its users and "
        "permissions are lost)"
    )


def start(
    name: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 120.0,
    db: Database | None = None,
    auth: Auth | None = None,
) -> dict:
    return start_all(host, {name: port or SERVERS[name].default_port}, timeout, db, auth)[name]


def start_all(
    host: str, ports: dict[str, int], timeout: float = 120.0, db: Database | None = None, auth: Auth | None = None
) -> dict[str, dict]:
    """Start the servers named in `ports` side by side (those already running are left as they are), wait until
    each answers (and takes the credentials), and keep their state; on any failure, stop what this call started."""
    check_exposure(host, auth)
    if auth:
        auth_app()
    found = {name: read_state(name) for name in ports}
    if db and not all(found.values()):
        prepare(db, auth)
    started: dict[str, tuple[subprocess.Popen, dict]] = {}
    try:
        for name, port in ports.items():
            if not found[name]:
                started[name] = launch(name, host, port, db, auth)
        for name, (process, state) in started.items():
            wait_healthy(name, process, state, timeout)
            if auth:
                check_login(name, state, auth, db)
    except BaseException:
        for process, _ in started.values():
            stop_pid(process.pid)
        raise
    for name, (_, state) in started.items():
        write_state(name, **state)
        found[name] = state
    return found


def stop_pid(pid: int, grace: float = 20.0) -> None:
    """SIGTERM to the process group (the server and its workers), SIGKILL if it outlives `grace`."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pid_alive(pid):
            return


def stop_all() -> list[str]:
    """Serve processes first: one whose Prefect server is gone hangs while pausing its deployments."""
    stopped = []
    for name in (SERVE, "prefect", "mlflow"):
        state = read_state(name)
        if state:
            stop_pid(state["pid"])
            stopped.append(name)
        (state_dir() / f"{name}.json").unlink(missing_ok=True)
    return stopped


def status() -> dict[str, dict | None]:
    found = {}
    for name in (*SERVERS, SERVE):
        state = read_state(name)
        if state and name in SERVERS:
            state["healthy"] = healthy(SERVERS[name].url(state["host"], state["port"]) + SERVERS[name].health_path)
        found[name] = state
    return found


def project_urls() -> dict[str, str]:
    """Client URLs of this project's running servers: PREFECT_API_URL and MLFLOW_TRACKING_URI values."""
    urls = {}
    for name, variable in (("prefect", "PREFECT_API_URL"), ("mlflow", "MLFLOW_TRACKING_URI")):
        state = read_state(name)
        if state:
            urls[variable] = state["url"]
    return urls


# `rnnlab ui`. `mlflow ui` (MLflow 3.17) starts 4 web workers, a job runner and 7 job consumers for GenAI evaluation
# jobs (15 processes, 3.1 GB) and listened after 24 s on 2 cores. One web worker serves one person's browser, and the
# jobs (scorers, LLM judges) are not what this lab records: they run only with --jobs. Even so, `mlflow server
# --workers 1` listened after 6-7.5 s, half of it MLflow's CLI importing the server's code (3.5 s) before it starts
# the web worker that imports it again; so rnnlab starts that worker, uvicorn on MLflow's app, itself: it listens
# ~4 s after `rnnlab ui` starts, one process beside rnnlab, 0.3 GB. It is configured as MLflow's CLI configures it, by
# the variables that the CLI hands its workers
# (mlflow/server/constants.py, internal to MLflow; tests/test_ui.py checks that the worker serves the project's store).
UI_GRACE = 5.0  # seconds the server has to stop once asked before its process group is killed


def ui_command(uri: str, host: str, port: int, jobs: bool, fd: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The command that serves the MLflow UI over `uri`, and the environment it needs besides this process's.
    `fd`: a listening socket this process has bound, which the web worker serves (not with `jobs`)."""
    quiet = [] if verbose() else ["--log-level", "warning", "--no-access-log"]  # a line per request: only with -v
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if jobs else "false"}
    if not verbose() and "PYTHONWARNINGS" not in os.environ:  # Starlette's deprecation of what MLflow uses, every start
        env["PYTHONWARNINGS"] = "ignore:starlette.middleware.wsgi is deprecated"
    # What is uploaded through the UI goes beside rnnlab's artifacts (MLflow's default: ./mlartifacts of the cwd).
    uploads = (
        Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
        if uri.startswith("sqlite:///")
        else Path.cwd() / "mlartifacts"
    )
    if jobs:  # MLflow's own CLI, the one that starts the job runner beside the web worker
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            "--artifacts-destination",
            str(uploads),
            *(["--uvicorn-opts", " ".join(quiet)] if quiet else []),
        ]
        return command, env
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        *(["--fd", str(fd)] if fd is not None else ["--host", host, "--port", str(port)]),
        "--workers",
        "1",
        *quiet,
        "mlflow.server.fastapi_app:app",
    ]
    env |= {
        "_MLFLOW_SERVER_FILE_STORE": uri,
        "_MLFLOW_SERVER_REGISTRY_STORE": uri,
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
        "_MLFLOW_SGI_NAME": "uvicorn",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(uploads),
    }
    return command, env


def local_url(host: str, port: int) -> str:
    """The URL that reaches a server bound to `host` from this machine (one bound to every address: loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_ui(uri: str, host: str, port: int, jobs: bool, on_ready: Callable[[str], None], timeout: float = 120.0) -> int:
    """Serve the MLflow UI over `uri` until the server ends or this command is interrupted; call `on_ready(url)` once
    it answers. The server is a child in its own process group with a parent-death signal: a terminal's Ctrl-C
    reaches rnnlab alone, which asks the whole group to stop (SIGTERM) and kills what is left of it after UI_GRACE
    seconds (with --jobs, MLflow's job runner and consumers too), and a SIGKILLed rnnlab takes the server with it.
    Returns the server's exit code; an interrupt propagates (KeyboardInterrupt) once the group is gone."""
    if jobs:  # MLflow's own CLI binds its port itself
        if port == 0 or port_taken(host, port):
            raise ServerError(
                f"cannot start the MLflow UI with --jobs on port {port} of {host}: "
                + ("it needs a port number" if port == 0 else "that port is already taken by another program")
                + "; choose another with --port"
            )
        listener = None
    else:  # bound here and handed to the web worker: no port can be taken between a check and the server's bind
        listener = bind_listener(host, port)
        port = listener.getsockname()[1]  # --port 0: the one the system chose
    command, env = ui_command(uri, host, port, jobs, listener.fileno() if listener else None)
    url = local_url(host, port)
    process = None
    try:
        process = subprocess.Popen(
            guarded(command),
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(listener.fileno(),) if listener else (),
        )
        if listener:
            listener.close()  # the server has its own copy
        deadline = time.monotonic() + timeout
        while not healthy(url + "/health", timeout=1.0):
            if process.poll() is not None:
                raise ServerError(
                    f"the MLflow UI server exited (code {process.returncode}) before it answered on "
                    f"{host}:{port}; its output is above"
                )
            if time.monotonic() > deadline:
                raise ServerError(f"the MLflow UI server did not answer on {host}:{port} within {timeout:.0f} s")
            time.sleep(0.1)
        on_ready(url)
        return process.wait()
    finally:
        if process is not None:
            # SIGTERM, for a Ctrl-C too: the stop request that servers take quietly (uvicorn stops the same way on
            # either; with --jobs, MLflow's job runner printed a KeyboardInterrupt traceback for a SIGINT).
            stop_group(process, signal.SIGTERM)


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (0: a free port the system picks), or one line saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: past a closed server's TIME_WAIT
    try:
        listener.bind((host, port))
        listener.listen(2048)  # uvicorn's default backlog
    except OSError as err:
        listener.close()
        raise ServerError(
            f"cannot start the MLflow UI on {host}:{port}: "
            + ("the port is already taken by another program" if err.errno == errno.EADDRINUSE else err.strerror)
            + "; choose another with --port"
        ) from None
    return listener


def stop_group(process: subprocess.Popen, sig: int, grace: float = UI_GRACE) -> None:
    """`sig` to the child's process group, then SIGKILL to whatever of the group outlives `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # uvicorn can outlive MLflow's CLI, its parent
    process.wait()
