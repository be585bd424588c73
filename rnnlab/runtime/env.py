"""Process-wide defaults that must be in place before Prefect, MLflow or Lightning are imported.

Everything is `setdefault`: a user's own environment always wins.
"""

import contextlib
import ctypes
import errno
import gc
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


class EnvironmentProblem(RuntimeError):
    """Something outside rnnlab's input is unfit (an unreachable tracking server, an unwritable or corrupt store, a
    full disk); the message names it and says what to do. Reported as one line, exit 2."""


CODE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: rnnlab/runtime/env.py → rnnlab/runtime → rnnlab → here
CODE_PACKAGES = ("rnnlab", "flows", "tasks", "models")


def git_output(*args: str) -> str | None:
    """What `git ARGS` prints in the code's folder (stripped), or None where git is missing or refuses (no checkout)."""
    import subprocess  # lazy: only the commands that record or print the code's version ask git

    try:
        done = subprocess.run(["git", *args], cwd=CODE_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_files() -> list[Path]:
    """rnnlab's own source files, in a fixed order: what identifies the code (with or without a git checkout)."""
    return [path for package in CODE_PACKAGES for path in sorted((CODE_ROOT / package).glob("**/*.py"))]


def project_dir() -> Path:
    """The project whose stores (mlruns/, .prefect/, .cache/) a command uses: $RNNLAB_HOME, else the nearest
    directory from the current one upwards that is a project (`is_project`), as git finds its checkout; else the
    current directory, where a new project begins."""
    home = os.environ.get("RNNLAB_HOME")
    if home:
        return Path(home).resolve()
    here = Path(os.getcwd()).resolve()
    return next((folder for folder in (here, *here.parents) if is_project(folder)), here)


# What marks a project directory (written in `rnnlab --help`): its MLflow store, the reserve that every command which
# writes there leaves (RESERVE, below), or rnnlab's own checkout. Not `.prefect/` or `mlruns/` alone: Prefect keeps
# ~/.prefect by default and MLflow makes mlruns/ wherever it runs, so they would make $HOME, or some other tool's
# folder, the project of everything below it.
PROJECT_MARKS = ("mlruns/mlflow.db", ".rnnlab-reserve", "pyproject.toml (of rnnlab)")


def is_project(folder: Path) -> bool:
    """Whether `folder` holds a project's marks (PROJECT_MARKS)."""
    # os.path.isfile: False, not an error, in a folder this user may not enter
    if os.path.isfile(folder / "mlruns" / "mlflow.db") or os.path.isfile(folder / RESERVE):
        return True
    pyproject = folder / "pyproject.toml"
    if not os.path.isfile(pyproject):
        return False
    import tomllib  # lazy: only where a pyproject.toml is met

    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project")
    except (OSError, ValueError):  # unreadable, not UTF-8, not TOML: not rnnlab's
        return False
    return isinstance(project, dict) and project.get("name") == "rnnlab"


# What a user cannot act on stays off the console unless asked for (`rnnlab … -v`): Prefect's per-task INFO lines,
# MLflow's INFO logs and artifact-download progress bars. Warnings and errors still show.
# Room a run needs in the project directory: Prefect's database, the MLflow store, checkpoints. Below it a command
# stops before it starts, instead of failing halfway (a 3 MB disk: two minutes of Prefect server tracebacks).
MIN_FREE_MB = 50


def check_project() -> Path:
    """The project directory can be written and has room for a run."""
    home = project_dir()
    try:
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as err:
        raise EnvironmentProblem(
            f"the project directory {home} is not writable ({err.strerror}): runs, checkpoints "
            "and caches are written there; run rnnlab from a writable directory, or set "
            "RNNLAB_HOME to one"
        ) from None
    free_mb = shutil.disk_usage(home).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise EnvironmentProblem(
            f"no space left on device: {free_mb:.1f} MB free on the disk of {home}, and a run "
            f"needs at least {MIN_FREE_MB} MB (Prefect's database, the MLflow store, "
            "checkpoints); free some space, or set RNNLAB_HOME to a directory on another disk"
        )
    reserve = home / RESERVE
    if not reserve.exists() or reserve.stat().st_size < RESERVE_BYTES:
        with open(reserve, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)  # written, not sparse: the blocks must really be taken
    return home


# Space kept in reserve, so that when the disk fills up during a run there is still room to record that: the run
# closed as FAILED with its reason (SQLite needs room for its journal even to mark a run). Released on a full disk,
# taken again by the next command's check.
RESERVE = ".rnnlab-reserve"
RESERVE_BYTES = 8 << 20


def release_reserve() -> None:
    (project_dir() / RESERVE).unlink(missing_ok=True)


def disk_full(err: BaseException | None) -> str | None:
    """What ran out of space, in a line, if `err` (or what caused it) is a full disk: the OS's ENOSPC, SQLite's
    "database or disk is full", torch's "file write failed"."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return f"{err.strerror}: {err.filename2 or err.filename}" if err.filename else err.strerror
        for line in str(err).splitlines():
            if any(
                sign in line for sign in ("No space left on device", "database or disk is full", "file write failed")
            ):
                return line.strip()[:200]
        err = err.__cause__ or err.__context__
    return None


QUIET = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
VERBOSE = {
    "PREFECT_LOGGING_LEVEL": "INFO",
    "MLFLOW_LOGGING_LEVEL": "INFO",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true",
    "RNNLAB_VERBOSE": "1",
}


def verbose() -> bool:
    return os.environ.get("RNNLAB_VERBOSE") == "1"


def configure(verbose: bool = False, read_only: bool = False) -> Path:
    """Set the defaults below (a user's own environment wins, except over `verbose`); worker processes inherit them.
    `read_only`: a command that only reads the project (compare, report, ui) keeps the libraries' own state
    (Prefect's home, matplotlib's cache) out of it, so it creates nothing there and works where it cannot write."""
    home = project_dir()
    if home.exists() and not home.is_dir():
        raise EnvironmentProblem(
            f"the project directory {home} is a file, not a directory (RNNLAB_HOME, else the "
            "current directory): set RNNLAB_HOME to a directory"
        )
    # Found once (by its marks, upwards from the current directory), then the same for this process and the ones it
    # starts (servers, workers), wherever they run from.
    os.environ.setdefault("RNNLAB_HOME", str(home))
    if not read_only:
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot create the project directory {home} ({err.strerror}): set RNNLAB_HOME to a writable directory"
            ) from None
    state = Path(tempfile.gettempdir()) / f"rnnlab-{os.getuid()}" if read_only else home
    defaults = {
        "PREFECT_HOME": str(state / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        # The leases on the cells' claims (rnnlab/runtime/cell_claim.py) in files under PREFECT_HOME, not in the
        # server's memory: a server that restarts still knows who holds which cell.
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
        "DO_NOT_TRACK": "true",  # MLflow honours only the string "true"
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MPLCONFIGDIR": str(state / ".cache" / "matplotlib"),
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in {**defaults, **QUIET}.items():
        os.environ.setdefault(key, value)
    with contextlib.suppress(OSError):  # Prefect makes its home at import, but not its parents: it warns instead
        Path(os.environ["PREFECT_HOME"]).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    share_credentials()
    if os.environ.get("PREFECT_API_URL"):
        flow_heartbeats()
    if verbose:  # asked for on the command line: over any quiet level inherited from the environment
        os.environ.update(VERBOSE)
    keep_freed_memory()
    return home


# A flow run on a Prefect server beats every HEARTBEAT_SECONDS (Prefect's own default is 180 s; 30 s is its minimum);
# the server's zombie automation (rnnlab/runtime/automations.py) marks it CRASHED after ZOMBIE_SECONDS without one,
# three beats missed, as Prefect's guide calibrates it. Then its MLflow runs are closed (flows/dead_runs.py).
HEARTBEAT_SECONDS = 30
ZOMBIE_SECONDS = 3 * HEARTBEAT_SECONDS


def flow_heartbeats() -> None:
    """Every flow run of this process, and of the processes it starts (a serve process's or a pool worker's flow
    runs, a study's cell workers), beats every HEARTBEAT_SECONDS. For a Prefect server only: in ephemeral mode the
    server dies with the process, and nothing watches the beats. Before Prefect is imported (it reads its settings
    once). A user's own setting wins; one over ZOMBIE_SECONDS / 3 gets live runs marked CRASHED by the automation."""
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))


# Credentials for servers that ask for them (`rnnlab server start` with credentials) are the clients' own variables,
# which MLflow's and Prefect's clients read in every process: each command, cell worker, Prefect worker and the flow
# runs it starts passes them without rnnlab's help.
MLFLOW_USER, MLFLOW_PASSWORD, PREFECT_AUTH = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "PREFECT_API_AUTH_STRING",
)
USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*)(?::(?P<password>[^/@\s]*))?@")


