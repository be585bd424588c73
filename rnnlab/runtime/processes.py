"""What a command starts ends with it, and a signal ends the command cleanly.

- Prefect's temporary API server (started when no PREFECT_API_URL is set) is started here instead of by Prefect:
  in its own session, so a terminal's Ctrl-C does not kill it while the command still needs it to record the
  interruption; with a parent-death signal, so it dies with the command even when the command is SIGKILLed (Prefect's
  own start leaves it running then); with its output in a log file instead of the console.
- SIGINT and SIGTERM are remembered, then raised as KeyboardInterrupt, so that every run in progress is closed as
  KILLED on the way out and the command can exit with 128 + the signal's number.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from rnnlab.runtime.env import EnvironmentProblem, project_dir, verbose


class ServerStartError(EnvironmentProblem):
    """Prefect's temporary server did not start; the message ends with its log."""


# Run a command with a parent-death signal: the kernel SIGKILLs it when the process that started it dies, however it
# dies. The setting survives exec, so it holds for the command itself. If the parent is already gone by the time it
# is set (a SIGKILL during the start), the command is not run at all.
_GUARD = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "os.getppid() == int(sys.argv[1]) or os._exit(1); os.execv(sys.argv[2], sys.argv[2:])"
)


def guarded(command: list[str]) -> list[str]:
    """`command`, run so that it dies with this process (Linux; elsewhere the command as it is)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _GUARD, str(os.getpid()), *command]


def start_prefect_api(timeout: float = 120.0, wait: bool = True) -> str | None:
    """Start Prefect's temporary API server for this command (unless PREFECT_API_URL names a server) and make it
    the one every Prefect client of this process uses; return its URL. Called from the main thread: a parent-death
    signal is tied to the thread that started the child.

    `wait=False` only launches it: a command launches it first and calls again, waiting, once it needs it, so the
    server's start (6 s; 21 s with a new database) overlaps the command's imports and data preparation."""
    if os.environ.get("PREFECT_API_URL"):
        quiet_interrupt_reports()  # with a Prefect server of its own too
        return None
    from prefect.server.api.server import SubprocessASGIServer  # lazy: Prefect (~1 s), not for --help

    class TemporaryServer(SubprocessASGIServer):
        ready = False  # it has answered once

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            import prefect
            from prefect.settings import get_current_settings

            log = self.home / "temporary-server.log"
            self.log = log
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ]
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            with log.open("ab") as out:
                return subprocess.Popen(
                    guarded(command),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

        def start(self, timeout: float | None = None, wait: bool = True) -> None:
            # Prefect's own start waits its whole timeout even when the server has exited: fail at once instead.
            if self.running:
                if wait:
                    self.wait_ready()
                return
            self.home = Path(os.environ.get("PREFECT_HOME") or project_dir() / ".prefect")
            self.home.mkdir(parents=True, exist_ok=True)
            # One start at a time per Prefect home: two servers starting on a new database would both run its
            # migrations, and one fails ("duplicate column name"), as two commands started together did. Held until
            # the server answers or ends, by a thread of its own: a command that launched it and then failed (bad
            # data) must not keep other commands waiting, even inside a long-lived process (a test session).
            lock = open(self.home / ".temporary-server.lock", "w")
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.port = self.find_available_port()
            try:
                self.server_process = self._run_uvicorn_command()
            except BaseException:
                lock.close()
                raise
            self.running, self.ready = True, False
            atexit.register(self.stop)
            self.deadline = time.monotonic() + (timeout or 120.0)
            threading.Thread(
                target=self._unlock_when_up, args=(self.server_process, lock), daemon=True, name="prefect-server-start"
            ).start()
            if wait:
                self.wait_ready()

        def _unlock_when_up(self, process: subprocess.Popen[Any], lock: Any) -> None:
            try:
                while process.poll() is None and time.monotonic() < self.deadline and not self.answers():
                    time.sleep(0.1)
            finally:
                lock.close()

        def answers(self) -> bool:
            return _healthy(f"{self.api_url}/health")

        def wait_ready(self) -> None:
            """Until the server answers (its start, with a new database its migrations, take seconds)."""
            while not (self.ready or self.answers()):
                code = self.server_process.poll() if self.server_process else -1
                if code is not None or time.monotonic() > self.deadline:
                    self.stop()
                    tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                    raise ServerStartError(
                        f"Prefect's temporary server {'exited' if code is not None else 'did not answer in time'}"
                        f" (log: {self.log}{': ' + tail[0] if tail else ''})"
                    )
                time.sleep(0.1)
            self.ready = True

    instances = SubprocessASGIServer._instances
    if getattr(instances.get(None), "running", False):  # launched already in this process (or a test's earlier command)
        instances[None].start(timeout, wait)
        return instances[None].api_url
    instances.pop(None, None)
    quiet_interrupt_reports()
    server = TemporaryServer()  # registered as the port-less instance: the one Prefect's clients ask for
    server.start(timeout, wait)
    return server.api_url


def abandon_prefect_api() -> None:
    """Stop the temporary server if it was launched but nothing has waited for it yet: the command that launched it
    ended first (bad data, an unreachable store). A server in use stays (a long-lived process reuses it)."""
    if "prefect.server.api.server" not in sys.modules:
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    if getattr(server, "running", False) and not getattr(server, "ready", True):
        server.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Interrupts:
    """Remember the first SIGINT/SIGTERM and raise KeyboardInterrupt for it, once: a second signal during the
    shutdown (a terminal's Ctrl-C reaches every process of the group) must not cut the closing of the runs short."""

    received: int | None = None

    @classmethod
    def install(cls) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, cls._handler)

    @classmethod
    def _handler(cls, signum: int, frame: Any) -> None:
        if cls.received is not None:
            return
        cls.received = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    @classmethod
    def exit_code(cls) -> int:
        return 128 + (cls.received or signal.SIGINT)

    @classmethod
    def name(cls) -> str:
        return signal.Signals(cls.received or signal.SIGINT).name


