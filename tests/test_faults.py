"""Nothing lost, nothing twice, nothing left behind: a study killed at any moment leaves no process and resumes; two
executions of one study train each cell once; Ctrl-C and SIGTERM stop a command in seconds, in one line."""

import codecs
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, RUN_CONFIG, SESSION_MARK, cut_corpus, processes_left, rnnlab_command
from test_flows_study import cell_runs, rnnlab, store, tiny_study, wait_for

# Cells slow enough to be caught mid-way (about 5 s each on 2 cores), with a checkpoint every 30 steps.
STEADY = {
    "model.embedding_size": 64,
    "model.hidden_size": 64,
    "train.batch_size": 20,
    "train.bptt": 35,
    "train.max_epochs": 50,
    "train.max_steps": 150,
    "train.val_every_n_steps": 30,
}


@pytest.fixture(scope="module")
def longer_corpus(tmp_path_factory) -> Path:
    return cut_corpus(tmp_path_factory.mktemp("corpus") / "longer", train_lines=3000, valid_lines=100)


class Command:
    """`rnnlab …` as a process of its own group, its own session mark (to find every process it starts), and its
    stderr read line by line as it comes."""

    def __init__(self, *args: str, home: Path):
        self.mark = uuid.uuid4().hex
        env = {**os.environ, "RNNLAB_HOME": str(home), SESSION_MARK: self.mark}
        self.process = subprocess.Popen(
            rnnlab_command(*args),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        os.set_blocking(self.process.stderr.fileno(), False)
        self.stderr = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")()

    def read(self) -> str:
        """All it has written to stderr so far. From the pipe's bytes: a non-blocking text read with nothing new
        raises TypeError inside Python's decoder instead of returning nothing."""
        while True:
            try:
                chunk = os.read(self.process.stderr.fileno(), 1 << 16)
            except BlockingIOError:  # nothing new yet
                break
            if not chunk:  # the pipe is closed: it has ended
                break
            self.stderr += self.decoder.decode(chunk)
        return self.stderr

    def wait_for_line(self, text: str, timeout: float = 300) -> None:
        wait_for(lambda: text in self.read() or self.process.poll() is not None, timeout, f"{text!r} on stderr")
        assert self.process.poll() is None, f"ended before {text!r}:\n{self.read()[-3000:]}"

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """(exit code, stdout, all of stderr) once it has ended."""
        out, err = self.process.communicate(timeout=timeout)
        self.stderr += err or ""
        return self.process.returncode, out, self.stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def checkpoints(home: Path) -> set[str]:
    """The cells (by key) that have a checkpoint to resume from."""
    return {p.parent.parent.name for p in (home / ".cache" / "rnnlab" / "cells").glob("*/checkpoints/last.ckpt")}


@pytest.fixture(scope="module")
def recovered_study(tmp_path_factory, longer_corpus):
    """A study SIGKILLed at three moments (start-up, its workers starting, mid-cell), each time checked for survivors
    10 s later, then run again to the end: (its project, the cells that had a checkpoint, the rerun)."""
    home = tmp_path_factory.mktemp("faults")
    path = tiny_study(home, "tiny_faults", longer_corpus, {"model.cell": ["lstm", "gru"]}, **STEADY)
    moments = {
        "start-up": lambda c: c.wait_for_line("rnnlab: study 'tiny_faults'"),
        "workers starting": lambda c: c.wait_for_line("0/2 cells done"),
        "mid-cell": lambda c: wait_for(lambda: checkpoints(home) or c.process.poll() is not None, 300, "a checkpoint"),
    }
    survivors = {}
    for moment, reach in moments.items():
        study = Command("study", str(path), home=home)
        try:
            reach(study)
            assert study.process.poll() is None, f"ended before {moment}:\n{study.read()[-3000:]}"
            study.process.send_signal(signal.SIGKILL)
            study.process.wait(30)
            survivors[moment] = [p.cmdline()[:4] for p in processes_left(grace=10.0, mark=study.mark)]
        finally:
            study.kill()
    interrupted = checkpoints(home)
    return home, survivors, interrupted, rnnlab("study", str(path), "--json", home=home)


def test_a_study_killed_at_any_moment_leaves_nothing_behind_and_its_rerun_finishes_every_cell_once(recovered_study):
    home, survivors, interrupted, again = recovered_study
    assert survivors == {"start-up": [], "workers starting": [], "mid-cell": []}  # nothing alive 10 s after a kill
    assert interrupted, "the mid-cell kill came before any checkpoint"
    assert again.returncode == 0, again.stderr[-4000:]
    runs = store(home).search_runs([store(home).get_experiment_by_name("tiny_faults").experiment_id])
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    finished = [r for r in cell_runs(home, "tiny_faults") if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["factor.model.cell"] for r in finished) == ["gru", "lstm"]  # each cell exactly once
    for run in finished:
        metrics = run.data.metrics
        assert metrics["train_steps"] == STEADY["train.max_steps"]
        if run.data.tags["rnnlab.cell_key"] in interrupted:  # resumed from its checkpoint, not from zero ...
            assert int(run.data.tags["rnnlab.resumed_from_step"]) > 0
        # ... and its time and speed are those of the whole training: every step's tokens over the time of them all
        tokens = metrics["train_steps"] * STEADY["train.batch_size"] * STEADY["train.bptt"]
        assert metrics["tokens_per_second"] * metrics["train_seconds"] == pytest.approx(tokens, rel=0.02)


def test_two_executions_of_one_study_train_each_cell_once(tmp_path, longer_corpus):
    """A cron execution meeting a manual one: the later waits for the cell the other is training, then reuses it."""
    path = tiny_study(tmp_path, "tiny_twice", longer_corpus, {"model.cell": ["lstm", "gru"]}, **STEADY)
    first = Command("study", str(path), "--json", home=tmp_path)
    time.sleep(1)
    second = Command("study", str(path), "--json", home=tmp_path)
    try:
        results = [c.finish(timeout=600) for c in (first, second)]
    finally:
        first.kill()
        second.kill()
    for code, _out, err in results:
        assert code == 0, err[-4000:]
    runs = store(tmp_path).search_runs([store(tmp_path).get_experiment_by_name("tiny_twice").experiment_id])
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    cells = [r for r in runs if r.data.tags.get("rnnlab.role") == "cell"]
    assert all(r.info.status == "FINISHED" for r in cells)
    assert sorted(r.data.tags["factor.model.cell"] for r in cells) == ["gru", "lstm"]  # one run per cell: none twice
    assert all("rnnlab.resumed_from_step" not in r.data.tags for r in cells)  # nor resumed from a live checkpoint
    keys = [r.data.tags["rnnlab.cell_key"] for r in cells]
    assert len(keys) == len(set(keys)) == 2  # exactly one FINISHED run per cell key
    # Who trains which cell depends on start-up time, not on which was launched first: one may train both, or each
    # one; the other reuses (after waiting for it, where it met the cell in training). Together they trained each once.
    summaries = [json.loads(out.splitlines()[-1]) for _, out, _ in results]
    assert sum(s["trained"] for s in summaries) == 2
    assert all(s["trained"] + s["reused"] == 2 for s in summaries)


def interrupt_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "interrupted by" in line]


