"""`rnnlab ui`: MLflow's UI over the project's store, light and quick on a small machine (one web worker, no job
runner, listening within 10 s), serving the runs' artifacts, and gone, with every process it started, on Ctrl-C or
SIGTERM. Real processes on a real tiny study (`ui_study`, conftest)."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import REPO, SESSION_MARK, processes_left, rnnlab_command


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def unused_port() -> int:
    """A port free at the moment of asking (for MLflow's own CLI, which binds its port itself: rnnlab cannot hand it a
    bound socket as it does to the web worker; a small race with another program, in one slow test)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class UI:
    """`rnnlab ui` started as a person starts it in a terminal: its own process group (the terminal's Ctrl-C goes to
    that group), its processes marked so that what is left of them can be found."""

    def __init__(self, home: Path, *args: str, port: int = 0):
        """`port` 0: the system picks a free one, which rnnlab binds and says in its first line (no port is guessed
        here, and none can be taken between a guess and the server's start)."""
        self.url = f"http://127.0.0.1:{port}" if port else None
        self.first_line: str | None = None
        self.mark = f"ui-{uuid.uuid4().hex[:8]}"
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            rnnlab_command("ui", *args, "--port", str(port)),
            cwd=REPO,
            env={**os.environ, "RNNLAB_HOME": str(home), SESSION_MARK: self.mark},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def wait_listening(self, timeout: float = 120) -> float:
        """Seconds from the command's start until the server answers (with --port 0: until it says where)."""
        if self.url is None:
            self.first_line = self.process.stderr.readline().rstrip("\n")  # printed once the server answers
            found = re.search(r" at (http://127\.0\.0\.1:\d+) \(", self.first_line)
            assert found, f"rnnlab ui said no address: {self.first_line}{self.process.stderr.read()[-3000:]}"
            self.url = found[1]
        while not answers(self.url + "/health"):
            assert self.process.poll() is None, f"rnnlab ui exited: {self.process.stderr.read()[-3000:]}"
            assert time.monotonic() - self.started < timeout, "rnnlab ui did not answer"
            time.sleep(0.05)
        return time.monotonic() - self.started

    def lines(self, count: int) -> list[str]:
        return [self.process.stderr.readline().rstrip("\n") for _ in range(count)]

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        _, rest = self.process.communicate(timeout=60)
        return self.process.returncode, rest


@pytest.fixture(scope="module")
def ui(ui_study):
    started = UI(ui_study["home"], ui_study["study"])
    started.wait_listening()
    yield started
    started.stop()
    assert not processes_left(grace=10, mark=started.mark)


def test_it_listens_in_2_processes_without_a_job_runner(ui):
    # `mlflow ui` of MLflow 3.17 took 25-35 s here, in ~13 processes (4 web workers, a job runner, 7 job consumers);
    # how fast rnnlab ui answers is measured by benchmarks/bench_ui_start.py, not asserted here
    tree = [psutil.Process(ui.process.pid), *psutil.Process(ui.process.pid).children(recursive=True)]
    commands = [" ".join(p.cmdline()) for p in tree]
    assert len(tree) <= 2, commands  # rnnlab and one web worker (uvicorn on MLflow's app)
    assert not any("huey" in c or "job" in c for c in commands), commands
    assert "--workers 1" in " ".join(commands)


def test_it_prints_its_address_and_the_studys_runs_page(ui, ui_study):
    first, (second,) = ui.first_line, ui.lines(1)
    assert first.startswith("rnnlab: MLflow UI for sqlite:///") and first.endswith(f"at {ui.url} (Ctrl-C stops it)")
    page = f"{ui.url}/#/experiments/{ui_study['experiment_id']}/runs?workflowType=machine_learning"
    assert second == f"rnnlab: study 'tiny_ui': {page}"  # what it shows there: tests/test_browser.py
    assert answers(page)  # the UI's page itself (the fragment is the browser's)


def test_it_serves_the_runs_artifacts_from_the_projects_store(ui, ui_study):
    from mlflow import MlflowClient

    run_id = ui_study["parent_run_id"]
    client = MlflowClient(f"sqlite:///{ui_study['home'] / 'mlruns' / 'mlflow.db'}")
    on_disk = Path(urllib.parse.urlparse(client.get_run(run_id).info.artifact_uri).path) / "study.yaml"
    assert on_disk.is_relative_to(ui_study["home"] / "mlruns")
    # what the UI's artifact browser asks for: the list, then the file
    with urllib.request.urlopen(f"{ui.url}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}", timeout=10) as r:
        assert "study.yaml" in r.read().decode()
    with urllib.request.urlopen(f"{ui.url}/get-artifact?path=study.yaml&run_uuid={run_id}", timeout=10) as r:
        assert r.read() == on_disk.read_bytes()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_it_with_every_process_it_started(ui_study, sig, code):
    ui = UI(ui_study["home"])
    ui.wait_listening()
    tree = [p.pid for p in psutil.Process(ui.process.pid).children(recursive=True)]
    assert tree  # the server runs as its child
    returncode, stderr = ui.stop(sig)
    assert returncode == code and f"rnnlab: MLflow UI stopped ({signal.Signals(sig).name})" in stderr
    assert "Traceback" not in stderr
    assert not processes_left(grace=5, mark=ui.mark)
    assert not answers(ui.url + "/health")


def test_an_unknown_study_is_named_with_the_experiments_there_and_nothing_starts(ui_study):
    ui = UI(ui_study["home"], "tiny_uii")
    _, stderr = ui.process.communicate(timeout=60)  # it ends by itself
    assert ui.process.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        f"rnnlab: error: no study or experiment 'tiny_uii' in sqlite:///"
        f"{ui_study['home'] / 'mlruns' / 'mlflow.db'}; there are: Default, tiny_ui"
    ]
    assert not processes_left(mark=ui.mark)


@pytest.mark.slow  # ~15 s and 2 GB: MLflow's CLI, its job runner and 7 job consumers
def test_with_jobs_mlflows_job_runner_runs_too_and_a_signal_stops_all_of_it(ui_study):
    ui = UI(ui_study["home"], "--jobs", port=unused_port())  # MLflow's own CLI binds the port: one is named
    ui.wait_listening()
    deadline = time.monotonic() + 60
    while not any("_job_runner" in " ".join(p.cmdline()) for p in processes_left(mark=ui.mark)):
        assert time.monotonic() < deadline, "no job runner started"
        time.sleep(0.5)
    returncode, stderr = ui.stop(signal.SIGINT)
    assert returncode == 130 and "Traceback" not in stderr
    assert not processes_left(grace=10, mark=ui.mark)
