"""Tuned comparisons: every arm gets the same Optuna budget, trials are child runs that can be pruned by step, a
killed search resumes without running more trials than asked, and the answer names both recipes."""

import json
import math
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, rnnlab_command
from test_flows_study import rnnlab, store, tiny_study

SPACE = {"train.lr": {"log_uniform": [0.3, 3.0]}, "model.init_range": {"uniform": [0.05, 0.2]}}


def tuned_study(folder: Path, name: str, tiny_corpus: Path, trials: int = 4, **tune) -> Path:
    path = tiny_study(
        folder,
        name,
        tiny_corpus,
        {"train.clip_norm": [None, 0.25]},
        seeds=(1, 2),
        **{"train.val_every_n_steps": 10, "train.max_epochs": 3},
    )
    tree = yaml.safe_load(path.read_text())
    tree["tune"] = {
        "space": SPACE,
        "trials": trials,
        "budget": {"max_steps": 60},
        "sampler": {"name": "tpe", "seed": 7},
        "pruner": {"name": "median", "warmup_steps": 10, "startup_trials": 1},
        **tune,
    }
    path.write_text(yaml.safe_dump(tree))
    return path


def trial_runs(home: Path, study: str, finished_only: bool = True) -> list:
    exp = store(home).get_experiment_by_name(study)
    runs = store(home).search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'trial'", max_results=1000)
    return [r for r in runs if r.info.status == "FINISHED" or not finished_only]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_corpus):
    home = tmp_path_factory.mktemp("tuned-home")
    path = tuned_study(home, "tiny_tuned", tiny_corpus)
    done = rnnlab("study", str(path), "--json", home=home)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"home": home, "result": json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def test_every_arm_gets_exactly_its_trials_with_the_same_search_settings_recorded(tuned):
    runs = trial_runs(tuned["home"], "tiny_tuned")
    by_arm = {}
    for run in runs:
        by_arm.setdefault(run.data.tags["rnnlab.arm"], []).append(run)
    assert sorted(by_arm) == ["clip_norm=0.25", "clip_norm=null"]
    assert all(len(arm) == 4 for arm in by_arm.values())
    search = {k: v for k, v in runs[0].data.params.items() if k.startswith("tune.")}
    assert (
        search["tune.trials"] == "4" and search["tune.sampler.seed"] == "7" and search["tune.budget.max_steps"] == "60"
    )
    for run in runs:  # the same space, budget, sampler and seed on every trial of every arm
        assert {k: v for k, v in run.data.params.items() if k.startswith("tune.")} == search
        assert run.data.params["train.max_steps"] == "60"
        assert run.data.tags["rnnlab.outcome"] in ("trained", "diverged", "failed_to_learn", "pruned")
    numbers = [(r.data.tags["rnnlab.arm"], r.data.tags["rnnlab.trial"]) for r in runs]
    assert len(set(numbers)) == len(numbers)


def test_progress_counts_trials_with_the_time_spent_and_an_eta(tuned):
    lines = [line for line in tuned["stderr"].splitlines() if line.startswith("rnnlab: tuning: ")]
    counts = [
        int(
            re.match(
                r"rnnlab: tuning: (\d+)/8 trials done · [0-2] running · [\d.]+ min elapsed · ETA "
                r"([\d.]+ min|\?) for the search · \[clip=",
                line,
            ).group(1)
        )
        for line in lines
    ]
    assert counts == list(range(1, 9))  # one line per finished trial, in order
    assert "rnnlab: study: 8/8 cells done" in tuned["stderr"]  # then the cells, counted as before


def test_trials_are_child_runs_with_their_sampled_values_and_a_pruned_one_says_at_which_step(tuned):
    runs = trial_runs(tuned["home"], "tiny_tuned")
    parent = tuned["result"]["parent_run_id"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in runs)
    for run in runs:
        lr = float(run.data.params["tuned.train.lr"])
        assert 0.3 <= lr <= 3.0 and float(run.data.params["train.lr"]) == lr
    pruned = [r for r in runs if r.data.tags["rnnlab.outcome"] == "pruned"]
    assert pruned, "a median pruner with one start-up trial prunes some of 8 trials"
    for run in pruned:
        step = int(run.data.tags["rnnlab.pruned_step"])
        assert 10 <= step < 60 and f"at step {step}" in run.data.tags["rnnlab.outcome_reason"]
        assert float(run.data.metrics["train_steps"]) == step  # it stopped at once


