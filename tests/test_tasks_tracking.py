"""MLflow conventions: SQLite store in the project, provenance on every run, batched metrics, no run left RUNNING."""

import subprocess

import pytest

from tasks.record import tracking
from tasks.record.metrics_logger import MlflowMetricsLogger
from tasks.record.tracking import closing, open_run


def new_run(**tags) -> str:
    return open_run("tracking-tests", None, {"train.lr": 20.0, "train.clip_norm": None}, tags)


def test_default_store_is_sqlite_inside_the_project_mlruns():
    uri = tracking.tracking_uri()
    assert uri.startswith("sqlite:///") and uri.endswith("/mlruns/mlflow.db")


def test_a_run_records_params_and_provenance():
    run = tracking.client().get_run(new_run(**{"data.checksum": "abc"}))
    assert run.data.params == {"train.lr": "20.0", "train.clip_norm": "null"}
    tags = run.data.tags
    assert tags["data.checksum"] == "abc"
    assert len(tags["git.commit"]) == 40 or tags["git.commit"] == "unknown"
    assert len(tags["rnnlab.code_version"]) == 16
    for package in ("torch", "lightning", "prefect", "mlflow"):
        assert tags[f"pkg.{package}"]
    assert run.info.artifact_uri.startswith("file://") and "/mlruns/artifacts/tracking-tests/" in run.info.artifact_uri


@pytest.mark.parametrize("error, status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_an_interrupted_or_failed_run_is_never_left_running(error, status):
    run_id = new_run()
    with pytest.raises(type(error)):
        with closing(run_id):
            raise error
    run = tracking.client().get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["rnnlab.error"].startswith(type(error).__name__)


def test_a_completed_block_finishes_the_run():
    run_id = new_run()
    with closing(run_id):
        pass
    assert tracking.client().get_run(run_id).info.status == "FINISHED"


def test_runs_orphaned_by_a_dead_process_are_marked_killed():
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = new_run(pid=str(dead.pid))
    alive = new_run()  # this process: still running, so left alone
    new_run()  # opening any run in the experiment sweeps orphans
    assert tracking.client().get_run(orphan).info.status == "KILLED"
    assert tracking.client().get_run(alive).info.status == "RUNNING"


def test_metrics_logger_batches_values_and_loses_none():
    run_id = new_run()
    logger = MlflowMetricsLogger(run_id, flush_every=100, flush_seconds=3600)
    for step in range(250):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "train/grad_norm": float(step)}, step=step)
        logger.save()  # Lightning calls save() after every log: it must not flush
    logger.finalize("success")
    assert logger.batches_sent == 5  # 500 values in 5 calls, not 250
    history = tracking.client().get_metric_history(run_id, "train/grad_norm")
    assert sorted(m.step for m in history) == list(range(250))


def test_an_infinite_metric_reads_back_as_infinite_not_as_max_float():
    run_id = new_run()
    tracking.log_metrics(run_id, {"max_grad_norm": float("inf"), "gap": float("-inf"), "train_loss": 6.5}, step=3)
    stored = tracking.client().get_run(run_id).data.metrics["max_grad_norm"]
    assert stored == 1.7976931348623157e308  # what MLflow's SQL store keeps
    assert tracking.as_logged(stored) == float("inf") and tracking.as_logged(-stored) == float("-inf")
    assert tracking.as_logged(6.5) == 6.5
    assert tracking.metric_history(run_id, "max_grad_norm") == [(3, float("inf"))]


def test_a_perplexity_that_overflowed_is_not_stored_its_nll_is():
    """An axis to 1e308 in the UI helps no one: the NLL (finite, in nats per token) carries the fact, and reading
    the perplexity back from it restores the inf."""
    run_id = new_run()
    tracking.log_metrics(run_id, {"valid_ppl": float("inf"), "valid_nll": 812.5, "test_ppl": 140.0})
    logger = MlflowMetricsLogger(run_id)
    logger.log_metrics({"valid/ppl": float("inf"), "valid/nll": 812.5}, step=7)
    logger.finalize("success")
    metrics = tracking.client().get_run(run_id).data.metrics
    assert "valid_ppl" not in metrics and "valid/ppl" not in metrics
    assert metrics["valid_nll"] == 812.5 and metrics["valid/nll"] == 812.5 and metrics["test_ppl"] == 140.0


