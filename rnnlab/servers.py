"""A Prefect server and an MLflow tracking server for this project, on 127.0.0.1 by default: start, stop, status.

They are the libraries' own servers (`prefect server start`, `mlflow server`) on the project's stores (Prefect's
SQLite in .prefect/, MLflow's mlruns/mlflow.db and mlruns/artifacts); rnnlab only keeps their pids and logs in
.servers/ and checks their health. `rnnlab serve` processes are stopped before the servers they talk to.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnnlab.env import pid_alive, project_dir


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
        return [str(bin_dir / "mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{home / 'mlruns' / 'mlflow.db'}",
                "--artifacts-destination", str(home / "mlruns" / "artifacts")]


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
        raise ServerError(f"cannot start the {name} server: port {port} on {host} is already taken by another "
                          f"program; choose another with --{name}-port")
    log = state_dir() / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(server.command(host, port), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=project_dir())
    state = {"pid": process.pid, "host": host, "port": port, "url": server.client_url(host, port), "log": str(log)}
    deadline = time.monotonic() + timeout
    while not healthy(server.url(host, port) + server.health_path):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_pid(process.pid)
            tail = log.read_text(errors="replace")[-2000:]
            raise ServerError(f"the {name} server did not become healthy on {host}:{port} "
                              f"({'it exited' if process.poll() is not None else f'{timeout:.0f} s'}); "
                              f"its log ({log}) ends with:\n{tail}")
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