def test_the_arms_best_settings_train_over_the_seeds_beside_the_base_recipe_and_the_answer_names_both(tuned):
    home, result = tuned["home"], tuned["result"]
    client = store(home)
    parent = client.get_run(result["parent_run_id"])
    best = {k: v for k, v in parent.data.params.items() if k.startswith("best.")}
    assert {k.rsplit(".", 2)[0] for k in best} == {"best.clip:null", "best.clip:0.25"}  # MLflow keys allow no "="
    cells = client.search_runs([parent.info.experiment_id], "tags.`rnnlab.role` = 'cell'")
    tuned_cells = [c for c in cells if c.data.tags.get("rnnlab.tuned") == "true"]
    assert len(tuned_cells) == 4 and len(cells) == 8  # 2 arms × 2 seeds, tuned and at the base recipe
    for cell in tuned_cells:
        label = cell.data.tags["rnnlab.variant"].removesuffix(" tuned")
        assert cell.data.params["train.lr"] == parent.data.params[f"best.{label.replace('=', ':')}.train.lr"]
    answer = result["answer"]
    assert "Each arm at its own tuned setting:" in answer and "At the base recipe" in answer
    assert any(words in answer for words in ("holds", "reverses", "not distinguishable", "leads"))


def test_the_report_shows_each_arms_search_and_the_expected_best_score_against_trials(tuned):
    home, result = tuned["home"], tuned["result"]
    report = (home / "reports" / "tiny_tuned" / "report.md").read_text()
    tuning = report.split("## Tuning", 1)[1].split("\n## ", 1)[0]
    assert "clip=null" in tuning and "clip=0.25" in tuning and "pruned" in tuning
    assert "trials per arm" in tuning and "At the base recipe" in tuning
    assert "![expected best valid_ppl vs trials per arm](expected_best.png)" in report
    client = store(home)
    keys = [k for k in client.get_run(result["parent_run_id"]).data.metrics if k.startswith("expected_best.")]
    assert len(keys) == 2
    curve = sorted(client.get_metric_history(result["parent_run_id"], keys[0]), key=lambda m: m.step)
    values = [m.value for m in curve]
    assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and values == sorted(values, reverse=True)


