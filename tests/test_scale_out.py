"""Schedules and scale-out through the stack's own engines: a real Prefect server and MLflow tracking server on
loopback, a cron deployment served by `rnnlab serve`, every command against the remote store, cells on Dask."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, rnnlab_command
from mlflow import MlflowClient
from test_cli_conventions import PROBE
from test_flows_study import tiny_study
from test_team_servers import start_servers

from rnnlab.runtime.env import pid_alive

pytestmark = pytest.mark.servers


def rnnlab(*args, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(rnnlab_command(*args), capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def test_serve_without_a_prefect_server_says_so_and_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"RNNLAB_HOME": str(tmp_path)}
    done = rnnlab("serve", "--schedules", str(REPO / "conf" / "schedules.yaml"), env=env)
    assert done.returncode == 2
    assert "ephemeral mode" in done.stderr and "rnnlab server start" in done.stderr


def test_a_taken_port_is_named_and_nothing_is_left_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = rnnlab("server", "start", "--prefect-port", str(port), env={**os.environ, "RNNLAB_HOME": str(tmp_path)})
    assert done.returncode == 2 and f"port {port} on 127.0.0.1 is already taken" in done.stderr
    status = rnnlab("server", "status", "--json", env={**os.environ, "RNNLAB_HOME": str(tmp_path)})
    assert json.loads(status.stdout.splitlines()[-1]) == {"prefect": None, "mlflow": None, "serve": None}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """`rnnlab server start` on free loopback ports; everything it started is stopped (and checked dead) after."""
    home = tmp_path_factory.mktemp("servers-home")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env["RNNLAB_HOME"] = str(home)
    state = start_servers(env)["state"]  # on ports the system picked (again on others if one was taken meanwhile)
    remote = {**env, "PREFECT_API_URL": state["prefect"]["url"], "MLFLOW_TRACKING_URI": state["mlflow"]["url"]}
    try:
        yield home, env, remote, state
    finally:
        stopped = rnnlab("server", "stop", "--json", env=env)
        assert stopped.returncode == 0
        for name in ("prefect", "mlflow"):
            pid = state[name]["pid"]
            deadline = time.monotonic() + 30
            while pid_alive(pid):
                assert time.monotonic() < deadline, f"{name} server (pid {pid}) still running after stop"
                time.sleep(0.2)


def prefect_client(url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(url)


def flow_runs(client, deployment_id, *states):
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states)))),
    )


def read_deployment(client, name: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + 180
    while True:
        try:
            return client.read_deployment_by_name(name)
        except Exception:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the deployment {name} was never registered"
            time.sleep(1)


def run_deployment(client, deployment, remote: dict, log: Path, until=("COMPLETED",), timeout: float = 400):
    """`prefect deployment run` (the ordinary Prefect CLI), then wait until the run reaches one of `until`."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "deployment", "run", f"study/{deployment.name}"],
        capture_output=True,
        text=True,
        env=remote,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    finals = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    deadline = time.monotonic() + timeout
    while True:
        ended = flow_runs(client, deployment.id, *finals)
        if ended:
            assert ended[0].state_type.value in until, f"{ended[0].state}: " + log.read_text()[-4000:]
            return ended[0]
        assert time.monotonic() < deadline, "the triggered run did not end: " + log.read_text()[-4000:]
        time.sleep(2)


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(60)


@pytest.fixture(scope="module")
def served(servers, tiny_corpus, tmp_path_factory):
    """`rnnlab serve` of two cron deployments: a tiny study, and one whose second cell cannot train."""
    _, env, _, state = servers
    folder = tmp_path_factory.mktemp("served")
    good = tiny_study(folder, "tiny_scheduled", tiny_corpus, {"model.cell": ["lstm", "gru"]}, concurrency=2)
    broken = tiny_study(folder, "tiny_broken", tiny_corpus, {"model.hidden_size": [16, 1_000_000_000]}, concurrency=2)
    schedules = folder / "schedules.yaml"
    schedules.write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {"name": "tiny-nightly", "study": good.name, "cron": "0 3 * * *", "timezone": "Europe/Berlin"},
                    {"name": "tiny-broken", "study": broken.name, "cron": "0 4 * * *"},
                ]
            }
        )
    )
    log = folder / "serve.log"
    serve = start(rnnlab_command("serve", "--schedules", str(schedules)), env, log)
    try:
        with prefect_client(state["prefect"]["url"]) as client:
            yield (
                client,
                {
                    name: read_deployment(client, f"study/{name}", serve, log)
                    for name in ("tiny-nightly", "tiny-broken")
                },
                log,
            )
    finally:
        stop(serve)


