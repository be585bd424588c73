"""A team on several machines, as the README's team recipe sets it up: one PostgreSQL cluster, `rnnlab server start
--database` (Prefect and MLflow on it, login required), and two machines, each a project home of its own run in its
own mount and UTS namespace (its own host name; the other machine's home hidden under an empty tmpfs), sharing
only the two servers on 127.0.0.1. Every client passes the team's credentials from its environment.

Asserted: the same study started on both machines at once trains each cell exactly once, leaves nothing RUNNING and
both exit 0; every run's artifacts come through the server after a machine's home is gone; (slow) a machine killed
mid-cell after a shipped checkpoint is resumed by the other from that step, ending where an uninterrupted cell ends,
and the killed execution's runs are closed by the server's automations with no further command; (slow) a Dask
worker on the second machine, without MLFLOW_TRACKING_URI, records its cells on the server. Nothing the tests start
outlives them, the PostgreSQL cluster included."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, cut_corpus, rnnlab_command
from mlflow import MlflowClient
from test_faults import STEADY
from test_flows_study import tiny_study
from test_scale_out import read_deployment
from test_team_servers import (
    PASSWORD,
    USER,
    clean_env,
    prefect_client,
    private_cluster,
    start_servers,
    status_code,
    stop_servers,
)

from rnnlab.runtime.env import ZOMBIE_SECONDS, pid_alive

pytestmark = pytest.mark.servers

DB_PASSWORD = "team-cluster-5150"
LOGIN = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}


class Machine:
    """A project home run as a machine of its own: a mount and UTS namespace (`unshare`), host name `name`, the
    other machines' homes hidden, the servers' URLs and the team's login in its environment."""

    def __init__(self, name: str, home: Path, hidden: list[Path], urls: dict[str, str], **variables: str):
        self.name, self.home, self.hidden = name, home, hidden
        home.mkdir(parents=True, exist_ok=True)
        self.env = clean_env(home, **urls, **LOGIN, **variables)

    def command(self, *args: str) -> list[str]:
        hide = " && ".join(f"mount -t tmpfs none {shlex_quote(p)}" for p in self.hidden)
        script = f'mount --make-rprivate / && {hide + " && " if hide else ""}hostname {self.name} && exec "$@"'
        return ["unshare", "--mount", "--uts", "--fork", "--kill-child", "sh", "-c", script, "sh", *args]

    def start(self, *args: str, log: Path) -> subprocess.Popen:
        """`rnnlab <args>` on this machine, in a process group of its own (to kill the machine whole)."""
        return subprocess.Popen(
            self.command(*rnnlab_command(*args)),
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=open(log, "w"),
            text=True,
            start_new_session=True,
        )

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*rnnlab_command(*args)),
            capture_output=True,
            text=True,
            cwd=REPO,
            env=self.env,
            timeout=timeout,
        )


def shlex_quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The servers on a private PostgreSQL cluster, with login; two machines' homes; all stopped afterwards."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is needed to run a second machine")
    folder = tmp_path_factory.mktemp("team")
    with private_cluster(DB_PASSWORD) as cluster:
        server_env = clean_env(folder / "servers", **LOGIN, PGPASSWORD=DB_PASSWORD)
        database = f"postgresql://rnnlab@127.0.0.1:{cluster['port']}/team"
        state = start_servers(server_env, "--database", database)["state"]
        try:
            urls = {"PREFECT_API_URL": state["prefect"]["url"], "MLFLOW_TRACKING_URI": state["mlflow"]["url"]}
            homes = [folder / "machine-1", folder / "machine-2"]
            machines = [
                Machine(f"machine-{i + 1}", home, [other for other in homes if other != home], urls)
                for i, home in enumerate(homes)
            ]
            for home in homes:
                home.mkdir(parents=True, exist_ok=True)
            yield {
                "state": state,
                "urls": urls,
                "machines": machines,
                "folder": folder,
                "server_env": server_env,
                "database": database,
            }
        finally:
            stop_servers(server_env, state)
    assert not pid_alive(cluster["postmaster"])