@pytest.mark.slow  # ~70 s on 2 idle cores: a search run twice
def test_a_search_killed_midway_resumes_with_exactly_its_trials_and_no_trial_number_twice(tmp_path, tiny_corpus):
    path = tuned_study(tmp_path, "tiny_resume", tiny_corpus, trials=3)
    env = {**os.environ, "RNNLAB_HOME": str(tmp_path)}
    study = subprocess.Popen(
        rnnlab_command("study", str(path)),
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    seen = []
    for line in study.stderr:  # stop it after two trials have finished
        seen.append(line)
        if line.startswith("rnnlab: tuning: 2/6 trials"):
            study.send_signal(signal.SIGTERM)
            break
    study.communicate(timeout=120)
    assert study.returncode != 0, "".join(seen)[-2000:]
    assert 2 <= len(trial_runs(tmp_path, "tiny_resume")) < 6
    again = rnnlab("study", str(path), home=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = trial_runs(tmp_path, "tiny_resume")
    arms = [r.data.tags["rnnlab.arm"] for r in runs]
    assert sorted(arms) == sorted(["clip_norm=null"] * 3 + ["clip_norm=0.25"] * 3)
    numbers = [(r.data.tags["rnnlab.arm"], r.data.tags["rnnlab.trial"]) for r in runs]
    assert len(set(numbers)) == len(numbers)
    assert "already finished (a resumed search)" in again.stderr


def test_expected_best_matches_a_hand_computed_example():
    from tasks.analysis.tuned_answer import expected_best

    # Three trials scoring 10, 20, 30 (higher is better). Best of n draws with replacement:
    # n=1: the mean, 20. n=2: P(max=10)=1/9, P(max=20)=3/9, P(max=30)=5/9 → (10 + 60 + 150)/9 = 24.44…
    assert np.allclose(expected_best([20, 10, 30], "max"), [20.0, 220 / 9, (10 * 1 + 20 * 7 + 30 * 19) / 27])
    # Lower is better: the same draws, mirrored.
    assert np.allclose(
        expected_best([20, 10, 30], "min"), [20.0, (30 * 1 + 20 * 3 + 10 * 5) / 9, (30 * 1 + 20 * 7 + 10 * 19) / 27]
    )
    # A diverged trial (inf) among them: with one draw the expectation is inf; it only fades as n grows
    assert math.isinf(expected_best([100, math.inf], "min")[0])


def test_the_ranking_over_budget_is_put_in_words():
    from tasks.analysis.tuned_answer import ranking_words

    assert ranking_words(["a", "a", "a", "b", "b"], {}) == (
        "with at most 3 trials per arm `a` looks better; from 4 on, `b`"
    )
    assert ranking_words(["b"] * 4, {"b": "lstm"}).startswith("`lstm` has the better expected best score at every")


@pytest.mark.parametrize(
    "tune, expected",
    [
        ({"space": {"train.lrr": {"log_uniform": [1, 40]}}, "trials": 2}, "train.lrr"),
        ({"space": {"train.lr": {"log_uniform": [40, 1]}}, "trials": 2}, "low < high"),
        ({"space": {"train.lr": {"log_uniform": [0, 1]}}, "trials": 2}, "positive low bound"),
        ({"space": {"train.clip_norm": {"uniform": [0.1, 1]}}, "trials": 2}, "also a factor"),
        ({"space": {"train.lr": {"log_uniform": [1, 40]}}, "trials": 0}, "tune.trials"),
    ],
)
def test_a_bad_search_is_refused_before_anything_trains_naming_the_key(tmp_path, tiny_corpus, tune, expected):
    path = tiny_study(tmp_path, "tiny_bad_tune", tiny_corpus, {"train.clip_norm": [None, 0.25]})
    tree = yaml.safe_load(path.read_text())
    tree["tune"] = tune
    path.write_text(yaml.safe_dump(tree))
    done = rnnlab("study", str(path), home=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert not (tmp_path / "mlruns").exists()


def test_a_dry_run_lists_the_cells_and_trials_with_an_estimate_and_trains_nothing(tmp_path, tiny_corpus):
    path = tuned_study(tmp_path, "tiny_dry", tiny_corpus, trials=3)
    done = rnnlab("study", str(path), "--dry-run", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("clip=null s1", "clip=null s2", "clip=0.25 s1", "clip=0.25 s2"):  # 2 arms × 2 seeds, base recipe
        assert f"  cell  {name}\n" in done.stderr, done.stderr
    for arm in ("clip_norm=null", "clip_norm=0.25"):
        assert f"  trials  {arm}: 3 (tpe sampler, seed 7)\n" in done.stderr, done.stderr
    assert "6 tuning trials (3 per arm), then 8 cells" in done.stderr
    minutes = re.search(r"estimated wall time on this machine: about ([\d.]+) (min|s)", done.stderr)
    assert minutes and float(minutes.group(1)) > 0
    assert not (tmp_path / "mlruns").exists()  # nothing recorded, nothing trained


def test_a_translation_study_is_estimated_too_and_more_epochs_cost_more(tmp_path):
    from test_flows_claims import cut_parallel

    corpus = cut_parallel(tmp_path / "mt", lines=300)
    path = tmp_path / "tiny_mt.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "study": "tiny_mt",
                "base": str(REPO / "conf" / "runs" / "multi30k_deen.yaml"),
                "overrides": {
                    "data.corpus": str(corpus),
                    "data.vocab_size": 80,
                    "model.embedding_size": 16,
                    "model.hidden_size": 16,
                    "train.batch_size": 16,
                    "train.max_minutes": None,
                    "eval.beam": 2,
                },
                "factors": {"model.bidirectional": [False, True]},
                "seeds": [1, 2],
                "concurrency": 2,
                "metric": {"name": "valid_bleu_greedy", "goal": "max"},
            }
        )
    )
    estimates = []
    for epochs in (2, 60):  # far apart: the tiny model's epoch costs well under a second, and the figure is rounded
        done = rnnlab("study", str(path), f"train.max_epochs={epochs}", "--dry-run", home=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "rnnlab: study 'tiny_mt': 4 cells, 2 at a time" in done.stderr, done.stderr
        found = re.search(r"estimated wall time on this machine: about ([\d.]+) (min|s)", done.stderr)
        estimates.append(float(found.group(1)) * (60 if found.group(2) == "min" else 1))
    assert estimates[1] > estimates[0] > 0  # the training steps scale with the epochs, the start-up does not
    assert not (tmp_path / "mlruns").exists()


def test_a_diverged_trial_counts_as_a_uniform_guess_so_its_arm_keeps_a_finite_expected_best_curve():
    import pandas as pd

    from tasks.analysis.tuned_answer import expected_best, trial_values

    trials = pd.DataFrame(
        [
            {"outcome": "trained", "metrics.valid_ppl": 200.0, "vocab": "10000"},
            {"outcome": "diverged", "metrics.valid_ppl": math.nan, "vocab": "10000"},
        ]
    )
    values = trial_values(trials, "valid_ppl", "min")
    assert values == [200.0, 10000.0]  # perplexity of a uniform guess over 10,000 words
    curve = expected_best(values, "min")
    # one draw: either trial, 1/2 each; best of two: the diverged one only when both draws are it (1/4)
    assert curve[0] == pytest.approx(5100.0) and curve[1] == pytest.approx(0.25 * 10000 + 0.75 * 200)
    bleu = pd.DataFrame([{"outcome": "diverged", "metrics.valid_bleu_greedy": math.nan, "vocab": "8000"}])
    assert trial_values(bleu, "valid_bleu_greedy", "max") == [0.0]


def test_the_expected_best_ranking_says_where_the_bands_do_not_separate_the_arms():
    from tasks.analysis.tuned_answer import Curve, band_words

    n = np.arange(1, 4)
    a = Curve(n, np.array([300.0, 250, 240]), np.array([280.0, 240, 235]), np.array([320.0, 260, 245]))
    b = Curve(n, np.array([400.0, 300, 250]), np.array([350.0, 270, 238]), np.array([450.0, 330, 260]))
    words = band_words({"a": a, "b": b}, ["a", "a", "a"], "min")
    assert (
        "clear of every other arm's at 2 of 3 budgets" in words and "do not establish the ranking" in words
    )  # 245 > 238
    far = Curve(n, b.expected + 100, b.low + 100, b.high + 100)
    assert band_words({"a": a, "b": far}, ["a", "a", "a"], "min").endswith("at all 3 budgets")
