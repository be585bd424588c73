"""Cells that write to one MLflow store at once never collide: several processes recording runs (datasets, params,
tags, metrics) into the same new experiment at the same moment all succeed, and a study that runs two cells at a
time on a fresh store loses none of them to the store.

MLflow's SQL store checks for a row and then inserts it in several places (a dataset of an experiment, an
experiment, an experiment's tag, a tag on a run): two processes between the check and the insert used to end one
of them with a unique-constraint error."""

import json
import socket
import subprocess
import sys

from conftest import REPO
from test_flows_study import cell_runs, rnnlab, tiny_study

WORKERS, ROUNDS = 4, 10

# One cell worker, a fresh interpreter: in each round, once every worker is ready, it records a run into that
# round's experiment, the way a cell does (open the run with params and tags, log the corpus as datasets, tag the
# outcome, log metrics, close). Every failure is printed; none ends its rounds.
WORKER = """
import json, os, sys, time
uri, worker, rounds, workers, gates = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
os.environ["MLFLOW_TRACKING_URI"] = uri
import torch
torch.set_num_threads(1)
from tasks.record import tracking

def gate(name):
    # A barrier between processes: each says it is here, then waits for all the others (polled every ms)
    open(os.path.join(gates, f"{name}.{worker}"), "w").close()
    while sum(f.startswith(name + ".") for f in os.listdir(gates)) < workers:
        time.sleep(0.001)

datasets = [{"name": f"ptb-{split}", "digest": "0123456789abcdef", "source": "/data/ptb", "context": split}
            for split in ("train", "valid", "test")]
for round_ in range(rounds):
    def attempt(what, step):
        try:
            return step()
        except Exception as err:
            print(json.dumps(f"worker {worker}, round {round_}, {what}: {type(err).__name__}: {str(err)[:300]}"))

    def finish(run_id):
        tracking.log_datasets(run_id, datasets)
        tracking.set_tags(run_id, {"rnnlab.outcome": "trained", "rnnlab.cell_key": f"cell-{worker}"})
        tracking.log_metrics(run_id, {"valid_ppl": 100.0 + worker})
        tracking.close_run(run_id)

    gate(f"open-{round_}")  # every worker released at the same moment
    run_id = attempt("opening its run", lambda: tracking.open_run(
        f"round-{round_}", f"cell-{worker}", {"model.cell": "lstm", "train.lr": 1.0, "seed": worker},
        {"rnnlab.role": "cell", "factor.model.cell": "lstm"}))
    gate(f"record-{round_}")  # and again where the old failure was: the datasets, logged by all at once
    if run_id:
        attempt("recording", lambda: finish(run_id))
"""


def plant_orphan(uri: str, experiment: str) -> str:
    """A run left RUNNING by a process of this host that has ended: every worker opening a run in its experiment
    sweeps it to KILLED at the same moment."""
    from mlflow import MlflowClient

    dead = subprocess.Popen(["true"])
    dead.wait()
    client = MlflowClient(uri)
    exp_id = client.create_experiment(experiment)
    return client.create_run(exp_id, tags={"host": socket.gethostname(), "pid": str(dead.pid)}).info.run_id


def test_processes_recording_into_a_new_experiment_at_the_same_moment_never_collide(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    MlflowClient(uri).search_experiments()  # the store's tables, created once (as `tracking.client()` does)
    # Odd rounds: the experiment exists and holds an orphan that all the workers sweep at once; even rounds: new.
    orphans = {round_: plant_orphan(uri, f"round-{round_}") for round_ in range(1, ROUNDS, 2)}
    gates = tmp_path / "gates"
    gates.mkdir()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, uri, str(w), str(ROUNDS), str(WORKERS), str(gates)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    try:
        outputs = [w.communicate(timeout=300) for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    failures = [json.loads(line) for out, _ in outputs for line in out.splitlines() if line.startswith('"')]
    assert not failures, f"{len(failures)} of {WORKERS * ROUNDS} recordings failed:\n" + "\n".join(failures)
    client = MlflowClient(uri)
    for round_ in range(ROUNDS):
        experiment = client.get_experiment_by_name(f"round-{round_}")
        runs = client.search_runs([experiment.experiment_id], "tags.`rnnlab.role` = 'cell'")
        assert sorted(r.info.run_name for r in runs) == [f"cell-{w}" for w in range(WORKERS)]
        assert all(r.info.status == "FINISHED" for r in runs)
        for run in runs:  # each run linked to the experiment's one dataset per split
            assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["ptb-test", "ptb-train", "ptb-valid"]
            assert run.data.params["train.lr"] == "1.0" and run.data.tags["rnnlab.outcome"] == "trained"
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        if round_ in orphans:
            assert client.get_run(orphans[round_]).info.status == "KILLED"


def test_a_study_running_two_cells_at_a_time_on_a_fresh_store_loses_no_cell_to_the_store(tmp_path, tiny_corpus):
    """Its two cells start together in the study's new experiment and log the same corpus there at once."""
    path = tiny_study(tmp_path, "two_at_once", tiny_corpus, {"model.cell": ["lstm", "gru"]}, concurrency=2)
    done = rnnlab("study", str(path), "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = cell_runs(tmp_path, "two_at_once")
    assert sorted(r.data.tags["factor.model.cell"] for r in runs) == ["gru", "lstm"]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"], [r.data.tags.get("rnnlab.error") for r in runs]
    for run in runs:
        assert sorted(d.tags[0].value for d in run.inputs.dataset_inputs) == ["test", "train", "valid"]
