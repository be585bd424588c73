"""`rnnlab study` and `rnnlab compare` end to end on tiny real data: a grid of cells × seeds as one Prefect flow,
nested MLflow runs, divergence as a result, resume after SIGKILL, two studies at once on one store."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, RUN_CONFIG, TINY, rnnlab_command
from mlflow import MlflowClient

QUESTION = "Which cell trains, and at which learning rate?"


def tiny_study(
    folder: Path, name: str, tiny_corpus: Path, factors: dict, seeds=(1,), concurrency=2, **overrides
) -> Path:
    """The shipped ptb_small recipe shrunk to seconds per cell, as a study file."""
    tiny = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in TINY)}
    tree = {
        "study": name,
        "question": QUESTION,
        "base": str(RUN_CONFIG),
        "factors": factors,
        "seeds": list(seeds),
        "concurrency": concurrency,
        "overrides": {**tiny, "data.corpus": str(tiny_corpus), "train.lr_schedule": "constant", **overrides},
        "metric": {"name": "valid_ppl", "goal": "min"},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def rnnlab(*args, home: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        rnnlab_command(*args),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ, "RNNLAB_HOME": str(home)},
        **kw,
    )


def store(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")


def cell_runs(home: Path, study: str) -> list:
    exp = store(home).get_experiment_by_name(study)
    return [] if exp is None else store(home).search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'cell'")


@pytest.fixture(scope="module")
def clipping_study(tmp_path_factory, tiny_corpus):
    """A tiny lm_clipping: tanh RNN vs LSTM at a sane lr and at one that must blow up, 2 seeds each, run twice."""
    home = tmp_path_factory.mktemp("study-home")
    path = tiny_study(
        home,
        "tiny_clipping",
        tiny_corpus,
        {"model.cell": ["rnn_tanh", "lstm"], "train.lr": [1.0, 1.0e38]},
        seeds=(1, 2),
        **{"train.clip_norm": None},
    )
    first = rnnlab("study", str(path), "--json", home=home)
    assert first.returncode == 0, first.stderr[-4000:]
    again = rnnlab("study", str(path), "--json", home=home)
    assert again.returncode == 0, again.stderr[-4000:]
    return home, json.loads(first.stdout.splitlines()[-1]), json.loads(again.stdout.splitlines()[-1]), first.stderr


def test_a_study_records_one_parent_and_one_tagged_child_per_cell_and_seed(clipping_study):
    home, result, _, stderr = clipping_study
    assert (result["cells"], result["trained"], result["failed"]) == (8, 8, 0)
    client = store(home)
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["rnnlab.role"] == "study"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "study.yaml",
        "grid.json",
        "comparison.csv",
        "comparison.md",
    }
    children = cell_runs(home, "tiny_clipping")
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    tags = sorted(
        (r.data.tags["factor.model.cell"], r.data.tags["factor.train.lr"], r.data.params["seed"]) for r in children
    )
    assert tags == sorted((c, lr, s) for c in ("rnn_tanh", "lstm") for lr in ("1.0", "1e+38") for s in ("1", "2"))
    assert len({r.data.tags["rnnlab.cell_key"] for r in children}) == 8
    assert "8/8 cells done" in stderr and "ETA" in stderr  # the live progress line
    # a quiet console: rnnlab's own lines, the answer; not the libraries' INFO logs, bars or unactionable warnings
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith(("rnnlab: ", "Question: ", "Answer: ", "  ")) or "|" not in line for line in lines)
    for noise in ("| INFO", "Finished in state", "Downloading artifacts", "could not find the monitored key"):
        assert noise not in stderr


def test_the_mlflow_ui_shows_each_variant_by_a_short_name_and_the_answer_on_the_parent(clipping_study):
    home, result, _, _ = clipping_study
    client = store(home)
    experiment = client.get_experiment_by_name("tiny_clipping")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] == QUESTION  # the description above the runs
    children = cell_runs(home, "tiny_clipping")
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(
        f"{cell} lr={lr} s{seed}" for cell in ("rnn_tanh", "lstm") for lr in ("1.0", "1e38") for seed in (1, 2)
    )
    assert all(r.info.run_name == f"{r.data.tags['rnnlab.variant']} s{r.data.params['seed']}" for r in children)
    # one name, one meaning: a child's factor is its one value (tag factor.<key>), the parent's grid is grid.<key>
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.params["grid.model.cell"] == '["rnn_tanh", "lstm"]'
    assert parent.data.params["grid.train.lr"] == "[1.0, 1e+38]"
    assert not [k for k in parent.data.params if k.startswith("factor.")]
    assert json.loads(parent.data.params["study.budget"]) == {
        "max_epochs": None,
        "max_steps": None,
        "max_minutes": None,
    }
    for run in [parent, *children]:
        assert not [v for v in run.data.params.values() if v in ("None", "True", "False") or "'" in v]
        assert "run_name" not in run.data.params and "experiment" not in run.data.params
    # the answer on the parent's page: its description, and the deciding metric per variant over the seeds
    assert parent.data.tags["mlflow.note.content"].startswith(f"{QUESTION}\n\n**Answer.** ")
    metrics = parent.data.metrics
    table = {row["variant"]: row for row in result["table"]}
    for cell in ("rnn_tanh", "lstm"):
        trained, blew_up = f"{cell} lr:1.0", f"{cell} lr:1e38"
        assert metrics[f"{trained}/valid_ppl_mean"] == pytest.approx(table[f"cell={cell},lr=1.0"]["valid_ppl_mean"])
        assert metrics[f"{trained}/n"] == 2 and metrics[f"{trained}/valid_ppl_log_std"] >= 0
        assert metrics[f"{blew_up}/diverged"] == 2 and metrics[f"{blew_up}/n"] == 0
        assert f"{blew_up}/valid_ppl_mean" not in metrics  # no mean over no seeds
    # charts with readable axes: no stored value is an infinity's stand-in
    for run in children:
        assert all(abs(v) < 1e300 for v in run.data.metrics.values())


def test_a_diverged_cell_is_recorded_as_a_result_and_the_study_goes_on(clipping_study):
    home, result, _, _ = clipping_study
    assert result["diverged"] == 4  # lr 1e38 blows up every cell; the lr 1 cells still finished and were evaluated
    for run in cell_runs(home, "tiny_clipping"):
        blew_up = run.data.tags["factor.train.lr"] == "1e+38"
        assert run.data.tags["rnnlab.outcome"] == ("diverged" if blew_up else "trained")
        assert run.data.tags["rnnlab.outcome_reason"].startswith("the training loss became" if blew_up else "valid_ppl")
        assert ("diverged_step" in run.data.metrics) == blew_up and ("test_ppl" in run.data.metrics) != blew_up


def test_running_the_study_again_reuses_every_finished_cell(clipping_study):
    home, first, again, _ = clipping_study
    assert (again["trained"], again["reused"]) == (0, 8)
    assert len(cell_runs(home, "tiny_clipping")) == 8  # nothing trained twice
    assert again["table"] == first["table"]


def test_compare_builds_the_table_and_the_answer_from_mlflow_alone(clipping_study, tmp_path):
    home, result, _, _ = clipping_study
    done = rnnlab("compare", "tiny_clipping", "--json", "--csv", str(tmp_path / "t.csv"), home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    compared = json.loads(done.stdout)
    assert compared["answer"] == result["answer"] and compared["metric"] == "valid_ppl"
    rows = {row["variant"]: row for row in compared["table"]}
    assert set(rows) == {"cell=rnn_tanh,lr=1.0", "cell=rnn_tanh,lr=1e+38", "cell=lstm,lr=1.0", "cell=lstm,lr=1e+38"}
    runs = [r for r in cell_runs(home, "tiny_clipping") if r.data.tags["rnnlab.cell"] == "cell=lstm,lr=1.0"]
    valid = np.array([r.data.metrics["valid_ppl"] for r in runs])
    lstm = rows["cell=lstm,lr=1.0"]
    assert (lstm["seeds"], lstm["trained"], lstm["diverged"], lstm["failed_to_learn"]) == (2, 2, 0, 0)
    assert lstm["valid_ppl_mean"] == pytest.approx(np.exp(np.log(valid).mean()))  # a geometric mean: in log space
    assert lstm["valid_ppl_low"] < lstm["valid_ppl_mean"] < lstm["valid_ppl_high"]
    blown = rows["cell=lstm,lr=1e+38"]
    assert (blown["trained"], blown["diverged"]) == (0, 2) and blown["valid_ppl_mean"] is None and not blown["best"]
    best = min((r for r in rows.values() if r["trained"]), key=lambda r: r["valid_ppl_mean"])
    assert [r["variant"] for r in rows.values() if r["best"]] == [best["variant"]]
    # first named either way; "best" only where the paired interval over the 2 seeds excludes no difference
    assert compared["answer"].startswith((f"`{best['variant']}` is best", f"`{best['variant']}` and `"))
    assert "tied" not in compared["answer"] and "equivalent" not in compared["answer"]  # no margin was declared
    assert (
        "Did not train: `cell=rnn_tanh,lr=1e+38` (diverged in 2 of 2 seeds); `cell=lstm,lr=1e+38` (diverged in 2 "
        "of 2 seeds)." in compared["answer"]
    )
    assert len(pd.read_csv(tmp_path / "t.csv")) == 4
    shown = rnnlab("compare", "tiny_clipping", home=home)
    assert shown.stdout.startswith("Question: ") and "\nAnswer: " in shown.stdout
    assert "0/2 trained: 2 diverged" in shown.stdout and " *" in shown.stdout
    assert "valid_ppl (geometric mean [95% CI], lower is better)" in shown.stdout
    assert "inf" not in shown.stdout and "nan" not in shown.stdout.lower()


def test_compare_ends_without_tearing_down_yet_loses_no_output(clipping_study, tmp_path):
    """`rnnlab compare` skips the interpreter's teardown (`rnnlab.cli.main.run`): what it printed and wrote is all
    there, its exit code is the command's, and a reader that stops early (`| head -1`) gets no error from it."""
    home, _, _, _ = clipping_study
    whole = rnnlab("compare", "tiny_clipping", "--csv", str(tmp_path / "t.csv"), home=home)
    assert whole.returncode == 0 and "rnnlab: wrote" in whole.stderr and len(pd.read_csv(tmp_path / "t.csv")) == 4
    ordinary = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from rnnlab.cli.main import main; sys.exit(main(['compare', 'tiny_clipping']))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ, "RNNLAB_HOME": str(home)},
    )
    assert ordinary.returncode == 0 and whole.stdout == ordinary.stdout  # the same, to the last byte
    reader = subprocess.Popen(
        rnnlab_command("compare", "tiny_clipping"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RNNLAB_HOME": str(home)},
    )
    assert reader.stdout.readline().startswith("Question: ")
    reader.stdout.close()  # as `head -1` does
    assert reader.wait(timeout=120) == 0
    errors = reader.stderr.read()
    assert "Traceback" not in errors and "BrokenPipe" not in errors
    missing = rnnlab("compare", "no_such_study", home=home)  # an error still exits the ordinary way, with its code
    assert missing.returncode == 2 and "no_such_study" in missing.stderr


def test_a_bad_study_fails_before_anything_is_recorded(tmp_path, tiny_corpus):
    path = tiny_study(tmp_path, "bad", tiny_corpus, {"model.bidirectional": [False, True]})
    done = rnnlab("study", str(path), home=tmp_path)
    assert done.returncode == 2
    assert "cell bidirectional=true (seed 1)" in done.stderr and "see the future" in done.stderr
    assert not (tmp_path / "mlruns").exists()


# What polling a store that another process is creating and writing may meet, and try again after: SQLite's
# "database is locked" and "no such table" (sqlalchemy.exc.OperationalError, and MLflow's wrapping of it). Any other
# error is a real fault, raised at once instead of timing out minutes later.
STORE_NOT_READY = ("database is locked", "no such table", "unable to open database")


def wait_for(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception as err:
            if not any(words in str(err) for words in STORE_NOT_READY):
                raise
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow  # ~70 s; by default a whole study killed mid-cell and resumed: tests/test_faults.py
def test_a_worker_killed_mid_cell_leaves_no_run_running_and_the_next_execution_resumes_it(tmp_path, tiny_corpus):
    path = tiny_study(
        tmp_path, "tiny_worker", tiny_corpus, {"model.cell": ["lstm", "gru"]}, concurrency=2, **{"train.max_epochs": 15}
    )
    study = subprocess.Popen(
        rnnlab_command("study", str(path)),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RNNLAB_HOME": str(tmp_path)},
    )

    def gru_checkpointed() -> bool:
        runs = [r for r in cell_runs(tmp_path, "tiny_worker") if r.data.tags.get("factor.model.cell") == "gru"]
        return bool(runs) and runs[0].info.status == "RUNNING" and "valid/ppl" in runs[0].data.metrics

    try:
        wait_for(lambda: (tmp_path / "mlruns" / "mlflow.db").exists(), what="the store")
        time.sleep(3)
        wait_for(gru_checkpointed, what="the gru cell to save a checkpoint")
        worker = int(
            next(r for r in cell_runs(tmp_path, "tiny_worker") if r.data.tags["factor.model.cell"] == "gru").data.tags[
                "pid"
            ]
        )
        assert worker != study.pid
        os.kill(worker, signal.SIGKILL)  # the worker alone: out of memory, or killed by hand
        _, stderr = study.communicate(timeout=180)
    finally:
        study.kill()
    assert study.returncode == 1 and "its worker process died" in stderr
    exp = store(tmp_path).get_experiment_by_name("tiny_worker").experiment_id
    assert all(r.info.status != "RUNNING" for r in store(tmp_path).search_runs([exp]))
    killed = next(r for r in cell_runs(tmp_path, "tiny_worker") if r.data.tags["factor.model.cell"] == "gru")
    assert killed.info.status == "KILLED" and "worker" in killed.data.tags["rnnlab.error"]

    again = rnnlab("study", str(path), "--json", home=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    runs = cell_runs(tmp_path, "tiny_worker")
    assert all(r.info.status != "RUNNING" for r in store(tmp_path).search_runs([exp]))
    for cell in ("lstm", "gru"):
        assert [r.info.status for r in runs if r.data.tags["factor.model.cell"] == cell].count("FINISHED") == 1
    resumed = next(r for r in runs if r.data.tags["factor.model.cell"] == "gru" and r.info.status == "FINISHED")
    assert int(resumed.data.tags["rnnlab.resumed_from_step"]) > 0


@pytest.mark.slow  # ~35 s; by default runs orphaned on this host are swept: test_tasks_tracking, test_faults
def test_a_cell_run_left_running_by_an_execution_prefect_knows_nothing_of_is_swept_killed(tmp_path, tiny_corpus):
    """A worker on another machine died with its cell RUNNING: no pid of this host to check, so the next execution
    asks Prefect about the flow run that owned it."""
    import uuid

    path = tiny_study(tmp_path, "tiny_sweep", tiny_corpus, {"model.cell": ["lstm"]})
    client = store(tmp_path)
    exp = client.create_experiment(
        "tiny_sweep", artifact_location=(tmp_path / "mlruns" / "artifacts" / "tiny_sweep").as_uri()
    )
    orphan = client.create_run(
        exp,
        tags={
            "rnnlab.role": "cell",
            "rnnlab.study": "tiny_sweep",
            "host": "another-machine",
            "pid": "1",
            "prefect.flow_run_id": str(uuid.uuid4()),
        },
    ).info.run_id
    done = rnnlab("study", str(path), "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    swept = client.get_run(orphan)
    assert swept.info.status == "KILLED" and "unknown to Prefect" in swept.data.tags["rnnlab.error"]


@pytest.mark.slow  # two executions of one study at once, the harder case, run by default: tests/test_faults.py
def test_two_studies_started_together_on_one_store_both_finish(tmp_path, tiny_corpus):
    paths = [
        tiny_study(tmp_path, name, tiny_corpus, {"model.cell": ["lstm", "gru"]}, concurrency=1)
        for name in ("together_a", "together_b")
    ]
    env = {**os.environ, "RNNLAB_HOME": str(tmp_path)}
    procs = [
        subprocess.Popen(
            rnnlab_command("study", str(p), "--json"),
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in paths
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-4000:]
    for name in ("together_a", "together_b"):
        runs = cell_runs(tmp_path, name)
        assert sorted(r.data.tags["factor.model.cell"] for r in runs) == ["gru", "lstm"]
        assert all(r.info.status == "FINISHED" for r in runs)


REPORT_FILES = {"report.md", "report.html", "effects.png", "curve.png", "train_loss.png", "grad_norm.png", "final.png"}


def test_the_study_builds_its_report_and_logs_it_to_the_parent_run(clipping_study):
    home, result, _, _ = clipping_study
    assert {p.name for p in (home / "reports" / "tiny_clipping").iterdir()} == REPORT_FILES
    logged = {a.path for a in store(home).list_artifacts(result["parent_run_id"], "report")}
    assert logged == {f"report/{name}" for name in REPORT_FILES}


def test_a_report_without_out_goes_where_the_study_put_it_not_into_the_current_directory(clipping_study):
    home, result, _, _ = clipping_study
    report = home / "reports" / "tiny_clipping" / "report.md"
    before = report.stat().st_mtime_ns
    done = rnnlab("report", "tiny_clipping", home=home)  # run from the checkout, a directory of its own
    assert done.returncode == 0, done.stderr[-3000:]
    assert report.stat().st_mtime_ns > before
    assert not (REPO / "reports" / "tiny_clipping").exists()


def test_a_report_from_the_store_is_byte_identical_when_rebuilt_and_its_numbers_are_mlflows(clipping_study, tmp_path):
    from html.parser import HTMLParser

    home, result, _, _ = clipping_study
    for out in ("a", "b"):
        done = rnnlab(
            "report", "tiny_clipping", "--parent-run", result["parent_run_id"], "--out", str(tmp_path / out), home=home
        )
        assert done.returncode == 0, done.stderr[-3000:]
    first, second = tmp_path / "a" / "tiny_clipping", tmp_path / "b" / "tiny_clipping"
    assert {p.name for p in first.iterdir()} == REPORT_FILES
    for name in REPORT_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name

    text = (first / "report.md").read_text()
    assert text.startswith(f"# Study `tiny_clipping`\n\n## Answer\n\n> {QUESTION}\n\n**{result['answer']}**")
    runs = [r for r in cell_runs(home, "tiny_clipping") if r.data.tags["rnnlab.cell"] == "cell=lstm,lr=1.0"]
    valid = np.array([r.data.metrics["valid_ppl"] for r in runs])
    assert re.search(rf"\| cell=lstm,lr=1\.0 \*? *\| 2/2 trained +\| {np.exp(np.log(valid).mean()):.1f} \[", text)
    assert re.search(r"\| cell=lstm,lr=1e\+38 +\| 0/2 trained: 2 diverged +\| – ", text)
    for run in cell_runs(home, "tiny_clipping"):
        assert run.info.run_id in text and run.data.tags["git.commit"] in text
        assert run.data.tags["cpu.capability"] in text
    assert "## Significance" in text and "## Effect of each factor" in text
    # paired on lr and seed: within lr=1.0 both seeds trained; within lr=1e+38 no pair did (counted, not averaged)
    assert re.search(r"\| model.cell +\| rnn_tanh → lstm +\| lr=1.0 +\| 2/2 → 2/2 +\| 1 +\| 2 +\| ×", text)
    assert re.search(r"\| model.cell +\| rnn_tanh → lstm +\| lr=1e\+38 +\| 0/2 → 0/2 +\| 1 +\| 0 +\| – ", text)
    assert not re.search(r"(\| *|± |\[|, )-?(inf|nan)\b", text)  # no statistic of a run that did not train

    class Images(HTMLParser):
        sources: list = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.sources.append(dict(attrs)["src"])

    parser = Images()
    parser.feed((first / "report.html").read_text())
    assert len(parser.sources) == 5 and all(s.startswith("data:image/png;base64,") for s in parser.sources)
    assert "<table>" in (first / "report.html").read_text()


@pytest.mark.slow  # ~1 minute; the BLEU significance itself is tested on constructed cases in test_tasks_stats
def test_a_translation_study_reports_bleu_and_its_significance_from_the_saved_translations(tmp_path):
    from test_flows_nmt import NMT_CONFIG, write_reversal_corpus

    corpus = write_reversal_corpus(tmp_path / "reversal")
    tree = {
        "study": "tiny_nmt",
        "base": str(NMT_CONFIG),
        "seeds": [1],
        "concurrency": 2,
        "factors": {"model.attention": ["none", "dot"]},
        "metric": {"name": "valid_bleu_greedy", "goal": "max"},
        "budget": {"max_epochs": 2},
        "overrides": {
            "data.corpus": str(corpus),
            "data.src": "src",
            "data.tgt": "tgt",
            "data.vocab_size": 40,
            "model.embedding_size": 32,
            "model.hidden_size": 64,
            "model.dropout": 0.0,
            "train.batch_size": 50,
            "train.lr": 0.005,
            "train.max_minutes": None,
            "eval.beam": 2,
            "eval.min_bleu": 0.0,
        },
    }
    path = tmp_path / "tiny_nmt.yaml"
    path.write_text(yaml.safe_dump(tree))
    done = rnnlab("study", str(path), "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.splitlines()[-1])
    rows = {row["variant"]: row for row in result["table"]}
    assert (
        rows["attention=dot"]["best"]
        and rows["attention=dot"]["test_bleu_mean"] > rows["attention=none"]["test_bleu_mean"]
    )
    text = (tmp_path / "reports" / "tiny_nmt" / "report.md").read_text()
    assert "sacrebleu's paired bootstrap" in text and re.search(r"\| attention=none +\| 1 +\| test BLEU ", text)
    assert "valid_bleu_greedy (mean [95% CI], higher is better)" in text
    # one seed: no interval, so no direction, however large the gap
    assert result["answer"].startswith(
        "`attention=dot` and `attention=none` are not distinguishable with 1 paired seed on validation BLEU (greedy)"
    )


# A cell that passes every check and then crashes: its model cannot be allocated (4e9 × 16 weights, 256 GB).
CRASHING = {"model.hidden_size": [16, 1_000_000_000]}


def test_a_crashing_cell_is_recorded_failed_and_the_study_finishes_the_others_then_exits_1(tmp_path, tiny_corpus):
    path = tiny_study(tmp_path, "tiny_crash", tiny_corpus, CRASHING)
    done = rnnlab("study", str(path), home=tmp_path)
    assert done.returncode == 1 and "1 of 2 cells failed" in done.stderr
    runs = {r.data.tags["factor.model.hidden_size"]: r for r in cell_runs(tmp_path, "tiny_crash")}
    assert runs["16"].info.status == "FINISHED"
    assert runs["1000000000"].info.status == "FAILED" and "allocate" in runs["1000000000"].data.tags["rnnlab.error"]
    exp = store(tmp_path).get_experiment_by_name("tiny_crash").experiment_id
    parent = store(tmp_path).search_runs([exp], "tags.`rnnlab.role` = 'study'")[0]
    assert parent.info.status == "FAILED" and "1 of 2 cells failed" in parent.data.tags["rnnlab.error"]


def test_the_test_split_is_scored_once_after_the_decision_for_the_named_variants_only(clipping_study):
    """The study decides on valid; then the two variants its answer names (the best and the runner-up: here the two
    that trained) are scored on test, every trained seed, and no other run is; the report says so."""
    home, result, again, _ = clipping_study
    client = store(home)
    parent = client.get_run(result["parent_run_id"]).data.tags
    named = json.loads(parent["rnnlab.test.variants"])
    assert parent["rnnlab.test.split"] == "test"
    assert sorted(named) == ["cell=lstm,lr=1.0", "cell=rnn_tanh,lr=1.0"]
    for run in cell_runs(home, "tiny_clipping"):
        scored = run.data.tags["rnnlab.cell"] in named and run.data.tags["rnnlab.outcome"] == "trained"
        assert ("test_ppl" in run.data.metrics) == scored, run.info.run_name
        assert (run.data.tags.get("rnnlab.test_scored") == "after the study's decision") == scored
        if scored:  # the second execution reused the cells and found them scored: the split was touched once
            assert len(client.get_metric_history(run.info.run_id, "test_ppl")) == 1
        assert "valid_ppl" in run.data.metrics or run.data.tags["rnnlab.outcome"] == "diverged"
    # the table decides on validation data and shows no test column; the report's held-out section has the scores
    assert not any(k.startswith("test_") for row in result["table"] for k in row)
    report = (home / "reports" / "tiny_clipping" / "report.md").read_text()
    held = report.split("## Held-out test\n", 1)[1].split("\n## ", 1)[0]
    assert "scored once, after the decision on `valid_ppl`" in held and "(4 runs)" in held
    assert all(f"`{v}`" in held for v in named) and "paired over 2 seeds" in held


def test_a_cell_that_failed_to_learn_is_recorded_counted_and_kept_out_of_the_statistics(tmp_path, tiny_corpus):
    """End to end, under the default floor (the unigram model): a learning rate too small to learn even the word
    frequencies (1e-4: the model stays near its uniform start) beside one that learns. The study goes on and exits 0;
    the cell is recorded as failed to learn with both numbers, counted on the parent and in the progress line, and
    has no mean. (Whether the other tiny cell gets below the floor is chance: it is only counted consistently.)"""
    path = tiny_study(
        tmp_path,
        "tiny_floor",
        tiny_corpus,
        {"train.lr": [1.0, 1e-4]},
        **{"model.cell": "rnn_tanh", "eval.floor": "unigram"},
    )
    done = rnnlab("study", str(path), "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.splitlines()[-1])
    runs = cell_runs(tmp_path, "tiny_floor")
    failed = [r for r in runs if r.data.tags["rnnlab.outcome"] == "failed_to_learn"]
    assert (result["cells"], result["diverged"], result["failed"]) == (2, 0, 0)
    assert result["failed_to_learn"] == len(failed) >= 1
    assert f"{len(failed)} failed to learn" in done.stderr  # the progress line
    (stuck,) = [r for r in runs if r.data.tags["factor.train.lr"] == "0.0001"]
    assert stuck in failed
    floor, ppl = float(stuck.data.tags["data.unigram_ppl.valid"]), stuck.data.metrics["valid_ppl"]
    assert ppl >= floor
    reason = stuck.data.tags["rnnlab.outcome_reason"]
    assert f"{ppl:,.1f}" in reason and f"{floor:,.1f}" in reason and "learned no more than word frequencies" in reason
    assert store(tmp_path).get_run(result["parent_run_id"]).data.tags["rnnlab.failed_to_learn"] == str(len(failed))
    (row,) = [row for row in result["table"] if "0.0001" in row["variant"]]
    assert (row["trained"], row["failed_to_learn"], row["valid_ppl_mean"]) == (0, 1, None) and not row["best"]


def test_a_cells_result_counts_only_when_its_run_is_finished_in_the_studys_own_store(tmp_path, monkeypatch):
    """A worker that recorded elsewhere (its own local store: a Dask worker without the study's tracking URI) or left
    its run unfinished gives the study a failure, not a result: the study then exits 1 instead of 0."""
    monkeypatch.setenv("RNNLAB_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from flows.study import recorded_elsewhere
    from tasks.record import tracking

    finished = tracking.open_run("elsewhere", "finished", {}, {})
    tracking.close_run(finished)
    running = tracking.open_run("elsewhere", "running", {}, {})
    assert recorded_elsewhere({"run_id": finished}) is None
    assert recorded_elsewhere({"run_id": running}) == f"its run {running} is RUNNING in the study's store"
    missing = recorded_elsewhere({"run_id": "0" * 32})
    assert missing.startswith(f"its run {'0' * 32} is not in the study's tracking store sqlite:///{tmp_path}")
    assert "give the workers MLFLOW_TRACKING_URI" in missing
    tracking.close_run(running)
