"""A Prefect server and an MLflow tracking server for this project, on 127.0.0.1 by default: start, stop, status.

They are the libraries' own servers (`prefect server start`, `mlflow server`) on the project's stores (Prefect's
SQLite in .prefect/, MLflow's mlruns/mlflow.db and mlruns/artifacts); rnnlab only keeps their pids and logs in
.servers/ and checks their health. `rnnlab serve` processes are stopped before the servers they talk to.

`rnnlab ui` runs MLflow's server in the foreground instead, over the project's store, for one person's browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rnnlab.runtime.env import pid_alive, project_dir, verbose
from rnnlab.runtime.processes import guarded


class ServerError(RuntimeError):
    """A server could not be started or reached; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    name: str
    default_port: int
    health_path: str

    def url(self, host: str, port: int) -> str:
        return f"http://{host}:{port}"

    def client_url(self, host: str, port: int) -> str:
        return self.url(host, port) + ("/api" if self.name == "prefect" else "")

    def command(self, host: str, port: int) -> list[str]:
        bin_dir = Path(sys.executable).parent
        if self.name == "prefect":
            return [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", str(port)]
        home = project_dir()
        return [
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{home / 'mlruns' / 'mlflow.db'}",
            "--artifacts-destination",
            str(home / "mlruns" / "artifacts"),
        ]


SERVERS = {"prefect": Server("prefect", 4200, "/api/health"), "mlflow": Server("mlflow", 5000, "/health")}
SERVE = "serve"  # pid file of `rnnlab serve`


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
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


def start(name: str, host: str = "127.0.0.1", port: int | None = None, timeout: float = 120.0) -> dict:
    server = SERVERS[name]
    port = port or server.default_port
    running = read_state(name)
    if running:
        return running
    if port_taken(host, port):
        raise ServerError(
            f"cannot start the {name} server: port {port} on {host} is already taken by another "
            f"program; choose another with --{name}-port"
        )
    log = state_dir() / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            server.command(host, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=project_dir(),
        )
    state = {"pid": process.pid, "host": host, "port": port, "url": server.client_url(host, port), "log": str(log)}
    deadline = time.monotonic() + timeout
    while not healthy(server.url(host, port) + server.health_path):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_pid(process.pid)
            tail = log.read_text(errors="replace")[-2000:]
            raise ServerError(
                f"the {name} server did not become healthy on {host}:{port} "
                f"({'it exited' if process.poll() is not None else f'{timeout:.0f} s'}); "
                f"its log ({log}) ends with:\n{tail}"
            )
        time.sleep(0.5)
    write_state(name, **state)
    return state


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
            state["healthy"] = healthy(f"http://{state['host']}:{state['port']}" + SERVERS[name].health_path)
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


def ui_command(uri: str, host: str, port: int, jobs: bool) -> tuple[list[str], dict[str, str]]:
    """The command that serves the MLflow UI over `uri`, and the environment it needs besides this process's."""
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
        "--host",
        host,
        "--port",
        str(port),
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
    if port_taken(host, port):
        raise ServerError(
            f"cannot start the MLflow UI: port {port} on {host} is already taken by another program; "
            "choose another with --port"
        )
    command, env = ui_command(uri, host, port, jobs)
    url = local_url(host, port)
    process = None
    try:
        process = subprocess.Popen(
            guarded(command), env={**os.environ, **env}, stdin=subprocess.DEVNULL, start_new_session=True
        )
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


def stop_group(process: subprocess.Popen, sig: int, grace: float = UI_GRACE) -> None:
    """`sig` to the child's process group, then SIGKILL to whatever of the group outlives `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # uvicorn can outlive MLflow's CLI, its parent
    process.wait()
