"""The only module that talks to MLflow: the store, runs and their provenance, batched metrics, artifacts.

Default store: SQLite at <project>/mlruns/mlflow.db with artifacts under <project>/mlruns/artifacts;
MLFLOW_TRACKING_URI overrides it (e.g. an MLflow server).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from rnnlab.env import project_dir

CODE_ROOT = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("rnnlab", "flows", "tasks", "models")
PACKAGES = ("torch", "lightning", "prefect", "mlflow", "sacrebleu", "pandas", "numpy", "pydantic")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_dir() / 'mlruns' / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def client() -> MlflowClient:
    uri = tracking_uri()
    if is_local_store(uri):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(name: str, mlflow: MlflowClient | None = None) -> str:
    mlflow = mlflow or client()
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # With SQLite the artifact root would otherwise be relative to whatever the cwd happens to be.
    location = (project_dir() / "mlruns" / "artifacts" / name).as_uri() if is_local_store(tracking_uri()) else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process between our lookup and create
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def code_version() -> str:
    """Hash of rnnlab's own source files: identifies the code even outside a git checkout."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((CODE_ROOT / package).glob("**/*.py")):
            digest.update(path.relative_to(CODE_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state() -> dict[str, str]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=CODE_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit:
        return {"git.commit": "unknown"}
    return {"git.commit": commit, "git.dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()}


def provenance_tags() -> dict[str, str]:
    import torch

    tags = {"rnnlab.code_version": code_version(), **git_state(), "python": platform.python_version(),
            "host": socket.gethostname(), "pid": str(os.getpid()), "platform": platform.platform(),
            "torch.threads": str(torch.get_num_threads()), "cuda": str(torch.cuda.is_available()).lower()}
    for name in PACKAGES:
        try:
            tags[f"pkg.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    from prefect.runtime import deployment, flow_run

    if flow_run.id:
        tags["prefect.flow_run_id"] = str(flow_run.id)
        tags["prefect.flow_run_name"] = str(flow_run.name)
    if deployment.id:
        tags["prefect.deployment_id"] = str(deployment.id)
        tags["prefect.deployment_name"] = str(deployment.name)
    return tags


def log_params(run_id: str, params: Mapping[str, Any], mlflow: MlflowClient | None = None) -> None:
    mlflow = mlflow or client()
    items = [Param(k, "null" if v is None else str(v)) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        mlflow.log_batch(run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])


def set_tags(run_id: str, tags: Mapping[str, Any], mlflow: MlflowClient | None = None) -> None:
    mlflow = mlflow or client()
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        mlflow.log_batch(run_id, tags=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0, mlflow: MlflowClient | None = None) -> None:
    mlflow = mlflow or client()
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        mlflow.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])


def open_run(experiment: str, run_name: str | None, params: Mapping[str, Any], tags: Mapping[str, str],
             parent_run_id: str | None = None) -> str:
    """Create a RUNNING run with params and provenance; the caller must close it (see `closing`)."""
    mlflow = client()
    exp_id = experiment_id(experiment, mlflow)
    mark_orphans(exp_id, mlflow)
    all_tags = {**provenance_tags(), **tags}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    log_params(run.info.run_id, params, mlflow)
    return run.info.run_id


def close_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status)


@contextmanager
def closing(run_id: str) -> Iterator[str]:
    """FINISHED when the block completes; KILLED on Ctrl-C/SIGTERM; FAILED (with the reason) on any error."""
    try:
        yield run_id
    except BaseException as err:
        killed = not isinstance(err, Exception)  # Ctrl-C, SystemExit, Prefect's TerminationSignal on SIGTERM
        try:
            set_tags(run_id, {"rnnlab.error": f"{type(err).__name__}: {err}"[:5000]})
        finally:
            close_run(run_id, "KILLED" if killed else "FAILED")
        raise
    close_run(run_id, "FINISHED")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_orphans(exp_id: str, mlflow: MlflowClient | None = None) -> list[str]:
    """Runs left RUNNING by a process of this host that no longer exists (SIGKILL, power loss) → KILLED."""
    mlflow = mlflow or client()
    host = socket.gethostname()
    orphans = []
    for run in mlflow.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        pid = tags.get("pid", "")
        if tags.get("host") == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            mlflow.set_tag(run.info.run_id, "rnnlab.error", f"process {pid} ended while the run was RUNNING")
            mlflow.set_terminated(run.info.run_id, "KILLED")
            orphans.append(run.info.run_id)
    return orphans


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    client().log_artifact(run_id, str(path), artifact_path)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    client().log_text(run_id, text, artifact_file)


def download_artifact(run_id: str, path: str, dst: str | Path) -> Path:
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(client().download_artifacts(run_id, path, str(dst)))


def get_run(run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client().get_run(run_id)
    except MlflowException as err:
        raise LookupError(f"no run {run_id!r} in the tracking store {tracking_uri()}: {err.message}") from None


class MlflowMetricsLogger(Logger):
    """A Lightning logger that writes to an existing MLflow run, buffering metrics and sending them in
    batches: one `log_batch` per `flush_every` values or `flush_seconds`, so per-step logging stays cheap
    even against a remote tracking server."""

    def __init__(self, run_id: str, flush_every: int = 500, flush_seconds: float = 15.0):
        super().__init__()
        self.run_id = run_id
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self._client: MlflowClient | None = None
        self.batches_sent = 0

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @property
    def experiment(self) -> MlflowClient:
        if self._client is None:
            self._client = client()
        return self._client

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        pass  # the resolved config is logged as params when the run is opened

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step or 0) for k, v in metrics.items())
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:MAX_METRICS_PER_BATCH], self._buffer[MAX_METRICS_PER_BATCH:]
            self.experiment.log_batch(self.run_id, metrics=batch)
            self.batches_sent += 1
        self._last_flush = time.monotonic()

    @rank_zero_only
    def save(self) -> None:
        pass  # Lightning calls this after every log_metrics: flushing here would undo the batching

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.flush()  # metrics up to a checkpoint are stored before anyone can resume from it

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()  # the run's status is set by whoever opened it, once evaluation is done too


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