def without_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """`url` without its `user:password@`, and the user and password it held (URL-decoded), None where absent."""
    from urllib.parse import unquote

    found = USERINFO.match(url)
    if not found:
        return url, None, None
    password = found["password"]
    return (
        found["scheme"] + url[found.end() :],
        unquote(found["user"]),
        unquote(password) if password is not None else None,
    )


def share_credentials() -> None:
    """Credentials in one place only, and never inside a URL that something logs:
    - a `user:password@` in MLFLOW_TRACKING_URI or PREFECT_API_URL moves to the client's own variables
      (MLFLOW_TRACKING_USERNAME/PASSWORD, PREFECT_API_AUTH_STRING), unless those are set already, and leaves the URL:
      the libraries log their URLs (errors, retries), and rnnlab prints them;
    - either pair serves both servers when the other is not set (one team login: `rnnlab server start` gives both
      servers the same), except beside a PREFECT_API_KEY (Prefect Cloud), which an auth string would override."""
    for variable in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        url, user, password = without_userinfo(os.environ.get(variable, ""))
        if user is None:
            continue
        os.environ[variable] = url
        if variable == "MLFLOW_TRACKING_URI":
            os.environ.setdefault(MLFLOW_USER, user)
            if password is not None:
                os.environ.setdefault(MLFLOW_PASSWORD, password)
        elif password is not None:
            os.environ.setdefault(PREFECT_AUTH, f"{user}:{password}")
    user, password = os.environ.get(MLFLOW_USER), os.environ.get(MLFLOW_PASSWORD)
    auth = os.environ.get(PREFECT_AUTH)
    if user and password and not auth and not os.environ.get("PREFECT_API_KEY"):
        os.environ[PREFECT_AUTH] = f"{user}:{password}"
    elif auth and ":" in auth and not user and not password:
        os.environ[MLFLOW_USER], os.environ[MLFLOW_PASSWORD] = auth.split(":", 1)