def tracking(team) -> MlflowClient:
    os.environ.update(LOGIN)  # this process as a team member's client (MLflow reads them per request)
    return MlflowClient(team["urls"]["MLFLOW_TRACKING_URI"])


def runs_of(client: MlflowClient, experiment: str, role: str | None = None) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    search = f"tags.`rnnlab.role` = '{role}'" if role else ""
    return client.search_runs([found.experiment_id], search, max_results=1000)


def test_both_servers_refuse_a_request_without_the_team_login(team):
    mlflow, prefect = team["state"]["mlflow"]["url"], team["state"]["prefect"]["url"]
    assert status_code(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1") == 401
    assert status_code(f"{prefect}/flows/filter", method="POST", body=b"{}") == 401
    assert status_code(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1", f"{USER}:{PASSWORD}") == 200


def test_the_prefect_server_keeps_the_claims_leases_in_files(team):
    """So that a restarted server still knows who holds which cell (the slow test below restarts one)."""
    environ = Path(f"/proc/{team['state']['prefect']['pid']}/environ").read_bytes().split(b"\0")
    assert b"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem" in environ


def test_one_study_started_on_two_machines_at_once_trains_each_cell_once(team, tmp_path):
    """Both exit 0; one FINISHED run per cell key, nothing RUNNING; the executions' trained counts sum to the cells,
    whoever won each; and once the second machine's home is deleted, every run's artifacts still come through the
    server (they live on it, not on the machine that trained)."""
    corpus = cut_corpus(tmp_path / "corpus")
    study = tiny_study(tmp_path, "team_twice", corpus, {"model.cell": ["lstm", "gru"]}, concurrency=2)
    one, two = team["machines"]
    started = [m.start("study", str(study), "--json", log=tmp_path / f"{m.name}.log") for m in (one, two)]
    outputs = [p.communicate(timeout=600)[0] for p in started]
    for machine, process in zip((one, two), started):
        assert process.returncode == 0, (tmp_path / f"{machine.name}.log").read_text()[-4000:]
    results = [json.loads(out.splitlines()[-1]) for out in outputs]
    client = tracking(team)
    cells = runs_of(client, "team_twice", "cell")
    assert [r for r in runs_of(client, "team_twice") if r.info.status == "RUNNING"] == []
    finished = [r for r in cells if r.info.status == "FINISHED"]
    keys = [r.data.tags["rnnlab.cell_key"] for r in finished]
    assert len(keys) == len(set(keys)) == 2  # each cell exactly once
    assert sum(r["trained"] for r in results) == 2 and all(r["cells"] == 2 for r in results)
    hosts = {r.data.tags["host"] for r in finished}
    assert hosts <= {"machine-1", "machine-2"}
    assert all("rnnlab.claimed_by" in r.data.tags for r in finished)

    shutil.rmtree(two.home)  # machine 2's disk is gone; what it recorded is on the server
    for run in runs_of(client, "team_twice"):
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        with tempfile.TemporaryDirectory() as tmp:
            names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id)}
            if run.data.tags.get("rnnlab.role") == "cell":
                assert {"checkpoints", "config.yaml"} <= names
                best = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", tmp)
                assert Path(best).stat().st_size > 0
    two.home.mkdir()


def wait_for_shipped_checkpoint(client: MlflowClient, experiment: str, process, timeout: float = 300) -> tuple:
    """(the RUNNING cell run, the step of its shipped last.ckpt) once it has shipped one."""
    import torch

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the study ended before it shipped a checkpoint"
        for run in runs_of(client, experiment, "cell"):
            names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoints")}
            if run.info.status == "RUNNING" and "last.ckpt" in names:
                with tempfile.TemporaryDirectory() as tmp:
                    path = client.download_artifacts(run.info.run_id, "checkpoints/last.ckpt", tmp)
                    step = int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
                return run, step
        time.sleep(0.5)
    pytest.fail("no checkpoint was shipped in time")


