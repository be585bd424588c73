"""Process-wide defaults that must be in place before Prefect, MLflow or Lightning are imported.

Everything is `setdefault`: a user's own environment always wins.
"""

import ctypes
import os
import sys
from pathlib import Path


def project_dir() -> Path:
    """The project whose stores (mlruns/, .prefect/, .cache/) a command uses: $RNNLAB_HOME, else the cwd."""
    return Path(os.environ.get("RNNLAB_HOME") or os.getcwd()).resolve()


# What a user cannot act on stays off the console unless asked for (`rnnlab … -v`): Prefect's per-task INFO lines,
# MLflow's INFO logs and artifact-download progress bars. Warnings and errors still show.
QUIET = {"PREFECT_LOGGING_LEVEL": "WARNING", "MLFLOW_LOGGING_LEVEL": "WARNING",
         "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
VERBOSE = {"PREFECT_LOGGING_LEVEL": "INFO", "MLFLOW_LOGGING_LEVEL": "INFO", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true",
           "RNNLAB_VERBOSE": "1"}


def verbose() -> bool:
    return os.environ.get("RNNLAB_VERBOSE") == "1"


def configure(verbose: bool = False) -> Path:
    """Set the defaults below (a user's own environment wins, except over `verbose`); worker processes inherit them."""
    home = project_dir()
    home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "DO_NOT_TRACK": "true",  # MLflow honours only the string "true"
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MPLCONFIGDIR": str(home / ".cache" / "matplotlib"),
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in {**defaults, **QUIET}.items():
        os.environ.setdefault(key, value)
    if verbose:  # asked for on the command line: over any quiet level inherited from the environment
        os.environ.update(VERBOSE)
    keep_freed_memory()
    return home


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


def pause_gc_in_spawned_worker() -> None:
    """In a process that multiprocessing spawns (a study's cell worker), stop the garbage collector until its start-up
    is over: importing torch, Lightning and MLflow builds millions of objects, and the full collections that this
    triggers along the way took ~1 s of its ~5 s start. The worker's initializer freezes the result and re-enables it
    (`flows.study.start_cell_worker`; a cell re-enables it too, for workers that other pools spawn). Runs at import of
    the main module, which a spawned child imports first."""
    if sys.orig_argv[-1:] == ["--multiprocessing-fork"]:  # how multiprocessing starts the interpreter it spawns
        import gc

        gc.disable()


def die_with_parent() -> None:
    """In a worker process: be killed when the process that started it dies (even by SIGKILL), so an interrupted
    study leaves no orphan training on. Linux only; elsewhere a no-op."""
    import signal

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