def secrets() -> list[str]:
    """The secret values this process holds (passwords, auth strings, the database's), longest first."""
    values = {os.environ.get(name, "") for name in (MLFLOW_PASSWORD, PREFECT_AUTH, "PGPASSWORD", "PREFECT_API_KEY")}
    auth = os.environ.get(PREFECT_AUTH, "")
    values.add(auth.partition(":")[2])
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` (a message, an error to record) without credentials: a URL's `user:password@` becomes `***@` (a user
    alone stays), and any secret value of this process's environment `***`."""
    text = USERINFO.sub(lambda m: m[0] if m["password"] is None else f"{m['scheme']}***@", text)
    for secret in secrets():
        text = text.replace(secret, "***")
    return text


_TUNED = False


def keep_freed_memory() -> None:
    """Keep memory that training frees in the process instead of handing it back to the OS.

    By default glibc serves big blocks with mmap and unmaps them on free, so every step's large tensors (the
    logits and their gradients) come back as fresh pages: ~17,000 page faults per step of the small PTB LSTM,
    5-15% of its step time on 2 cores, varying from run to run. Serving them from the heap and not trimming it
    removes that (measured: benchmarks/bench_lm_speed.py). glibc (Linux) only; elsewhere nothing changes."""
    global _TUNED
    if _TUNED or not sys.platform.startswith("linux"):
        return
    _TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # another C library (musl): leave it alone
        pass


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off while a command imports its libraries (MLflow, SQLAlchemy, pandas, SciPy): they
    build ~300,000 objects that live until exit, and the full collections that this triggers along the way found
    nothing to free and took ~0.5 s of `rnnlab compare`'s ~2.5 s (`benchmarks/bench_cli_start.py`)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pause_gc_in_spawned_worker() -> None:
    """In a process that multiprocessing spawns (a study's cell worker), stop the garbage collector until its start-up
    is over: importing torch, Lightning and MLflow builds millions of objects, and the full collections that this
    triggers along the way took ~1 s of its ~5 s start. The worker's initializer freezes the result and re-enables it
    (`rnnlab.runtime.workers.start_cell_worker`; a cell re-enables it too, for workers that other pools spawn). Runs
    at import of the main module, which a spawned child imports first."""
    if sys.orig_argv[-1:] == ["--multiprocessing-fork"]:  # how multiprocessing starts the interpreter it spawns
        gc.disable()
        # And die with the study from now on, not only once the worker's initializer runs after its imports: a
        # study killed during those seconds left a worker that went on to train and record a cell on its own.
        die_with_parent()
        parent = os.environ.get(PARENT_PID)
        if parent and os.getppid() != int(parent):  # the study died before the line above took effect
            os._exit(1)


PARENT_PID = "RNNLAB_PARENT_PID"  # set by a study for the workers it spawns


def expect_workers() -> None:
    """In a study's process, before it spawns workers: tell them whose children they are."""
    os.environ[PARENT_PID] = str(os.getpid())


def die_with_parent() -> None:
    """In a worker process: be killed when the process that started it dies (even by SIGKILL), so an interrupted
    study leaves no orphan training on. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine still exists (a zombie, exited but not reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True