def test_a_curve_stores_no_value_that_is_not_finite():
    """The step a run blew up at is its diverged_step; as a point it would stretch the chart's axis to 1.8e308."""
    run_id = new_run()
    logger = MlflowMetricsLogger(run_id)
    for step, norm in enumerate([0.5, 7.0, float("inf"), float("nan")]):
        logger.log_metrics({"train/grad_norm": norm}, step=step)
    logger.finalize("success")
    assert tracking.metric_history(run_id, "train/grad_norm") == [(0, 0.5), (1, 7.0)]


def test_every_run_records_what_its_numbers_depend_on_beyond_the_config():
    tags = tracking.client().get_run(new_run()).data.tags
    import torch

    assert tags["cpu.capability"] == torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512
    assert tags["torch.deterministic"] in ("true", "false") and int(tags["torch.threads"]) >= 1
    assert tags["cpu"] and int(tags["cpu.count"]) >= 1


def test_a_store_that_another_process_is_writing_is_never_taken_for_damaged(tmp_path):
    """The store check runs in every process at its first use, while others write: a growing file must not look
    cut short (measured before the fix: 197 false alarms in 3,439 checks against one writer)."""
    import sys

    from rnnlab.runtime.store import check_local_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import time
from mlflow import MlflowClient
from mlflow.entities import Metric
client = MlflowClient({uri!r})
run = client.create_run(client.create_experiment("growing")).info.run_id
print("ready", flush=True)
end = time.time() + 8
step = 0
while time.time() < end:
    client.log_batch(run, metrics=[Metric(f"m{{i}}", 1.0, 0, step) for i in range(50)])
    step += 1
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        checks = 0
        while writer.poll() is None or checks < 10:  # for as long as it writes (8 s), and 10 checks at least
            check_local_store(uri, write=True)  # raises if the store looks damaged
            checks += 1
        assert writer.returncode == 0
    finally:
        writer.kill()
        writer.wait()


class RacingServer:
    """A tracking server's client whose first `log_inputs` loses a race, answered as `mlflow server` answers it
    (measured): 400 BAD_REQUEST with the database's words, which MLflow's REST client does not retry."""

    def __init__(self, message: str):
        self.message, self.calls = message, 0

    def log_inputs(self, run_id, datasets):
        self.calls += 1
        if self.calls == 1:
            from mlflow.exceptions import RestException

            raise RestException({"error_code": "BAD_REQUEST", "message": self.message})


DATASET = [{"name": "ptb-train", "digest": "abc", "source": "/data/ptb", "context": "train"}]


def test_a_dataset_another_process_created_first_is_linked_on_a_retry_also_through_a_tracking_server():
    server = RacingServer(
        "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest"
    )
    tracking.log_datasets("run", DATASET, mlflow=server)
    assert server.calls == 2  # the second try finds the dataset and links the run to it
    postgres = RacingServer(
        '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
    )
    tracking.log_datasets("run", DATASET, mlflow=postgres)
    assert postgres.calls == 2


def test_a_refusal_that_is_not_a_lost_race_is_raised_at_once():
    from mlflow.exceptions import MlflowException

    server = RacingServer("Run 'run' not found")
    with pytest.raises(MlflowException, match="not found"):
        tracking.log_datasets("run", DATASET, mlflow=server)
    assert server.calls == 1


def test_the_code_version_hashes_every_package_of_rnnlabs_own_source():
    """A cell's identity includes the code version: it must cover the code that trains it (it once hashed no file)."""
    from rnnlab.runtime.env import CODE_PACKAGES, CODE_ROOT, source_files

    files = source_files()
    assert {path.relative_to(CODE_ROOT).parts[0] for path in files} == set(CODE_PACKAGES)
    assert CODE_ROOT / "flows" / "study.py" in files and CODE_ROOT / "models" / "lm.py" in files