# Failures that rnnlab reports itself, in one line: interrupts, and a full disk.
REPORTED_BY_RNNLAB = (
    "aborted by a termination signal",
    "aborted by Python system exit call",
    "aborted by an interrupt",
    "interrupted by base exception",
    "KeyboardInterrupt",
    "CellInterrupted",
    "No space left on device",
    "database or disk is full",
    "file write failed",
)


def quiet_interrupt_reports() -> None:
    """An interrupt, a full disk, or an unfit environment (`EnvironmentProblem`, e.g. an experiment that a tracking
    server cannot take) is reported in one line by rnnlab: not also as Prefect's "Crash detected!" or "Task run
    failed" errors and MLflow's database errors, with their tracebacks, for every task, flow and write that it
    stopped (they show with -v)."""
    if verbose():
        return
    from prefect.logging.configuration import ensure_logging_setup  # lazy: Prefect (~1 s), not for --help

    ensure_logging_setup()  # Prefect sets its handlers up on first use: add the filter to them, not to none

    def not_reported_by_rnnlab(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() + (str(error) if error else "")
        reported = isinstance(error, EnvironmentProblem) or EnvironmentProblem.__name__ in text
        return not reported and not any(sign in text for sign in REPORTED_BY_RNNLAB)

    for logger in (logging.getLogger(), logging.getLogger("mlflow")):  # Prefect's console handler is the root's
        for handler in logger.handlers:
            if not_reported_by_rnnlab.__name__ not in {getattr(f, "__name__", "") for f in handler.filters}:
                handler.addFilter(not_reported_by_rnnlab)


def interrupt_once_in_worker() -> None:
    """In a study's worker: the first SIGINT interrupts the cell (its run is closed as KILLED), later ones are
    ignored, so that the study's own SIGINT to its workers does not interrupt that closing."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    quiet_interrupt_reports()
