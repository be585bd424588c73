"""`rnnlab compare` keeps its answer until the store or the code changes (rnnlab/runtime/answers.py): asked again, it
prints the same bytes without loading MLflow; after any change to the store it computes the answer again, and it never
keeps one that a write in the same clock tick could have made stale."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, rnnlab_command
from mlflow import MlflowClient

from rnnlab.runtime import answers


def compare(home: Path, *args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    command = rnnlab_command("compare", *args)
    if importtime:
        command[1:1] = ["-X", "importtime"]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "RNNLAB_HOME": str(home)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def settled(home: Path) -> None:
    """Wait until the store last changed more than `answers.SETTLED_S` ago: before that no answer is kept."""
    changed = max(os.stat(home / "mlruns" / "mlflow.db").st_mtime, os.stat(home / "mlruns" / "mlflow.db").st_ctime)
    time.sleep(max(0.0, changed + answers.SETTLED_S + 0.2 - time.time()))


def loaded(importtime_log: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


@pytest.fixture
def own_store(ui_study, tmp_path) -> Path:
    """A project with a copy of the tiny study's store, free to change (the artifacts stay where they were)."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy2(ui_study["home"] / "mlruns" / "mlflow.db", tmp_path / "mlruns" / "mlflow.db")
    return tmp_path


@pytest.fixture
def fake_store(tmp_path, monkeypatch) -> Path:
    """A project whose store is a plain file (the cache reads only its stat), with its own cache folder."""
    monkeypatch.setenv("RNNLAB_HOME", str(tmp_path))
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "mlruns").mkdir()
    db = tmp_path / "mlruns" / "mlflow.db"
    db.write_bytes(b"a store")
    return db


def test_asked_again_of_an_unchanged_store_compare_prints_the_same_answer_without_loading_mlflow(ui_study):
    home, study = ui_study["home"], ui_study["study"]
    settled(home)
    computed = compare(home, study, "--fresh", importtime=True)
    assert "mlflow" in loaded(computed.stderr) and computed.stdout.startswith("Question: ")
    again = compare(home, study, importtime=True)
    assert again.stdout == computed.stdout  # to the last byte
    assert {"mlflow", "pandas", "scipy", "torch"}.isdisjoint(loaded(again.stderr))
    assert "the store and the code are unchanged since (--fresh computes it again)" in again.stderr
    as_json = compare(home, study, "--json")  # another command, another answer: not the text one
    assert as_json.stdout.startswith("{")


def test_after_the_store_changes_compare_computes_the_answer_again(own_store):
    settled(own_store)
    before = compare(own_store, "tiny_ui")
    settled(own_store)
    assert "unchanged since" in compare(own_store, "tiny_ui").stderr
    store = MlflowClient(f"sqlite:///{own_store / 'mlruns' / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("tiny_ui")
    trained = store.search_runs([experiment.experiment_id], "tags.`rnnlab.outcome` = 'trained'")[0]
    store.set_tag(trained.info.run_id, "rnnlab.outcome", "failed_to_learn")  # one write, of one tag
    after = compare(own_store, "tiny_ui")
    assert "unchanged since" not in after.stderr and after.stdout != before.stdout
    assert "1/2 trained" in after.stdout and after.stdout == compare(own_store, "tiny_ui", "--fresh").stdout


def test_no_answer_is_kept_if_the_store_changed_while_or_just_before_it_was_computed(fake_store, monkeypatch):
    db = fake_store
    monkeypatch.setattr(answers, "SETTLED_S", 3600.0)  # as if written in the same clock tick as the read
    assert not answers.lookup("compare", "s").keep("answer\n")
    monkeypatch.setattr(answers, "SETTLED_S", 0.0)
    changed_meanwhile = answers.lookup("compare", "s")
    db.write_bytes(b"a store, changed")
    assert not changed_meanwhile.keep("answer\n")
    unchanged = answers.lookup("compare", "s")
    assert unchanged.found is None and unchanged.keep("answer\n")
    assert answers.lookup("compare", "s").found["stdout"] == "answer\n"
    assert answers.lookup("compare", "s", "--json").found is None
    os.utime(db, ns=(0, 0))  # only the times change (`touch`): the size is the same
    assert answers.lookup("compare", "s").found is None


def test_a_change_to_the_code_is_a_change(fake_store, tmp_path, monkeypatch):
    monkeypatch.setattr(answers, "SETTLED_S", 0.0)
    source = tmp_path / "verdict.py"
    source.write_text("x = 1\n")
    monkeypatch.setattr(answers, "source_files", lambda: [source])
    assert answers.lookup("compare", "s").keep("answer\n") and answers.lookup("compare", "s").found
    source.write_text("x = 22\n")
    assert answers.lookup("compare", "s").found is None


def test_nothing_is_kept_for_a_tracking_server_or_in_a_folder_others_may_write(fake_store, tmp_path, monkeypatch):
    monkeypatch.setattr(answers, "SETTLED_S", 0.0)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # its changes cannot be seen from here
    assert answers.lookup("compare", "s").key is None and not answers.lookup("compare", "s").keep("answer\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert answers.lookup("compare", "s").keep("answer\n")
    (tmp_path / "cache" / "answers").chmod(0o777)  # another user could have planted any answer there
    assert answers.lookup("compare", "s").found is None and not answers.lookup("compare", "s").keep("answer\n")


def test_the_cache_holds_a_bounded_number_of_answers_the_oldest_go_first(fake_store, monkeypatch):
    monkeypatch.setattr(answers, "SETTLED_S", 0.0)
    monkeypatch.setattr(answers, "KEPT", 2)
    for study in ("a", "b", "c"):
        assert answers.lookup("compare", study).keep(f"answer {study}\n")
        time.sleep(0.02)  # apart by more than a timestamp tick
    assert [answers.lookup("compare", s).found is not None for s in ("a", "b", "c")] == [False, True, True]
