"""A dead machine's runs are closed by the Prefect server, with no one rerunning anything: flow runs beat, the
server's zombie automation marks a silent one CRASHED, and a second automation runs `close-dead-runs`, which closes
its MLflow runs as KILLED with the reason. On real servers on loopback (`rnnlab server start`: Prefect and MLflow),
with `rnnlab serve` running the closer; each part on its own first, then (slow) a study SIGKILLed for real."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import test_scale_out
import yaml
from conftest import REPO, rnnlab_command
from mlflow import MlflowClient
from test_flows_study import tiny_study
from test_scale_out import prefect_client, read_deployment, rnnlab, start, stop

from rnnlab.runtime.automations import CLOSER, CLOSING_FLOW, ZOMBIE, ZOMBIE_MESSAGE
from rnnlab.runtime.env import HEARTBEAT_SECONDS, ZOMBIE_SECONDS

pytestmark = pytest.mark.servers

servers = test_scale_out.servers  # the module's `rnnlab server start` (Prefect and MLflow), stopped after it


def automations(client) -> dict[str, list]:
    found: dict[str, list] = {}
    for automation in client.read_automations():
        found.setdefault(automation.name, []).append(automation)
    return found


def test_heartbeats_are_on_where_a_prefect_server_is_used_before_prefect_reads_its_settings():
    probe = (
        "from rnnlab.runtime.env import configure; configure(); "
        "from prefect.settings import get_current_settings; print(get_current_settings().flows.heartbeat_frequency)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"}
    with_server = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert with_server.stdout.split() == [str(HEARTBEAT_SECONDS)], with_server.stderr[-2000:]
    ephemeral = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rnnlab.runtime.env import configure; import os; configure(); "
            "print(os.environ.get('PREFECT_FLOWS_HEARTBEAT_FREQUENCY'))",
        ],
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert ephemeral.stdout.split() == ["None"]  # no server, nothing watches the beats: Prefect's own default


def test_server_start_makes_the_two_automations_and_again_keeps_them_two(servers):
    _, env, _, state = servers
    again = rnnlab("server", "start", "--json", env=env)  # already running: the automations are made sure of again
    assert again.returncode == 0, again.stderr[-3000:]
    with prefect_client(state["prefect"]["url"]) as client:
        found = automations(client)
        assert {name: len(ones) for name, ones in found.items()} == {ZOMBIE: 1, CLOSER: 1}
        zombie, closer = found[ZOMBIE][0], found[CLOSER][0]
        assert zombie.trigger.posture == "Proactive" and zombie.trigger.after == {"prefect.flow-run.heartbeat"}
        assert zombie.trigger.within.total_seconds() == ZOMBIE_SECONDS == 3 * HEARTBEAT_SECONDS
        assert [(a.type, a.state.value, a.message) for a in zombie.actions] == [
            ("change-flow-run-state", "CRASHED", ZOMBIE_MESSAGE)
        ]
        assert closer.trigger.expect == {"prefect.flow-run.Crashed"}
        deployment = client.read_deployment_by_name(f"{CLOSING_FLOW}/{CLOSING_FLOW}")
        assert [(a.type, a.deployment_id) for a in closer.actions] == [("run-deployment", deployment.id)]
    assert json.loads(again.stdout.splitlines()[-1])["automations"]["deployment"] == str(deployment.id)


def stand_in(client, name: str = "study"):
    """A flow run of a flow named `name`, RUNNING, as a study's on another machine."""
    from prefect import Flow
    from prefect.states import Running

    run = client.create_flow_run(Flow(fn=lambda: None, name=name), name=f"dead-{uuid.uuid4().hex[:6]}")
    client.set_flow_run_state(run.id, Running(), force=True)
    return run


def crash(client, flow_run_id, message: str = "its machine stopped") -> None:
    from prefect.states import Crashed

    client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)


def recorded_study(tracking: MlflowClient, experiment: str, flow_run_id) -> dict[str, str]:
    """A study execution's runs as a dead machine leaves them: its parent and two cells RUNNING, one cell FINISHED,
    and a RUNNING child of the parent without the flow run's tag (opened outside its context)."""
    try:
        exp = tracking.create_experiment(experiment)
    except Exception:
        exp = tracking.get_experiment_by_name(experiment).experiment_id
    mine = {"prefect.flow_run_id": str(flow_run_id), "host": socket.gethostname(), "pid": "999999999"}
    parent = tracking.create_run(exp, tags={**mine, "rnnlab.role": "study", "rnnlab.study": experiment})
    runs = {"parent": parent.info.run_id}
    for name in ("cell_a", "cell_b", "done", "untagged"):
        tags = {**(mine if name != "untagged" else {}), "rnnlab.role": "cell", "rnnlab.cell_key": name}
        runs[name] = tracking.create_run(exp, tags={**tags, "mlflow.parentRunId": parent.info.run_id}).info.run_id
    tracking.set_terminated(runs["done"], "FINISHED")
    return runs