def test_a_served_cron_deployment_is_scheduled_runs_and_records_to_the_mlflow_server(servers, served):
    _, _, remote, state = servers
    client, deployments, log = served
    deployment = deployments["tiny-nightly"]
    cron = deployment.schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("0 3 * * *", "Europe/Berlin")
    deadline = time.monotonic() + 180
    while not flow_runs(client, deployment.id, "SCHEDULED"):  # the server's scheduler creates upcoming runs itself
        assert time.monotonic() < deadline, "the scheduler created no upcoming run"
        time.sleep(2)

    flow_run = run_deployment(client, deployment, remote, log)

    tracking = MlflowClient(state["mlflow"]["url"])
    exp = tracking.get_experiment_by_name("tiny_scheduled")
    cells = tracking.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'cell'")
    assert sorted(r.data.tags["factor.model.cell"] for r in cells) == ["gru", "lstm"]
    for run in cells:
        assert run.info.status == "FINISHED"
        assert run.data.tags["prefect.deployment_id"] == str(deployment.id)
        assert run.data.tags["prefect.flow_run_id"] == str(flow_run.id)
    parent = tracking.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'study'")[0]
    assert "report/report.html" in {a.path for a in tracking.list_artifacts(parent.info.run_id, "report")}


def test_a_scheduled_study_that_fails_is_failed_in_prefect_and_in_mlflow_with_the_reason(servers, served):
    _, _, remote, state = servers
    client, deployments, log = served

    flow_run = run_deployment(client, deployments["tiny-broken"], remote, log, until=("FAILED",))

    assert "1 of 2 cells failed" in flow_run.state.message and "allocate" in flow_run.state.message
    tracking = MlflowClient(state["mlflow"]["url"])
    exp = tracking.get_experiment_by_name("tiny_broken")
    parent = tracking.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'study'")[0]
    assert parent.info.status == "FAILED" and "1 of 2 cells failed" in parent.data.tags["rnnlab.error"]
    assert parent.data.tags["prefect.flow_run_id"] == str(flow_run.id)
    cells = {
        r.data.tags["factor.model.hidden_size"]: r
        for r in tracking.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'cell'")
    }
    assert cells["16"].info.status == "FINISHED"
    assert cells["1000000000"].info.status == "FAILED" and "allocate" in cells["1000000000"].data.tags["rnnlab.error"]