@pytest.mark.slow  # ~5 min: a lease runs out, the zombie automation waits for 3 missed heartbeats
def test_a_machine_killed_mid_cell_is_resumed_by_another_and_its_runs_are_closed_by_the_server(team, tmp_path):
    one, two = team["machines"]
    corpus = cut_corpus(tmp_path / "corpus", train_lines=3000, valid_lines=100)
    steady = {**STEADY, "train.max_steps": 300}
    study = tiny_study(tmp_path, "team_killed", corpus, {"model.cell": ["lstm"]}, concurrency=1, **steady)
    alone = tiny_study(tmp_path, "team_alone", corpus, {"model.cell": ["lstm"]}, concurrency=1, **steady)
    schedules = tmp_path / "schedules.yaml"  # `rnnlab serve` runs the server's closer of dead runs
    schedules.write_text(yaml.safe_dump({"deployments": [{"name": "never", "study": str(alone), "cron": "0 3 1 1 *"}]}))
    serve = one.start("serve", "--schedules", str(schedules), log=tmp_path / "serve.log")
    try:
        with prefect_client(team["urls"]["PREFECT_API_URL"], f"{USER}:{PASSWORD}") as prefect:
            read_deployment(prefect, "close-dead-runs/close-dead-runs", serve, tmp_path / "serve.log")
        client = tracking(team)
        killed = one.start("study", str(study), log=tmp_path / "killed.log")
        run, step = wait_for_shipped_checkpoint(client, "team_killed", killed)
        os.killpg(killed.pid, signal.SIGKILL)  # the machine dies: every process of it at once
        killed.wait(30)
        killed_at = time.monotonic()
        assert 0 < step < steady["train.max_steps"]
        parent_id = run.data.tags["mlflow.parentRunId"]

        # Machine 2 takes the study up at once; it waits for the dead machine's claim to run out (its lease).
        resuming = two.start("study", str(study), "--json", log=tmp_path / "resumed.log")
        deadline = killed_at + ZOMBIE_SECONDS + 60  # the automation's window plus a minute
        while True:
            statuses = {r: client.get_run(r).info.status for r in (parent_id, run.info.run_id)}
            if set(statuses.values()) == {"KILLED"} or time.monotonic() > deadline:
                break
            time.sleep(1)
        closed_after = time.monotonic() - killed_at
        assert set(statuses.values()) == {"KILLED"}, statuses
        reason = client.get_run(parent_id).data.tags["rnnlab.error"]
        assert "CRASHED" in reason and "rnnlab's zombie automation" in reason, reason  # the server's, not machine 2's
        resuming.communicate(timeout=600)
        assert resuming.returncode == 0, (tmp_path / "resumed.log").read_text()[-4000:]
        uninterrupted = two.run("study", str(alone), "--json")
        assert uninterrupted.returncode == 0, uninterrupted.stderr[-4000:]

        finished = [r for r in runs_of(client, "team_killed", "cell") if r.info.status == "FINISHED"]
        assert len(finished) == 1
        again = finished[0]
        assert again.data.tags["host"] == "machine-2"
        assert int(again.data.tags["rnnlab.resumed_from_step"]) == step  # the shipped step, not 0
        assert again.data.tags["rnnlab.resumed_from_run"] == run.info.run_id
        (reference,) = runs_of(client, "team_alone", "cell")
        for metric in ("valid_ppl", "valid_nll", "train_loss", "train_steps", "max_grad_norm", "clipped_share"):
            assert again.data.metrics[metric] == reference.data.metrics[metric], metric  # bit for bit
        print(
            f"\nresumed on machine-2 from step {step} (of {steady['train.max_steps']}); valid_ppl "
            f"{again.data.metrics['valid_ppl']!r} resumed, {reference.data.metrics['valid_ppl']!r} uninterrupted; "
            f"the killed execution's runs KILLED {closed_after:.0f} s after the kill: {reason}"
        )
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(60)


