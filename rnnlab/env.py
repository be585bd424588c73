"""Process-wide defaults that must be in place before Prefect, MLflow or Lightning are imported.

Everything is `setdefault`: a user's own environment always wins.
"""

import os
from pathlib import Path


def project_dir() -> Path:
    """The project whose stores (mlruns/, .prefect/, .cache/) a command uses: $RNNLAB_HOME, else the cwd."""
    return Path(os.environ.get("RNNLAB_HOME") or os.getcwd()).resolve()


def configure() -> Path:
    home = project_dir()
    defaults = {
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "DO_NOT_TRACK": "true",  # MLflow honours only the string "true"
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MPLCONFIGDIR": str(home / ".cache" / "matplotlib"),
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    return home


def die_with_parent() -> None:
    """In a worker process: be killed when the process that started it dies (even by SIGKILL), so an interrupted
    study leaves no orphan training on. Linux only; elsewhere a no-op."""
    import ctypes
    import signal
    import sys

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
