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