def statuses(tracking: MlflowClient, runs: dict[str, str]) -> dict[str, str]:
    return {name: tracking.get_run(run_id).info.status for name, run_id in runs.items()}


@pytest.fixture
def prefect_here(servers, monkeypatch):
    """This process's Prefect and tracking on the module's servers, for a flow called directly."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _, _, _, state = servers
    monkeypatch.setenv("MLFLOW_TRACKING_URI", state["mlflow"]["url"])
    with temporary_settings({PREFECT_API_URL: state["prefect"]["url"]}):
        yield state
        EventsWorker.drain_all()  # its events sent while the server is up, not at exit


def test_the_closer_closes_the_runs_of_a_crashed_flow_run_and_nothing_else(prefect_here):
    from flows.dead_runs import NotDead, close_dead_runs

    tracking = MlflowClient(prefect_here["mlflow"]["url"])
    with prefect_client(prefect_here["prefect"]["url"]) as client:
        dead, alive = stand_in(client), stand_in(client)
        runs = recorded_study(tracking, "dead_direct", dead.id)
        others = recorded_study(tracking, "dead_direct", alive.id)
        crash(client, dead.id, "no heartbeat for a while")

        with pytest.raises(NotDead, match="not over"):  # a live flow run's runs are left as they are
            close_dead_runs(str(alive.id))
        closed = close_dead_runs(str(dead.id))

    assert set(closed) == {runs[n] for n in ("parent", "cell_a", "cell_b", "untagged")}
    assert closed[-1] == runs["parent"]  # the cells first
    expected = {"parent": "KILLED", "cell_a": "KILLED", "cell_b": "KILLED", "done": "FINISHED", "untagged": "KILLED"}
    assert statuses(tracking, runs) == expected
    reason = tracking.get_run(runs["parent"]).data.tags["rnnlab.error"]
    assert reason == f"Prefect marked its flow run {dead.name} ({dead.id}) CRASHED: no heartbeat for a while"
    assert "rnnlab.error" not in tracking.get_run(runs["done"]).data.tags
    assert set(statuses(tracking, others).values()) == {"RUNNING", "FINISHED"}  # another execution's: untouched
    assert close_dead_runs(str(dead.id)) == []  # again: nothing more to close


def test_a_tracking_servers_runs_are_not_swept_by_host_and_pid(prefect_here):
    """Host and pid name a process of this machine only in the local store; on a server, the automations close."""
    from tasks.record import tracking as record

    tracking = MlflowClient(prefect_here["mlflow"]["url"])
    runs = recorded_study(tracking, "dead_host_pid", uuid.uuid4())  # this host, a pid that does not exist
    assert record.mark_orphans() == []
    assert set(statuses(tracking, runs).values()) == {"RUNNING", "FINISHED"}


@pytest.fixture(scope="module")
def served(servers, tiny_corpus, tmp_path_factory):
    """`rnnlab serve` of one cron study (never due): it serves `close-dead-runs` beside it."""
    _, env, _, state = servers
    folder = tmp_path_factory.mktemp("dead-served")
    study = tiny_study(folder, "tiny_dead_served", tiny_corpus, {"model.cell": ["lstm"]}, concurrency=1)
    schedules = folder / "schedules.yaml"
    schedules.write_text(
        yaml.safe_dump({"deployments": [{"name": "dead-yearly", "study": study.name, "cron": "0 3 1 1 *"}]})
    )
    log = folder / "serve.log"
    serve = start(rnnlab_command("serve", "--schedules", str(schedules)), env, log)
    try:
        with prefect_client(state["prefect"]["url"]) as client:
            read_deployment(client, f"{CLOSING_FLOW}/{CLOSING_FLOW}", serve, log)
            read_deployment(client, "study/dead-yearly", serve, log)
        yield log
    finally:
        stop(serve)


def wait_until_killed(tracking: MlflowClient, runs: dict[str, str], timeout: float, log) -> float:
    """Seconds until every run that should close is KILLED."""
    started = time.monotonic()
    while True:
        now = statuses(tracking, runs)
        if all(status == "KILLED" for name, status in now.items() if name != "done"):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"still {now} after {timeout:.0f} s: {log.read_text()[-3000:]}"
        time.sleep(1)


def test_a_crashed_study_flow_run_has_its_runs_closed_by_the_automation_and_the_served_closer(servers, served):
    _, _, _, state = servers
    tracking = MlflowClient(state["mlflow"]["url"])
    with prefect_client(state["prefect"]["url"]) as client:
        dead = stand_in(client)
        runs = recorded_study(tracking, "dead_served", dead.id)
        crash(client, dead.id)
        took = wait_until_killed(tracking, runs, 120, served)
        closer = client.read_deployment_by_name(f"{CLOSING_FLOW}/{CLOSING_FLOW}")
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        closings = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[closer.id])))
        assert str(dead.id) in [r.parameters.get("flow_run_id") for r in closings]
    print(f"\nCRASHED → runs KILLED by the served closer: {took:.1f} s")
    assert statuses(tracking, runs)["done"] == "FINISHED"
    assert "CRASHED: its machine stopped" in tracking.get_run(runs["cell_a"]).data.tags["rnnlab.error"]


def test_a_crashed_flow_run_of_another_flow_is_left_to_its_owner(servers, served):
    """Only rnnlab's flows (study, train, claims) are closed: the automation runs no closer for another's."""
    _, _, _, state = servers
    with prefect_client(state["prefect"]["url"]) as client:
        other = stand_in(client, "someone-elses-flow")
        crash(client, other.id)
        time.sleep(10)  # a crashed study's closer run is created within a second or two (the test above)
        assert str(other.id) not in [r.parameters.get("flow_run_id") for r in client.read_flow_runs()]


@pytest.mark.slow  # ~2-3 min: the zombie window (90 s) after the last heartbeat
def test_a_study_sigkilled_on_its_machine_has_its_runs_closed_with_no_further_command(
    servers,
    served,
    tiny_corpus,
    tmp_path,
):
    """A study against the servers (heartbeats every 30 s), SIGKILLed mid-cell with its workers: with nothing else
    run, its flow run is CRASHED by the zombie automation and its parent and cell runs become KILLED, within the
    window plus a minute of the kill."""
    home, env, remote, state = servers
    study = tiny_study(
        tmp_path, "tiny_dead_machine", tiny_corpus, {"model.cell": ["lstm"]}, concurrency=1, **{"train.max_epochs": 500}
    )
    log = tmp_path / "study.log"
    process = start(rnnlab_command("study", str(study)), remote, log)
    tracking = MlflowClient(state["mlflow"]["url"])
    try:
        deadline = time.monotonic() + 300
        while True:  # until its cell is training: the flow run has been beating for a while
            exp = tracking.get_experiment_by_name("tiny_dead_machine")
            cells = exp and tracking.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'cell'")
            if cells and cells[0].info.status == "RUNNING" and cells[0].data.metrics:  # its first curve values
                break
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the study's cell never started: " + log.read_text()[-3000:]
            time.sleep(1)
        os.killpg(process.pid, signal.SIGKILL)  # the study and its cell worker: the machine is gone
        killed, killed_at = time.monotonic(), time.time()
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    parent = tracking.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'study'")[0]
    runs = {"parent": parent.info.run_id, "cell": cells[0].info.run_id}
    flow_run_id = parent.data.tags["prefect.flow_run_id"]

    wait_until_killed(tracking, runs, ZOMBIE_SECONDS + 120, served)
    took = time.monotonic() - killed

    with prefect_client(state["prefect"]["url"]) as client:
        flow_run = client.read_flow_run(flow_run_id)
    crashed_after = flow_run.state.timestamp.timestamp() - killed_at
    print(f"\nSIGKILL → flow run CRASHED after {crashed_after:.0f} s, its runs KILLED after {took:.0f} s")
    assert flow_run.state.type.value == "CRASHED" and flow_run.state.message == ZOMBIE_MESSAGE
    assert took <= ZOMBIE_SECONDS + 60  # the window after the last beat (at most one beat before the kill) + a minute
    reason = tracking.get_run(runs["cell"]).data.tags["rnnlab.error"]
    assert reason == f"Prefect marked its flow run {flow_run.name} ({flow_run_id}) CRASHED: {ZOMBIE_MESSAGE}"


def test_deploy_to_a_pool_puts_the_closer_on_the_pool_and_keeps_the_automations_two(servers, tiny_corpus, tmp_path):
    """After the others (it takes the closer from `rnnlab serve`): the pool's workers run it from then on."""
    _, env, _, state = servers
    study = tiny_study(tmp_path, "tiny_dead_pooled", tiny_corpus, {"model.cell": ["lstm"]}, concurrency=1)
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        yaml.safe_dump({"deployments": [{"name": "dead-pooled", "study": study.name, "cron": "0 3 1 1 *"}]})
    )
    deployed = rnnlab("deploy", "--pool", "dead-pool", "--schedules", str(schedules), "--json", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    with prefect_client(state["prefect"]["url"]) as client:
        closer = client.read_deployment_by_name(f"{CLOSING_FLOW}/{CLOSING_FLOW}")
        assert (closer.work_pool_name, closer.entrypoint) == ("dead-pool", "flows/dead_runs.py:close_dead_runs")
        found = automations(client)
        assert {name: len(ones) for name, ones in found.items()} == {ZOMBIE: 1, CLOSER: 1}
        assert found[CLOSER][0].actions[0].deployment_id == closer.id