@pytest.mark.slow  # ~1.5 min
def test_a_dask_worker_without_a_tracking_uri_records_its_cells_on_the_server(team, tmp_path):
    one, two = team["machines"]
    corpus = cut_corpus(tmp_path / "corpus")
    study = tiny_study(tmp_path, "team_dask", corpus, {"model.cell": ["lstm", "gru"]}, concurrency=2)
    bin_dir = Path(os.sys.executable).parent
    scheduler_log, worker_log = tmp_path / "scheduler.log", tmp_path / "worker.log"
    port = 0
    scheduler = subprocess.Popen(
        [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(tmp_path / "scheduler.json")],
        stdout=subprocess.DEVNULL, stderr=open(scheduler_log, "w"), start_new_session=True,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "scheduler.json").is_file():
            assert time.monotonic() < deadline and scheduler.poll() is None, scheduler_log.read_text()[-2000:]
            time.sleep(0.2)
        address = json.loads((tmp_path / "scheduler.json").read_text())["address"]
        port = int(address.rsplit(":", 1)[1])
        worker_env = {k: v for k, v in two.env.items() if k != "MLFLOW_TRACKING_URI"}  # the README's worker: no URI
        worker = subprocess.Popen(
            two.command(str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "2",
                        "--no-dashboard"),
            env=worker_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(worker_log, "w"), start_new_session=True,
        )  # fmt: skip
        done = one.run("study", str(study), "runner=dask", f"runner.address={address}", "--json")
        assert done.returncode == 0, done.stderr[-4000:] + worker_log.read_text()[-3000:]
        client = tracking(team)
        cells = runs_of(client, "team_dask", "cell")
        assert sorted(r.data.tags["factor.model.cell"] for r in cells) == ["gru", "lstm"]
        assert all(r.info.status == "FINISHED" and r.data.tags["host"] == "machine-2" for r in cells)
    finally:
        for process in (worker, scheduler):
            if process is not None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    assert port


@pytest.mark.slow  # ~45 s: the Prefect server is stopped and started again
def test_a_claims_lease_outlives_a_restart_of_the_prefect_server(team):
    """A cell's claim is a slot of its Prefect limit on a lease. The Prefect server restarts: it still knows the lease
    (kept in files, not the old server's memory), so the holder's next renewal succeeds, nobody else gets the slot
    meanwhile, and the holder's release frees it. (With Prefect's in-memory lease storage the renewal after the
    restart is refused: the holder would stop, and the slot stay taken until its lease is swept.)"""
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from rnnlab.runtime import servers
    from rnnlab.runtime.cell_claim import LEASE_SECONDS, create_limit, limit_name

    name = limit_name("f00d" + os.urandom(6).hex())
    login = {PREFECT_API_URL: team["urls"]["PREFECT_API_URL"], PREFECT_API_AUTH_STRING: f"{USER}:{PASSWORD}"}
    with temporary_settings(login):
        with prefect_client(team["urls"]["PREFECT_API_URL"], f"{USER}:{PASSWORD}") as prefect:
            create_limit(prefect, name)
            taken = prefect.increment_concurrency_slots_with_lease([name], 1, "concurrency", LEASE_SECONDS).json()
            lease = taken["lease_id"]
        state = team["state"]["prefect"]
        servers.stop_pid(state["pid"])  # the server goes down, and comes back on the same store and port
        again = subprocess.run(
            rnnlab_command(
                "server", "start", "--prefect-port", str(state["port"]), "--mlflow-port",
                str(team["state"]["mlflow"]["port"]), "--database", team["database"], "--json",
            ),
            capture_output=True, text=True, cwd=REPO, env=team["server_env"], timeout=300,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        team["state"]["prefect"] = json.loads(again.stdout.splitlines()[-1])["prefect"]
        with prefect_client(team["urls"]["PREFECT_API_URL"], f"{USER}:{PASSWORD}") as prefect:
            prefect.renew_concurrency_lease(lease, LEASE_SECONDS)  # raises (404) for a lease the server forgot
            with pytest.raises(TimeoutError):  # still held: nobody else gets the slot
                with concurrency(name, occupy=1, timeout_seconds=3, strict=True):
                    pass
            prefect.release_concurrency_slots_with_lease(lease)
        with concurrency(name, occupy=1, timeout_seconds=10, strict=True):
            pass  # freed by its holder, through the restarted server
