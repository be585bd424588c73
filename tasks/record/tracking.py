"""The only module that talks to MLflow: the store, runs and their provenance, batched metrics, artifacts.

Default store: SQLite at <project>/mlruns/mlflow.db with artifacts under <project>/mlruns/artifacts;
MLFLOW_TRACKING_URI overrides it (e.g. an MLflow server).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import random
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rnnlab.runtime import store
from rnnlab.runtime.env import (
    CODE_ROOT,
    EnvironmentProblem,
    disk_full,
    git_output,
    pid_alive,
    project_dir,
    redact,
    release_reserve,
    source_files,
)
from rnnlab.runtime.store import check_local_store, is_local_store, store_path, tracking_uri

PACKAGES = ("torch", "lightning", "prefect", "mlflow", "sacrebleu", "pandas", "numpy", "pydantic")


_READY: set[str] = set()


def import_store() -> None:
    """Import the code of the store that `client()` opens (MLflow imports it only then): SQLAlchemy's for SQLite."""
    if is_local_store(tracking_uri()):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def client() -> MlflowClient:
    uri = tracking_uri()
    if is_local_store(uri) and uri not in _READY:
        check_local_store(uri, write=not store.READ_ONLY)
        if store.READ_ONLY and not store_path(uri).exists():
            raise LookupError(
                f"no tracking store at {store_path(uri)}: nothing has been run in this project yet "
                "(or set MLFLOW_TRACKING_URI, or RNNLAB_HOME to the project that has one)"
            )
        import_store()  # its import, ~0.7 s, need not hold the lock
        try:
            if store.READ_ONLY:
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            else:  # two processes opening a new SQLite store at once would both run its migrations: one at a time
                with open(store_path(uri).parent / ".mlflow.db.lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as err:
            if "sqlalchemy" not in type(err).__module__ and "database" not in str(err).lower():
                raise
            raise EnvironmentProblem(
                f"MLflow store {store_path(uri)} cannot be opened ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:300]}); move it aside to start an empty store, or "
                "restore it from a backup"
            ) from None
        _READY.add(uri)
    return MlflowClient(tracking_uri=uri)


# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces): rnnlab's are model development.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str, mlflow: MlflowClient | None = None, description: str | None = None) -> str:
    """The experiment `name` (created if new), tagged as model development, with `description` (a study's
    question) as the description the UI shows above its runs. Through a tracking server, an experiment whose
    artifacts would go to a local path is refused (see `check_artifact_root`)."""
    mlflow = mlflow or client()
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        # With SQLite the artifact root would otherwise be relative to whatever the cwd happens to be; a tracking
        # server roots the experiment where it serves artifacts (mlflow-artifacts:/).
        location = (project_dir() / "mlruns" / "artifacts" / name).as_uri() if is_local_store(tracking_uri()) else None
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another process between our lookup and create
            if mlflow.get_experiment_by_name(name) is None:
                raise
        found = mlflow.get_experiment_by_name(name)
    check_artifact_root(found)
    wanted = {**EXPERIMENT_KIND, **({"mlflow.note.content": description} if description else {})}
    for key, value in wanted.items():  # also on experiments recorded before rnnlab set them
        if found.tags.get(key) != value:
            try:
                mlflow.set_experiment_tag(found.experiment_id, key, value)
            except MlflowException:  # two processes setting it at once: the store keeps one, the same
                if mlflow.get_experiment(found.experiment_id).tags.get(key) != value:
                    raise
    return found.experiment_id


def local_artifact_root(location: str) -> bool:
    """A `file:` URI or a bare path: a place on the disk of whichever machine writes the artifacts."""
    if location.startswith("file:"):
        return True
    return bool(location) and "://" not in location and not location.startswith("mlflow-artifacts:")


def check_artifact_root(experiment: Any) -> None:
    """Recording through a tracking server (http or https), an experiment must not keep its artifacts on a local
    path: MLflow's client writes them straight to that path on its own machine (the experiment's root was fixed when
    it was created, e.g. by a command on the server's own store), so a run's checkpoints and plots would land on
    each worker's disk, out of the server's reach. An experiment's root cannot be changed; a new experiment under
    the old name can take the server's (mlflow-artifacts:/) once the old one is renamed; deleting it would not free
    the name (MLflow keeps a deleted experiment's name until `mlflow gc` purges it from the database)."""
    uri = tracking_uri()
    location = experiment.artifact_location or ""
    if not uri.startswith(("http://", "https://")) or not local_artifact_root(location):
        return
    raise EnvironmentProblem(
        f"experiment '{experiment.name}' keeps its artifacts at {location}, a local path, which a command recording "
        f"through the tracking server {uri} would write on its own machine; record under another name (the study's "
        "or the run config's experiment), or rename the old experiment so that rnnlab creates a new one under this "
        f"name on the server's artifact store: MLFLOW_TRACKING_URI={uri} mlflow experiments rename --experiment-id "
        f"{experiment.experiment_id} --new-name {shlex.quote(experiment.name + ' (local artifacts)')} (its runs stay "
        "with it)"
    )


def code_version() -> str:
    """Hash of rnnlab's own source files: identifies the code even outside a git checkout."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(CODE_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state() -> dict[str, str]:
    commit = git_output("rev-parse", "--verify", "HEAD")
    if not commit:
        return {"git.commit": "unknown"}
    return {
        "git.commit": commit,
        "git.dirty": str(bool(git_output("status", "--porcelain", "--untracked-files=no"))).lower(),
    }


def provenance_tags() -> dict[str, str]:
    import torch  # lazy: torch (~1.3 s), which `rnnlab compare` and `report` never need

    from tasks.record import hardware  # lazy: imports torch

    tags = {
        "rnnlab.code_version": code_version(),
        **git_state(),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "platform": platform.platform(),
        "torch.threads": str(torch.get_num_threads()),
        "cuda": str(torch.cuda.is_available()).lower(),
        "torch.deterministic": str(torch.are_deterministic_algorithms_enabled()).lower(),
        "cpu": hardware.cpu_model(),
        "cpu.count": str(os.cpu_count()),
        # Which kernels torch runs (AVX2, AVX512, ...): float results differ between them, so a result
        # reproduces bit for bit only on the same capability (and thread count).
        "cpu.capability": torch.backends.cpu.get_cpu_capability(),
        # The CPU's bf16 instructions (amx_bf16, avx512_bf16): whether bf16-mixed runs natively or emulated.
        "cpu.bf16": ",".join(hardware.native_bf16()) or "none",
        # Every fit flushes denormal floats to zero first (tasks.record.hardware.flush_denormals).
        "torch.flush_denormal": "true",
    }
    # The runs table's Source column: the code that made the run (and its commit, where there is one).
    tags["mlflow.source.type"] = "LOCAL"
    tags["mlflow.source.name"] = f"rnnlab {tags['rnnlab.code_version']}"
    if tags.get("git.commit", "unknown") != "unknown":
        tags["mlflow.source.git.commit"] = tags["git.commit"]
    if torch.cuda.is_available():
        tags["gpu"] = torch.cuda.get_device_name()
    for name in PACKAGES:
        try:
            tags[f"pkg.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    from prefect.runtime import deployment, flow_run  # lazy: Prefect (~1 s), which `rnnlab compare` never needs

    if flow_run.id:
        tags["prefect.flow_run_id"] = str(flow_run.id)
        tags["prefect.flow_run_name"] = str(flow_run.name)
    if deployment.id:
        tags["prefect.deployment_id"] = str(deployment.id)
        tags["prefect.deployment_name"] = str(deployment.name)
    return tags


# MLflow's SQL store keeps ±inf as ±max-float (1.7976931348623157e308): read such a value back as the inf it was.
STORED_INF = sys.float_info.max


def as_logged(value: float) -> float:
    """A metric value as it was logged: ±max-float from the store is ±inf again."""
    return math.copysign(math.inf, value) if abs(value) >= STORED_INF else value


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of a metric, in step order, infinities restored."""
    points = sorted(client().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [(m.step, as_logged(m.value)) for m in points]


def param_value(value: Any) -> str:
    """A param as the UI shows it: JSON (null, true, [1, 2], {"a": null}), with a string written bare (`lstm`, not
    `"lstm"`), as MLflow's own autologging writes them. Never Python's repr (None, True, {'a': None})."""
    return value if isinstance(value, str) else json.dumps(value)


def param_from_text(text: str) -> Any:
    """A param's value from its text, as `param_value` wrote it: JSON read back (`null` → None, `0.25` → 0.25,
    `["valid"]` → a list), anything else the string it was (`lstm`). A string that reads as JSON itself (a corpus
    named `2024`) comes back as what it reads as: the API keeps the config's text fields as text
    (rnnlab/api/results.py)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return text if isinstance(value, str) else value


def log_params(run_id: str, params: Mapping[str, Any], mlflow: MlflowClient | None = None) -> None:
    mlflow = mlflow or client()
    # MlflowClient.log_batch splits a batch into the chunks the store accepts
    mlflow.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])


# MLflow's SQL store checks whether a row exists and then inserts it (an experiment's dataset, a run's tag set by
# `set_tag`): another process inserting the same row between the two makes the insert fail on the table's unique key.
# The store raises that as an MlflowException carrying the database's words (SQLite's, PostgreSQL's, MySQL's); a
# tracking server sends the same words back, and its REST client raises them as "BAD_REQUEST: (sqlite3.IntegrityError)
# UNIQUE constraint failed: ..." (measured against `mlflow server`; 400 is not among the codes the client retries).
UNIQUE_KEY_ERRORS = (
    "UNIQUE constraint failed",
    "duplicate key value violates unique constraint",
    "Duplicate entry",
    "IntegrityError",
)


def lost_a_race(err: Exception) -> bool:
    """`err` says that another process inserted the same row first: the row is there now."""
    return isinstance(err, MlflowException) and any(words in str(err) for words in UNIQUE_KEY_ERRORS)


def retrying_races(write: Any, attempts: int = 5) -> Any:
    """`write()`, again after losing a race to insert the same row: its transaction was rolled back, and on the next
    try the store finds the row and uses it. A few tries, a short random wait between them, in case a third process
    inserts a row of the same write meanwhile."""
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except MlflowException as err:
            if attempt == attempts or not lost_a_race(err):
                raise
            time.sleep(random.uniform(0.0, 0.05 * attempt))


def log_datasets(run_id: str, inputs: list[dict[str, str]], mlflow: MlflowClient | None = None) -> None:
    """The run's data as MLflow datasets (the runs table's Dataset column and its filter): one per split, each
    {"name", "digest", "source", "context"} (context: train, valid or test).

    A dataset is a row of the experiment that every run using it links to: the cells of a study, starting together
    in a new experiment, all try to create it at once (see `retrying_races`)."""
    mlflow = mlflow or client()
    datasets = [
        DatasetInput(
            Dataset(name=i["name"], digest=i["digest"], source_type="local", source=json.dumps({"uri": i["source"]})),
            tags=[InputTag("mlflow.data.context", i["context"])],
        )
        for i in inputs
    ]
    retrying_races(lambda: mlflow.log_inputs(run_id, datasets=datasets))


def set_tags(run_id: str, tags: Mapping[str, Any], mlflow: MlflowClient | None = None) -> None:
    mlflow = mlflow or client()
    mlflow.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def storable(metrics: Mapping[str, float], curve: bool = False) -> dict[str, float]:
    """The metrics to store. A perplexity that overflowed (inf: the model gives the data ~zero probability) is left
    out, since the store would keep it as max-float (an axis to 1e308 in the UI); the NLL beside it, in nats per
    token, carries the same fact as a finite number (and the comparison restores the inf from it). On a curve, no
    value that is not finite is stored: the step where a run diverged is its `diverged_step`, and the reason is in
    its `rnnlab.outcome_reason` ("the training loss became inf at step 12")."""
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v)) or not (curve or k.endswith("ppl"))}


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0, mlflow: MlflowClient | None = None) -> None:
    """Summaries (final scores, timings) go at step 0, the default: MLflow's charts show a metric whose last step
    is 0 as a bar per run, and one with later steps as a curve (a summary at the last training step was a one-dot
    line). Curves are logged per step by `MlflowMetricsLogger`."""
    mlflow = mlflow or client()
    now = int(time.time() * 1000)
    mlflow.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in storable(metrics).items()])


def open_run(
    experiment: str,
    run_name: str | None,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> str:
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
        full = disk_full(err)
        if full:
            release_reserve()  # room to record it
        # On a full disk even this may fail: the error that matters is the disk's (the next command marks the run)
        with contextlib.suppress(Exception) if full else contextlib.nullcontext():
            try:
                set_tags(run_id, {"rnnlab.error": redact(f"{type(err).__name__}: {err}")[:5000]})
            finally:
                close_run(run_id, "KILLED" if killed else "FAILED")
        raise
    close_run(run_id, "FINISHED")


def mark_orphans(exp_id: str | None = None, mlflow: MlflowClient | None = None) -> list[str]:
    """Runs (of one experiment, or all) left RUNNING by a process of this host that no longer exists (SIGKILL, a
    full disk that refused even the run's closing, power loss) → KILLED.

    The local SQLite store only: its runs are this machine's. A tracking server's runs come from many machines, and a
    host name and a pid do not tell them apart (containers of one image share a host name; a pid of another machine
    means nothing here): there a dead machine's runs are closed by the Prefect server's automations, once its flow
    run stops sending heartbeats (rnnlab/runtime/automations.py, flows/dead_runs.py)."""
    if not is_local_store(tracking_uri()):
        return []
    mlflow = mlflow or client()
    host = socket.gethostname()
    orphans = []
    experiments = [exp_id] if exp_id else [e.experiment_id for e in mlflow.search_experiments(max_results=50000)]
    for run in mlflow.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        pid = tags.get("pid", "")
        if tags.get("host") == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            # The cells of a study opening their runs together all sweep the same orphan at once: they write the
            # same tag and status, and the one that loses the race to insert the tag writes it again (an update).
            retrying_races(
                lambda run_id=run.info.run_id, pid=pid: mlflow.set_tag(
                    run_id, "rnnlab.error", f"process {pid} ended while the run was RUNNING"
                )
            )
            mlflow.set_terminated(run.info.run_id, "KILLED")
            orphans.append(run.info.run_id)
    return orphans


def finished_run(experiment: str, cell_key: str) -> dict[str, Any] | None:
    """The latest FINISHED run of a study cell with this identity (config, data checksum, code version), if any."""
    mlflow = client()
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = mlflow.search_runs(
        [found.experiment_id],
        max_results=1,
        order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`rnnlab.cell_key` = '{cell_key}' and attributes.status = 'FINISHED'",
    )
    if not runs:
        return None
    run = runs[0]
    return {
        "run_id": run.info.run_id,
        "experiment": experiment,
        "status": "FINISHED",
        "reused": True,
        "start_time": run.info.start_time,
        "outcome": run.data.tags.get("rnnlab.outcome", "trained"),
        "diverged": run.data.tags.get("rnnlab.diverged") == "true",
        "metrics": {k: as_logged(v) for k, v in run.data.metrics.items()},
    }


def study_runs(experiment: str, parent_run_id: str | None = None):
    """(the study execution's parent run, a DataFrame of every cell run of the study) via search_runs."""
    found = client().get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no study '{experiment}' in the tracking store {tracking_uri()}")
    if parent_run_id is None:
        parents = client().search_runs(
            [found.experiment_id],
            "tags.`rnnlab.role` = 'study'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if not parents:
            raise LookupError(f"study '{experiment}' has no recorded execution in {tracking_uri()}")
        parent = parents[0]
    else:
        parent = get_run(parent_run_id)
        if parent.info.experiment_id != found.experiment_id or parent.data.tags.get("rnnlab.role") != "study":
            raise LookupError(f"run {parent_run_id} is not an execution of study '{experiment}'")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri())  # for the fluent search_runs, the one that returns a DataFrame
    try:
        cells = mlflow.search_runs(
            [found.experiment_id], "tags.`rnnlab.role` = 'cell'", output_format="pandas", max_results=50000
        )
    finally:
        mlflow.set_tracking_uri(previous)  # set_tracking_uri also sets the environment variable: put it back
    for column in cells.columns:
        if column.startswith("metrics."):
            cells[column] = cells[column].map(as_logged, na_action="ignore")
    return parent, cells


def trial_runs(experiment: str, search: str) -> pd.DataFrame:
    """The finished trial runs of one search (tag rnnlab.search), over every execution that ran some of them."""
    found = client().get_experiment_by_name(experiment)
    rows = []
    for run in client().search_runs(
        [found.experiment_id],
        f"tags.`rnnlab.role` = 'trial' and tags.`rnnlab.search` = '{search}' and attributes.status = 'FINISHED'",
        max_results=50000,
    ):
        rows.append(
            {
                "run_id": run.info.run_id,
                "arm": run.data.tags.get("rnnlab.arm"),
                "label": run.data.tags.get("rnnlab.variant"),
                "trial": int(run.data.tags.get("rnnlab.trial", -1)),
                "outcome": run.data.tags.get("rnnlab.outcome"),
                "vocab": run.data.tags.get("data.vocab_size", run.data.tags.get("data.tgt_vocab")),
                **{f"metrics.{k}": as_logged(v) for k, v in run.data.metrics.items()},
                **{f"params.{k}": v for k, v in run.data.params.items()},
            }
        )
    return pd.DataFrame(rows)


def role_run(experiment: str, role: str, run_id: str | None = None):
    """The latest run of an experiment with tag rnnlab.role=`role` (or the run `run_id`, checked), None if none."""
    found = client().get_experiment_by_name(experiment)
    if found is None:
        return None
    if run_id is not None:
        run = get_run(run_id)
        return (
            run if run.info.experiment_id == found.experiment_id and run.data.tags.get("rnnlab.role") == role else None
        )
    runs = client().search_runs(
        [found.experiment_id], f"tags.`rnnlab.role` = '{role}'", max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def running_cells(experiment: str) -> list[Any]:
    mlflow = client()
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow.search_runs(
        [found.experiment_id], "attributes.status = 'RUNNING' and tags.`rnnlab.role` = 'cell'", max_results=1000
    )


def runs_of_flow_run(flow_run_id: str) -> list[Any]:
    """The RUNNING runs that a Prefect flow run opened, in any experiment: those tagged with its id (a study's parent
    run and cells, a training run), and the RUNNING children of any run so tagged (a cell whose worker ran outside the
    flow run's context). Children first, so that a parent is closed only after its cells."""
    mlflow = client()
    experiments = [e.experiment_id for e in mlflow.search_experiments(max_results=50000)]
    if not experiments:
        return []
    tagged = mlflow.search_runs(experiments, f"tags.`prefect.flow_run_id` = '{flow_run_id}'", max_results=50000)
    found = {run.info.run_id: run for run in tagged if run.info.status == "RUNNING"}
    children = {}
    for parent in (run for run in tagged if "mlflow.parentRunId" not in run.data.tags):  # a study's parent run
        for run in mlflow.search_runs(
            experiments,
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'RUNNING'",
            max_results=50000,
        ):
            children[run.info.run_id] = run
    return [*children.values(), *(run for run_id, run in found.items() if run_id not in children)]


def mark_killed(run_id: str, reason: str) -> None:
    mlflow = client()
    try:
        mlflow.set_tag(run_id, "rnnlab.error", reason)
        mlflow.set_terminated(run_id, "KILLED")
    except Exception:
        # Its own process may be closing it at this very moment (a worker stopped with its pool): both then write
        # the same tag, and the store refuses the second (a unique-key error). Closed by its owner is closed.
        if mlflow.get_run(run_id).info.status == "RUNNING":
            raise


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    client().log_artifact(run_id, str(path), artifact_path)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    client().log_text(run_id, text, artifact_file)


def download_artifact(run_id: str, path: str, dst: str | Path) -> Path:
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(client().download_artifacts(run_id, path, str(dst)))


def get_run(run_id: str):
    try:
        return client().get_run(run_id)
    except MlflowException as err:
        raise LookupError(f"no run {run_id!r} in the tracking store {tracking_uri()}: {err.message}") from None


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
