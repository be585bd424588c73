"""`rnnlab train` end to end on tiny real data: Prefect flow → Lightning → perplexity → MLflow, and its failure
modes."""

import json
import signal
import subprocess

import pytest
from conftest import REPO, RUN_CONFIG, TINY, rnnlab_command

from tasks.record import tracking


def rnnlab(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(rnnlab_command(*args), capture_output=True, text=True, cwd=REPO, env=env, timeout=600, **kw)


def runs(experiment):
    exp = tracking.client().get_experiment_by_name(experiment)
    return [] if exp is None else tracking.client().search_runs([exp.experiment_id])


def test_train_flow_records_a_complete_run(prefect_server, tiny_cfg):
    from flows.train import train_flow

    result = train_flow(tiny_cfg(experiment="flow"))
    assert result["status"] == "FINISHED" and not result["diverged"]
    run = tracking.client().get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.cell"] == "lstm" and run.data.params["train.clip_norm"] == "0.25"
    for tag in ("prefect.flow_run_id", "data.checksum", "git.commit", "rnnlab.code_version", "pkg.torch"):
        assert run.data.tags[tag]
    metrics = run.data.metrics
    assert metrics["test_ppl"] > 1 and metrics["valid_ppl"] > 1 and metrics["tokens_per_second"] > 0
    assert len(tracking.client().get_metric_history(run.info.run_id, "train/grad_norm")) == metrics["train_steps"]
    artifacts = {a.path for a in tracking.client().list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "vocab.txt", "checkpoints", "eval"}
    assert {a.path for a in tracking.client().list_artifacts(run.info.run_id, "eval")} == {
        "eval/valid_sentences.csv",
        "eval/test_sentences.csv",
    }


def test_a_run_reads_well_in_the_mlflow_ui(prefect_server, tiny_cfg, tiny_corpus):
    """What the runs table and charts show: the experiment as model development, JSON params without bookkeeping,
    the data as datasets, curves under train/ and valid/, and each summary once at step 0 (a bar, not a dot)."""
    from flows.train import train_flow

    result = train_flow(tiny_cfg("train.clip_norm=null", experiment="ui"))
    client = tracking.client()
    run = client.get_run(result["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI view
    params = run.data.params
    assert "run_name" not in params and "experiment" not in params
    assert params["train.clip_norm"] == "null" and params["model.tied"] == "false" and params["model.cell"] == "lstm"
    assert params["eval.splits"] == '["valid", "test"]'
    assert not [v for v in params.values() if v in ("None", "True", "False") or "'" in v]  # no Python repr
    datasets = {(d.dataset.name, d.dataset.digest, d.tags[0].value) for d in run.inputs.dataset_inputs}
    checksum = run.data.tags["data.checksum"]
    assert datasets == {(f"tiny-{split}", checksum, split) for split in ("train", "valid", "test")}
    assert all(str(tiny_corpus) in d.dataset.source for d in run.inputs.dataset_inputs)
    assert run.data.tags["mlflow.source.name"].startswith("rnnlab ")

    def steps(key):
        return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))

    for summary in (
        "valid_ppl",
        "valid_nll",
        "test_ppl",
        "train_loss",
        "train_seconds",
        "eval_seconds",
        "max_grad_norm",
        "clipped_share",
        "train_steps",
    ):
        assert steps(summary) == [0], summary
    train_steps = run.data.metrics["train_steps"]
    assert steps("train/grad_norm") == list(range(int(train_steps)))
    assert steps("train/loss") == list(range(int(train_steps)))
    assert len(steps("valid/ppl")) == 2 and min(steps("valid/ppl")) > 0  # one per epoch, at its step
    # the selected checkpoint's score is apart from the curve, and the curve's best is that checkpoint's
    curve = [m.value for m in client.get_metric_history(run.info.run_id, "valid/nll")]
    assert run.data.metrics["valid_nll"] == pytest.approx(min(curve), rel=1e-6)


def test_a_configured_split_the_corpus_lacks_is_skipped_with_one_warning_and_a_tag(
    prefect_server, tiny_cfg, tiny_corpus, tmp_path, capsys
):
    from flows.train import train_flow

    corpus = tmp_path / "no-test"
    corpus.mkdir()
    for split in ("train", "valid"):
        (corpus / f"{split}.txt").write_text((tiny_corpus / f"{split}.txt").read_text())
    result = train_flow(tiny_cfg(f"data.corpus={corpus}", "train.max_epochs=1", experiment="skipped"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "rnnlab: warning: eval.splits: test: corpus 'no-test' has no such split; it is skipped "
        "(its runs are tagged rnnlab.eval.skipped)"
    ]
    run = tracking.client().get_run(result["run_id"])
    assert run.data.tags["rnnlab.eval.skipped"] == "test: corpus 'no-test' has no such split"
    assert "valid_ppl" in run.data.metrics and not [k for k in run.data.metrics if k.startswith("test_")]


def test_verbose_shows_the_libraries_own_logs(tiny_corpus):
    done = rnnlab(
        "train", str(RUN_CONFIG), f"data.corpus={tiny_corpus}", "experiment=cli", *TINY, "train.max_epochs=1", "-v"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Finished in state Completed" in done.stderr and "rnnlab: epoch 1/1 · step " in done.stderr


def test_the_same_run_on_the_same_machine_gives_identical_numbers(prefect_server, tiny_cfg):
    """Seeds, data order and kernels fixed: every metric but the clock is bit-identical between two runs here."""
    from flows.train import train_flow

    first, second = (train_flow(tiny_cfg("train.max_epochs=1", experiment="twice")) for _ in range(2))
    runs = [tracking.client().get_run(r["run_id"]) for r in (first, second)]
    clock = {"tokens_per_second", "train_seconds", "fit_seconds", "eval_seconds"}
    metrics = [{k: v for k, v in run.data.metrics.items() if k not in clock} for run in runs]
    assert metrics[0] == metrics[1] and "valid_ppl" in metrics[0] and "test_ppl" in metrics[0]
    for key in ("train/loss", "train/grad_norm", "valid/nll"):
        assert tracking.metric_history(first["run_id"], key) == tracking.metric_history(second["run_id"], key)
    assert runs[0].data.tags["cpu.capability"] == runs[1].data.tags["cpu.capability"]  # recorded with every run
    assert runs[0].data.tags["rnnlab.outcome"] == "trained" == first["outcome"]


def test_cli_train_prints_one_json_line_then_evaluate_scores_any_file(tiny_corpus):
    done = rnnlab("train", str(RUN_CONFIG), f"data.corpus={tiny_corpus}", "experiment=cli", *TINY, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == 1  # stdout is for the JSON; progress goes to stderr
    result = json.loads(done.stdout)
    assert result["status"] == "FINISHED" and result["experiment"] == "cli"
    assert "rnnlab: epoch 2/2 · step " in done.stderr
    assert "Finished in state" not in done.stderr  # Prefect's INFO lines are off unless asked for
    run_id = result["run_id"]

    scored = rnnlab("evaluate", run_id, "--file", str(tiny_corpus / "test.txt"), "--json")
    assert scored.returncode == 0, scored.stderr[-3000:]
    metrics = json.loads(scored.stdout.splitlines()[-1])["metrics"]
    # the same text scored by the flow's test split and by `evaluate --file` gives the same perplexity
    assert metrics["file.test.txt.ppl"] == pytest.approx(result["metrics"]["test_ppl"], rel=1e-9)
    assert tracking.client().get_run(run_id).data.metrics["file.test.txt.ppl"] == metrics["file.test.txt.ppl"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.cel=gru"], "unknown key 'model.cel'; did you mean 'model.cell'?"),
        (["model.bidirectional=true"], "it would see the future"),
        (["data.corpus=/nonexistent/corpus"], "data.corpus='/nonexistent/corpus' is neither a known corpus"),
    ],
)
def test_bad_input_fails_before_any_run_is_created(overrides, message):
    done = rnnlab("train", str(RUN_CONFIG), "experiment=bad-input", *overrides, "--json")
    assert done.returncode == 2
    assert message in done.stderr
    assert json.loads(done.stdout) == {
        "error": done.stderr.partition("rnnlab: error: ")[2].rstrip("\n"),
        "exit_code": 2,
    }
    assert runs("bad-input") == []


def test_missing_split_names_the_file_and_creates_no_run(tmp_path, tiny_corpus):
    corpus = tmp_path / "no-valid"
    corpus.mkdir()
    (corpus / "train.txt").write_text((tiny_corpus / "train.txt").read_text())
    done = rnnlab("train", str(RUN_CONFIG), f"data.corpus={corpus}", "experiment=bad-input")
    assert done.returncode == 2
    assert f"{corpus / 'valid.txt'}: missing valid split" in done.stderr
    assert runs("bad-input") == []


def test_evaluate_names_an_unknown_run():
    done = rnnlab("evaluate", "0123456789abcdef", "--file", str(RUN_CONFIG))
    assert done.returncode == 2 and "no run '0123456789abcdef'" in done.stderr


@pytest.mark.slow  # by default: Ctrl-C of the process group and SIGTERM of a study, in tests/test_faults.py
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_training_is_recorded_as_killed_not_running(tiny_corpus, sig):
    experiment = f"interrupted-{sig.name}"
    process = subprocess.Popen(
        rnnlab_command(
            "train",
            str(RUN_CONFIG),
            f"data.corpus={tiny_corpus}",
            f"experiment={experiment}",
            *TINY,
            "train.max_epochs=1000",
        ),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a non-interactive shell may ignore SIGINT
    )
    for line in process.stderr:  # wait until training has started, so the run is open
        if line.startswith("rnnlab: epoch"):
            break
    process.send_signal(sig)  # to the main process alone (a terminal's Ctrl-C to the group: tests/test_faults.py)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + sig  # 130, 143
    assert "Traceback" not in err and f"rnnlab: train interrupted by {sig.name}: runs in progress were closed" in err
    (run,) = runs(experiment)
    assert run.info.status == "KILLED"


def test_a_train_command_hashes_each_split_file_once(prefect_server, tiny_cfg, tiny_corpus, monkeypatch):
    """`rnnlab train` prepares the corpus before the flow starts, and hands it to the flow: each file is hashed once."""
    import hashlib

    from flows.train import train_flow
    from tasks.kinds.steps import prepare_corpus

    hashed = []
    digest = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, name: hashed.append(f.name) or digest(f, name))
    cfg = tiny_cfg("train.max_epochs=1", experiment="hash-once")
    corpus = prepare_corpus(cfg)  # what cmd_train does before it starts the flow, which it hands the corpus
    train_flow(cfg, corpus=corpus)
    splits = [name for name in hashed if name.startswith(str(tiny_corpus.resolve()))]
    assert sorted(splits) == sorted(str(tiny_corpus.resolve() / f"{s}.txt") for s in ("train", "valid", "test"))
    assert len(hashed) == len(set(hashed))  # the cache's own files too: each checked once