def test_ctrl_c_stops_a_training_run_with_one_line_and_exit_130(tmp_path, longer_corpus):
    train = Command(
        "train",
        str(REPO / "conf" / "runs" / "ptb_small.yaml"),
        f"data.corpus={longer_corpus}",
        "model.hidden_size=64",
        "model.embedding_size=64",
        "train.max_steps=100000",
        "train.val_every_n_steps=30",
        "train.num_threads=1",
        "--json",
        home=tmp_path,
    )
    try:
        train.wait_for_line("valid ppl")
        os.killpg(train.process.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the foreground group
        code, out, err = train.finish(timeout=120)  # a bound, not a speed claim: it stops in seconds when idle
    finally:
        train.kill()
    assert code == 130, (code, err[-3000:])
    assert "Traceback" not in err and interrupt_lines(err) == [
        "rnnlab: train interrupted by SIGINT: runs in progress were closed as KILLED; run the same command again to "
        "resume"
    ]
    assert json.loads(out.splitlines()[-1]) == {"status": "KILLED", "signal": "SIGINT", "exit_code": 130}
    runs = store(tmp_path).search_runs([store(tmp_path).get_experiment_by_name("ptb_small").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert not processes_left(grace=10.0, mark=train.mark)


def test_sigterm_stops_a_study_and_its_cells_with_one_line_and_exit_143(tmp_path, longer_corpus):
    path = tiny_study(
        tmp_path, "tiny_term", longer_corpus, {"model.cell": ["lstm", "gru"]}, **{**STEADY, "train.max_steps": 100000}
    )
    study = Command("study", str(path), home=tmp_path)
    try:
        wait_for(
            lambda: len(checkpoints(tmp_path)) == 2 or study.process.poll() is not None, 300, "both cells to train"
        )
        study.process.send_signal(signal.SIGTERM)  # the main process alone: a service manager, `kill`
        code, _, err = study.finish(timeout=120)  # a bound, not a speed claim: it stops in seconds when idle
    finally:
        study.kill()
    assert code == 143, (code, err[-3000:])
    assert "Traceback" not in err and len(interrupt_lines(err)) == 1
    runs = store(tmp_path).search_runs([store(tmp_path).get_experiment_by_name("tiny_term").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"KILLED"}  # the parent and both cells
    assert not processes_left(grace=10.0, mark=study.mark)
    progress = tmp_path / ".cache" / "rnnlab" / "progress"  # the display's status files went with the study
    assert not list(progress.glob("*/*")), list(progress.glob("*/*"))


def in_namespace(script: str) -> list[str]:
    """`sh -c script` in a mount namespace of its own (as root there), where a test may mount a small or read-only
    filesystem without touching the machine's."""
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]


def namespaces_work() -> bool:
    try:
        return (
            subprocess.run(
                in_namespace("mount -t tmpfs -o size=1m tmpfs /mnt"), capture_output=True, timeout=30
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


needs_namespaces = pytest.mark.skipif(not namespaces_work(), reason="cannot mount in a user namespace here")


@needs_namespaces
def test_a_full_disk_ends_the_run_failed_in_one_line_naming_it(tmp_path, longer_corpus):
    """A project on a 70 MB disk: the checks pass (50 MB free), then a checkpoint of 58 MB does not fit."""
    project = tmp_path / "small-disk"
    project.mkdir()
    train = " ".join(
        rnnlab_command(
            "train",
            str(REPO / "conf" / "runs" / "ptb_small.yaml"),
            f"data.corpus={longer_corpus}",
            "model.hidden_size=650",
            "model.embedding_size=650",
            "train.max_steps=3",
            "train.val_every_n_steps=3",
            "train.num_threads=1",
        )
    )
    script = (
        f"mount -t tmpfs -o size=70m tmpfs {project} && cd {REPO} && RNNLAB_HOME={project} {train}; "
        f"echo exit=$?; {sys.executable} -c \"import sqlite3; print(sqlite3.connect('{project}/mlruns/mlflow.db')"
        ".execute('select status from runs').fetchall())\""
    )
    done = subprocess.run(in_namespace(script), capture_output=True, text=True, timeout=300)
    assert "exit=1" in done.stdout, done.stderr[-3000:]
    assert "[('FAILED',)]" in done.stdout  # recorded as such, not left RUNNING
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("rnnlab: error: no space left on device"), done.stderr[-3000:]
    assert "Traceback" not in done.stderr


@needs_namespaces
def test_compare_and_report_work_on_a_store_they_cannot_write(recovered_study, tiny_corpus):
    home = recovered_study[0]
    rnnlab_ = " ".join(rnnlab_command())
    script = (
        f"mount --bind {home} {home} && mount -o remount,ro,bind {home} {home} && "
        f"cd {home} && export RNNLAB_HOME={home}; "
        f"{rnnlab_} compare tiny_faults; echo compare=$?; "
        f"{rnnlab_} report tiny_faults --out {home.parent / 'elsewhere'}; echo report=$?; "
        f"{rnnlab_} report tiny_faults; echo report-here=$?; "
        f"{rnnlab_} train {RUN_CONFIG} data.corpus={tiny_corpus}; echo train=$?"
    )
    done = subprocess.run(in_namespace(script), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "compare=0" in done.stdout and "Answer:" in done.stdout, done.stderr[-3000:]
    assert "report=0" in done.stdout and (home.parent / "elsewhere" / "tiny_faults" / "report.md").exists()
    assert "not logged to the parent run" in done.stderr
    assert (
        "report-here=2" in done.stdout
        and f"cannot write the report in {home / 'reports' / 'tiny_faults'}" in done.stderr
    )
    assert "train=2" in done.stdout and f"the project directory {home} is not writable" in done.stderr
    assert "Traceback" not in done.stderr