@pytest.mark.slow  # ~40 s; by default a served cron deployment runs a study: the test before
def test_a_study_deployed_to_a_work_pool_is_run_by_a_worker_of_that_pool(servers, tiny_corpus, tmp_path):
    """The multi-machine route, on one machine: `rnnlab deploy --pool` registers the deployment on a Prefect work
    pool; `rnnlab worker` (Prefect's own process worker) picks the run up and records it to the MLflow server."""
    _, env, remote, state = servers
    study = tiny_study(tmp_path, "tiny_pooled", tiny_corpus, {"model.cell": ["lstm", "gru"]}, concurrency=2)
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        yaml.safe_dump({"deployments": [{"name": "tiny-pooled", "study": study.name, "cron": "0 5 * * *"}]})
    )
    deployed = rnnlab("deploy", "--pool", "tiny-pool", "--schedules", str(schedules), "--json", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert list(json.loads(deployed.stdout.splitlines()[-1])["deployments"]) == ["study/tiny-pooled"]
    log = tmp_path / "worker.log"
    worker = start(rnnlab_command("worker", "--pool", "tiny-pool"), {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, log)
    try:
        with prefect_client(state["prefect"]["url"]) as client:
            assert client.read_work_pool("tiny-pool").type == "process"
            deployment = client.read_deployment_by_name("study/tiny-pooled")
            assert deployment.work_pool_name == "tiny-pool"
            flow_run = run_deployment(client, deployment, remote, log)
    finally:
        stop(worker)

    tracking = MlflowClient(state["mlflow"]["url"])
    exp = tracking.get_experiment_by_name("tiny_pooled")
    cells = tracking.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'cell'")
    assert sorted(r.data.tags["factor.model.cell"] for r in cells) == ["gru", "lstm"]
    assert all(r.info.status == "FINISHED" and r.data.tags["prefect.flow_run_id"] == str(flow_run.id) for r in cells)


@pytest.mark.slow  # ~75 s; by default a scheduled study records to the MLflow server, above
def test_every_command_works_against_the_mlflow_server_artifacts_included(servers, tiny_corpus, tmp_path):
    home, env, remote, state = servers
    remote = {k: v for k, v in remote.items() if k != "PREFECT_API_URL"}  # Prefect stays ephemeral here
    trained = rnnlab(
        "train",
        str(REPO / "conf" / "runs" / "ptb_small.yaml"),
        f"data.corpus={tiny_corpus}",
        "experiment=remote",
        *TINY,
        "--json",
        env=remote,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = json.loads(trained.stdout.splitlines()[-1])["run_id"]
    scored = rnnlab("evaluate", run_id, "--file", str(tiny_corpus / "test.txt"), "--json", env=remote)
    assert scored.returncode == 0, scored.stderr[-3000:]
    tracking = MlflowClient(state["mlflow"]["url"])
    assert "file.test.txt.ppl" in tracking.get_run(run_id).data.metrics
    assert {a.path for a in tracking.list_artifacts(run_id)} >= {"config.yaml", "vocab.txt", "checkpoints"}

    study = tiny_study(tmp_path, "tiny_remote", tiny_corpus, {"model.cell": ["lstm", "gru"]}, concurrency=2)
    assert rnnlab("study", str(study), env=remote).returncode == 0
    compared = rnnlab("compare", "tiny_remote", "--json", env=remote)
    assert compared.returncode == 0 and len(json.loads(compared.stdout)["table"]) == 2
    reported = rnnlab("report", "tiny_remote", "--out", str(tmp_path / "reports"), env=remote)
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert (tmp_path / "reports" / "tiny_remote" / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, said",
    [
        (["evaluate", "nosuchrun", "--file", "{file}"], "its studies and experiments: Default"),
        (["probe", "nosuchrun", "context"], "no run 'nosuchrun' on the tracking server"),
        (["translate", "nosuchrun", "--input", "{file}"], "no run 'nosuchrun' on the tracking server"),
        (["report", "nosuchstudy"], "no study 'nosuchstudy' on the tracking server"),
        (["compare", "Defaul"], "did you mean 'Default'? there are: Default"),
        (["runs", "nosuchstudy"], "there are: Default"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_on_a_tracking_server_unknown_runs_and_studies_are_refused_before_mlflow_is_imported(
    servers, tmp_path, argv, said
):
    """One request to the server's REST API, as SQLite answers for the project's store (test_cli_conventions)."""
    _, _, remote, _ = servers
    (tmp_path / "t.txt").write_text("a b\n")
    argv = [a.replace("{file}", str(tmp_path / "t.txt")) for a in argv]
    env = {k: v for k, v in remote.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 2 and said in result["err"], result["err"]
    assert result["heavy"] == []


def test_cells_run_on_a_local_dask_cluster_each_exactly_once(tiny_corpus, tmp_path):
    study = tiny_study(tmp_path, "tiny_dask", tiny_corpus, {"model.cell": ["lstm", "gru", "rnn_tanh"]}, concurrency=2)
    done = rnnlab(
        "study",
        str(study),
        "runner=dask",
        "--json",
        env={**os.environ, "RNNLAB_HOME": str(tmp_path), "DASK_TEMPORARY_DIRECTORY": str(tmp_path / "dask")},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny_dask")
    cells = client.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'cell'")
    assert sorted(r.data.tags["factor.model.cell"] for r in cells) == ["gru", "lstm", "rnn_tanh"]
    assert all(r.info.status == "FINISHED" for r in cells)
    assert len({r.data.tags["pid"] for r in cells}) >= 2  # on more than one worker process
