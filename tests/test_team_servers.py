"""Servers a team uses (`rnnlab server start` with credentials, --database): nobody gets in without the credentials,
which every rnnlab client passes from its environment and nothing records or prints; the stores can live in
PostgreSQL; MLflow serves the artifacts, and a command recording through it refuses an experiment whose artifacts
would land on its own disk.

Ports: each server's is picked by binding port 0 and releasing it, then passed to the server, accepting the small
race with another program taking it meanwhile; a start that finds its port taken (rnnlab says so, exit 2) is tried
again on new ports, up to 3 times. The PostgreSQL cluster's port is picked and retried the same way."""

import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from conftest import REPO, RUN_CONFIG, TINY, rnnlab_command
from prefect import flow

from rnnlab.cli.main import main
from rnnlab.runtime import env as runtime_env
from rnnlab.runtime import servers
from rnnlab.runtime.env import pid_alive

pytestmark = pytest.mark.servers

USER, PASSWORD = "lab-admin", "team-secret-7f3k9q"  # MLflow asks for 12 characters or more
CLIENT_VARIABLES = (
    "PREFECT_API_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "PREFECT_API_AUTH_STRING",
    "PGPASSWORD",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rnnlab(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(rnnlab_command(*args), capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


def clean_env(home: Path, **more: str) -> dict:
    """This session's environment without any client's server or credentials, in project `home`."""
    return {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES} | {"RNNLAB_HOME": str(home), **more}


def start_servers(env: dict, *args: str) -> dict:
    """`rnnlab server start` on fresh loopback ports (again on new ones if a port was taken meanwhile)."""
    for _ in range(3):
        done = rnnlab(
            "server", "start", "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()), *args, "--json",
            env=env,
        )  # fmt: skip
        if done.returncode == 2 and "is already taken" in done.stderr:
            continue
        assert done.returncode == 0, done.stderr[-3000:]
        return {"state": json.loads(done.stdout.splitlines()[-1]), "console": done.stdout + done.stderr}
    pytest.fail("three pairs of free ports were each taken before the servers started")


def stop_servers(env: dict, state: dict) -> None:
    assert rnnlab("server", "stop", env=env).returncode == 0
    for name in ("prefect", "mlflow"):
        deadline = time.monotonic() + 30
        while pid_alive(state[name]["pid"]):
            assert time.monotonic() < deadline, f"the {name} server outlived `rnnlab server stop`"
            time.sleep(0.2)


def status_code(url: str, login: str | None = None, method: str = "GET", body: bytes | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if login is not None:
        headers["Authorization"] = "Basic " + b64encode(login.encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers, method=method), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def one_error_line(stderr: str) -> str:
    """The one `rnnlab: error:` line, the last; before it at most rnnlab's progress lines, no traceback or log."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("rnnlab: error: "), stderr[-3000:]
    assert all(line.startswith("rnnlab: ") and "error" not in line for line in lines[:-1]), stderr[-3000:]
    return lines[-1]


@contextlib.contextmanager
def client_env(monkeypatch, url: str, **variables: str):
    """This process as a client of the MLflow server at `url`, with the credentials given."""
    with monkeypatch.context() as patch:
        for name in CLIENT_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("MLFLOW_TRACKING_URI", url)
        for name, value in variables.items():
            patch.setenv(name, value)
        yield


@contextlib.contextmanager
def prefect_client(url: str, auth: str | None):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: auth}):
        with get_client(sync_client=True) as client:
            yield client


@flow(name="team-probe")
def team_probe() -> None:
    """Never run: a flow for the Prefect client to create a flow run of."""


# --- refused before anything starts ------------------------------------------------------------------------------


def run_main(argv: list[str], home: Path, monkeypatch, capsys, **variables: str) -> tuple[int, str]:
    with monkeypatch.context() as patch:
        for name in CLIENT_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("RNNLAB_HOME", str(home))
        for name, value in variables.items():
            patch.setenv(name, value)
        code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::"])
def test_a_bind_beyond_loopback_without_credentials_is_refused_in_one_line_and_nothing_starts(
    host, tmp_path, monkeypatch, capsys
):
    code, err = run_main(["server", "start", "--host", host], tmp_path, monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and f"refusing to bind the servers to {host} without credentials" in line
    assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line
    assert not list((tmp_path / ".servers").glob("*.json")) and not list((tmp_path / ".servers").glob("*.log"))


@pytest.mark.parametrize(
    "variables, expected",
    [
        ({"MLFLOW_TRACKING_USERNAME": USER}, "incomplete credentials"),
        ({"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": "tiny-pw"}, "at least 12 characters"),
        ({"PREFECT_API_AUTH_STRING": "no-colon-here"}, "incomplete credentials"),
    ],
)
def test_incomplete_or_weak_credentials_are_refused_in_one_line(variables, expected, tmp_path, monkeypatch, capsys):
    code, err = run_main(["server", "start", "--host", "0.0.0.0"], tmp_path, monkeypatch, capsys, **variables)
    line = one_error_line(err)
    assert code == 2 and expected in line and not any(value in line for value in ("tiny-pw", "no-colon-here"))
    assert not list((tmp_path / ".servers").glob("*.json"))


def test_postgresql_without_its_drivers_is_refused_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # an import of it raises ImportError, as where it is missing
    code, err = run_main(
        ["server", "start", "--database", "postgresql://lab@127.0.0.1:9/team"], tmp_path, monkeypatch, capsys
    )
    line = one_error_line(err)
    assert code == 2 and 'pip install -e ".[team]"' in line and "psycopg2" in line


def test_an_unreachable_database_is_named_without_its_password_and_nothing_starts(tmp_path, monkeypatch, capsys):
    port = free_port()  # nothing listens there
    url = f"postgresql://lab:db-pass-xyz@127.0.0.1:{port}/team"
    code, err = run_main(["server", "start", "--database", url], tmp_path, monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and f"cannot reach PostgreSQL at postgresql://lab@127.0.0.1:{port}/team" in line
    assert "db-pass-xyz" not in err and not list((tmp_path / ".servers").glob("*.json"))


def test_a_database_url_names_a_database_per_server_and_keeps_the_password_out_of_them():
    db = servers.database("postgresql://lab:p%40ss@db.example:5433/study?sslmode=require")
    assert (
        db.url("prefect", "postgresql+asyncpg")
        == "postgresql+asyncpg://lab@db.example:5433/study_prefect?sslmode=require"
    )
    assert db.url("mlflow") == "postgresql://lab@db.example:5433/study_mlflow?sslmode=require"
    assert db.env() == {"PGPASSWORD": "p@ss"} and db.shown == "postgresql://lab@db.example:5433/study"
    assert servers.database("postgres://db.example").url("mlflow") == "postgresql://db.example/rnnlab_mlflow"
    with pytest.raises(servers.ServerError, match="takes a PostgreSQL URL"):
        servers.database("mysql://lab@db.example/team")


def test_credentials_move_out_of_urls_into_the_clients_variables_and_serve_both(monkeypatch):
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{USER}:{PASSWORD}@tracking.example:5000")
    monkeypatch.setenv("PREFECT_API_URL", "http://orchestration.example:4200/api")
    runtime_env.share_credentials()
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (USER, PASSWORD)
    assert os.environ["PREFECT_API_AUTH_STRING"] == f"{USER}:{PASSWORD}"  # one login for both servers
    shown = runtime_env.redact(f"failed: http://{USER}:{PASSWORD}@h:5000/api and {PASSWORD} and http://lab@db/x")
    assert shown == "failed: http://***@h:5000/api and *** and http://lab@db/x"


# --- both servers with credentials, on loopback ------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """`rnnlab server start` with credentials (MLflow's pair only: rnnlab gives Prefect the same), on SQLite; both
    stopped (and checked dead) after the module."""
    home = tmp_path_factory.mktemp("team-home")
    env = clean_env(home, MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
    started = start_servers(env)
    state = started["state"]
    try:
        yield {"home": home, "env": env, "console": started["console"], **state}
    finally:
        stop_servers(env, state)


def test_both_servers_refuse_a_request_without_the_credentials_with_401(guarded):
    mlflow, prefect = guarded["mlflow"]["url"], guarded["prefect"]["url"]
    assert guarded["mlflow"]["auth"] and guarded["prefect"]["auth"]
    searched = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    flows = f"{prefect}/flows/filter"
    for login in (None, f"{USER}:wrong-password-123"):
        assert status_code(searched, login) == 401
        assert status_code(flows, login, "POST", b"{}") == 401
    assert status_code(searched, f"{USER}:{PASSWORD}") == 200
    assert status_code(flows, f"{USER}:{PASSWORD}", "POST", b"{}") == 200
    # Their health checks stay open: rnnlab's own probes, and a load balancer's.
    assert status_code(f"{mlflow}/health") == 200 and status_code(f"{prefect}/health") == 200


def test_an_authenticated_client_records_a_run_with_artifacts_on_the_server_and_reads_it_back(guarded, monkeypatch):
    from tasks.record import tracking

    with client_env(
        monkeypatch, guarded["mlflow"]["url"], MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD
    ):
        experiment = tracking.experiment_id("team-client")
        client = tracking.client()
        assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:/")
        run_id = tracking.open_run("team-client", "probe", {"model.cell": "lstm"}, {})
        tracking.log_metrics(run_id, {"valid_ppl": 123.5})
        client.log_text(run_id, "served", "notes/probe.txt")
        tracking.close_run(run_id)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics["valid_ppl"] == 123.5
        assert Path(client.download_artifacts(run_id, "notes/probe.txt", str(guarded["home"]))).read_text() == "served"
    # The server keeps the artifact in its own store (mlflow-artifacts:/ → the project's mlruns/artifacts).
    assert list((guarded["home"] / "mlruns" / "artifacts").glob(f"*/{run_id}/artifacts/notes/probe.txt"))
    recorded = json.dumps([run.data.params, run.data.tags])
    assert PASSWORD not in recorded and USER not in recorded
    with prefect_client(guarded["prefect"]["url"], f"{USER}:{PASSWORD}") as prefect:
        flow_run = prefect.create_flow_run(team_probe)
        assert prefect.read_flow_run(flow_run.id).flow_id == prefect.read_flow_by_name("team-probe").id


def test_a_command_passes_the_credentials_of_its_environment_to_both_servers_and_shows_them_nowhere(
    guarded, tiny_corpus, monkeypatch
):
    """`rnnlab train` with the credentials in the tracking URI itself (user:password@): the run is recorded through
    both servers, and the credentials are in no param, tag, flow-run parameter, console line or server log."""
    env = clean_env(
        guarded["home"],
        MLFLOW_TRACKING_URI=guarded["mlflow"]["url"].replace("http://", f"http://{USER}:{PASSWORD}@"),
        PREFECT_API_URL=guarded["prefect"]["url"],
    )
    done = rnnlab(
        "train", str(RUN_CONFIG), f"data.corpus={tiny_corpus}", "experiment=team-train", *TINY, "--json", env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    console = done.stdout + done.stderr + guarded["console"]
    assert PASSWORD not in console and f"{USER}:" not in console
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["tracking_uri"] == guarded["mlflow"]["url"]
    from tasks.record import tracking

    with client_env(
        monkeypatch, guarded["mlflow"]["url"], MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD
    ):
        run = tracking.client().get_run(result["run_id"])
        artifacts = [a.path for a in tracking.client().list_artifacts(result["run_id"])]
    assert run.info.status == "FINISHED" and artifacts
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    with prefect_client(guarded["prefect"]["url"], f"{USER}:{PASSWORD}") as prefect:
        flow_run = prefect.read_flow_run(run.data.tags["prefect.flow_run_id"])
    assert flow_run.state_type.value == "COMPLETED"
    recorded = json.dumps([run.data.params, run.data.tags, flow_run.parameters], default=str)
    assert PASSWORD not in recorded and f"{USER}:" not in recorded
    for path in (guarded["home"] / ".servers").iterdir():
        assert PASSWORD not in path.read_text(errors="replace"), path


def test_a_command_refuses_an_experiment_with_local_artifacts_in_one_line_with_exit_2_until_it_is_renamed(
    guarded, tiny_corpus, monkeypatch
):
    """Through a tracking server, the runs' artifacts of an experiment rooted at a local path would go to each
    client's own disk. The refusal names the way out, and it works: once the old experiment is renamed (the command
    the message gives), the name records on the server's artifact store."""
    from tasks.record import tracking

    local = (guarded["home"] / "elsewhere").as_uri()
    credentials = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    with client_env(monkeypatch, guarded["mlflow"]["url"], **credentials):
        tracking.client().create_experiment("team-local", artifact_location=local)
    env = clean_env(
        guarded["home"],
        MLFLOW_TRACKING_URI=guarded["mlflow"]["url"],
        PREFECT_API_URL=guarded["prefect"]["url"],
        PREFECT_API_AUTH_STRING=f"{USER}:{PASSWORD}",  # Prefect's pair alone: rnnlab gives MLflow the same
    )
    done = rnnlab("train", str(RUN_CONFIG), f"data.corpus={tiny_corpus}", "experiment=team-local", *TINY, env=env)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and f"experiment 'team-local' keeps its artifacts at {local}, a local path" in line
    assert PASSWORD not in done.stderr
    rename = re.search(r"MLFLOW_TRACKING_URI=\S+ (mlflow experiments rename .*') \(its runs", line)
    assert rename, line
    command = shlex.split(rename[1])
    with client_env(monkeypatch, guarded["mlflow"]["url"], **credentials):
        done = subprocess.run(
            [str(Path(sys.executable).parent / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            env={**os.environ},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        experiment = tracking.client().get_experiment(tracking.experiment_id("team-local"))
        assert experiment.artifact_location.startswith("mlflow-artifacts:/")
        assert tracking.client().get_experiment_by_name("team-local (local artifacts)").artifact_location == local
    assert tracking.local_artifact_root("/data/mlruns/3") and not tracking.local_artifact_root("mlflow-artifacts:/3")


# --- both servers on PostgreSQL ----------------------------------------------------------------------------------


def pg_binary(name: str) -> str | None:
    """A PostgreSQL program: on the PATH, else in Debian's /usr/lib/postgresql/<version>/bin (the newest)."""
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return shutil.which(name) or (installed[-1] if installed else None)


def need_postgres() -> None:
    if pg_binary("initdb") and pg_binary("pg_ctl"):
        return
    reason = "PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install postgresql)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI runs the PostgreSQL tests (.ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def private_cluster(password: str):
    """A PostgreSQL cluster of its own in a temporary folder, on a loopback port, superuser `rnnlab` with a password
    (scram-sha-256 for every connection); stopped and removed after, whatever happens. As root, it runs as the
    `postgres` user (PostgreSQL refuses root)."""
    need_postgres()
    folder = Path(tempfile.mkdtemp(prefix="rnnlab-pg-"))  # not under pytest's root-only tmp: postgres must enter it
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)

    data = folder / "data"
    started = False
    try:
        secret = folder / "pw"
        secret.write_text(password)
        if as_user:
            shutil.chown(secret, "postgres")
        made = run(pg_binary("initdb"), "-D", str(data), "-U", "rnnlab", "--auth=scram-sha-256", f"--pwfile={secret}")
        assert made.returncode == 0, made.stderr[-2000:]
        secret.unlink()
        for _ in range(3):
            port = free_port()
            options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
            done = run(pg_binary("pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start")
            started = done.returncode == 0
            if started or "already in use" not in (folder / "log").read_text(errors="replace"):
                break
        assert started, (folder / "log").read_text(errors="replace")[-2000:]
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        yield {"port": port, "postmaster": postmaster}
    finally:
        if started:
            run(pg_binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_the_servers_databases_are_created_on_postgresql_once_or_named_for_a_dba(monkeypatch):
    """Quick (no server starts): on a private cluster, `rnnlab server start --database`'s preparation creates a
    database per store, again finds them, names a wrong password without it, and says what a user who may not create
    databases must ask for."""
    import psycopg2

    with private_cluster("cluster-pass-1234") as cluster:
        monkeypatch.setenv("PGPASSWORD", "cluster-pass-1234")  # as a team would keep it out of the URL
        address = f"127.0.0.1:{cluster['port']}"
        auth = servers.Auth(f"{USER}:{PASSWORD}", USER, PASSWORD)
        for _ in range(2):  # created, then found
            servers.prepare(servers.database(f"postgresql://rnnlab@{address}/team"), auth)
        dsn = f"postgresql://rnnlab@{address}/postgres"
        with contextlib.closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'team%' ORDER BY datname")
            assert [row[0] for row in cursor.fetchall()] == ["team_mlflow", "team_mlflow_auth", "team_prefect"]
            cursor.execute("CREATE ROLE member LOGIN PASSWORD 'member-pass-99'")  # no CREATEDB
            connection.commit()
        with pytest.raises(servers.ServerError, match="password authentication failed") as refused:
            servers.prepare(servers.database(f"postgresql://rnnlab:wrong-pass-77@{address}/team"), None)
        assert "wrong-pass-77" not in str(refused.value)
        with pytest.raises(servers.ServerError) as refused:
            servers.prepare(servers.database(f"postgresql://member:member-pass-99@{address}/other"), None)
        assert "cannot create the database(s) other_prefect, other_mlflow" in str(refused.value)
        assert "grant that user CREATEDB" in str(refused.value) and "member-pass-99" not in str(refused.value)


@pytest.mark.slow  # 47-59 s measured on 2 shared cores: the quick test above runs by default
def test_both_servers_on_postgresql_record_a_run_and_read_it_back_then_leave_nothing(tmp_path, monkeypatch):
    """A private cluster; `rnnlab server start --database` with credentials (the database's password only in
    PGPASSWORD); a run with an artifact recorded and read back, a Prefect flow run created and read back; each store
    in its own database; then the servers and the cluster stopped, no process of theirs left."""
    import psycopg2

    db_password = "cluster-pass-4821"
    with private_cluster(db_password) as cluster:
        env = clean_env(tmp_path, MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
        env["PGPASSWORD"] = db_password
        url = f"postgresql://rnnlab@127.0.0.1:{cluster['port']}/team"
        began = time.monotonic()
        started = start_servers(env, "--database", url)
        took = time.monotonic() - began
        state = started["state"]
        try:
            assert state["mlflow"]["database"] == f"postgresql://rnnlab@127.0.0.1:{cluster['port']}/team_mlflow"
            from tasks.record import tracking

            with client_env(
                monkeypatch, state["mlflow"]["url"], MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD
            ):
                assert status_code(f"{state['mlflow']['url']}/api/2.0/mlflow/experiments/search?max_results=1") == 401
                run_id = tracking.open_run("team-pg", "probe", {"model.cell": "gru"}, {})
                tracking.log_metrics(run_id, {"valid_ppl": 99.0})
                tracking.client().log_text(run_id, "on postgres", "probe.txt")
                tracking.close_run(run_id)
                run = tracking.client().get_run(run_id)
                text = Path(tracking.client().download_artifacts(run_id, "probe.txt", str(tmp_path))).read_text()
            assert (run.info.status, run.data.metrics["valid_ppl"], text) == ("FINISHED", 99.0, "on postgres")
            with prefect_client(state["prefect"]["url"], f"{USER}:{PASSWORD}") as prefect:
                flow_run = prefect.create_flow_run(team_probe)
                assert prefect.read_flow_run(flow_run.id).name == flow_run.name
            queries = {
                "team_mlflow": ("SELECT count(*) FROM runs WHERE run_uuid = %s", run_id),
                "team_prefect": ("SELECT count(*) FROM flow_run WHERE id = %s", str(flow_run.id)),
                "team_mlflow_auth": ("SELECT count(*) FROM users WHERE username = %s", USER),
            }
            for database, (query, key) in queries.items():
                dsn = f"postgresql://rnnlab@127.0.0.1:{cluster['port']}/{database}"
                with contextlib.closing(psycopg2.connect(dsn, password=db_password)) as connection:
                    with connection.cursor() as cursor:
                        cursor.execute(query, (key,))
                        assert cursor.fetchone()[0] == 1, database
            for path in (tmp_path / ".servers").iterdir():
                assert db_password not in path.read_text(errors="replace") and PASSWORD not in path.read_text(), path
            assert db_password not in started["console"] and PASSWORD not in started["console"]
        finally:
            stop_servers(env, state)
        print(f"both servers on PostgreSQL answered {took:.1f} s after `rnnlab server start`")
    assert not pid_alive(cluster["postmaster"])
