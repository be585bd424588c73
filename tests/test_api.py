"""The Python API for notebooks (rnnlab/api/): `rnnlab.load_study` and `rnnlab.curves` on a tiny real recorded study
(`ui_study`, conftest), the same figures as `rnnlab compare` and MLflow; the notebook example docs/examples/notebook.py
executed; and `rnnlab.run_study` from a folder holding a notebook's own `models/`, `tasks/` and `flows/`."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from test_flows_study import rnnlab as rnnlab_command
from test_flows_study import store, tiny_study

import rnnlab


@pytest.fixture
def ui_home(ui_study, monkeypatch):
    """The tiny study's project as this process's project (RNNLAB_HOME)."""
    monkeypatch.setenv("RNNLAB_HOME", str(ui_study["home"]))
    return ui_study


def test_import_rnnlab_loads_nothing_heavy_and_offers_the_api():
    probe = (
        "import sys, rnnlab; heavy = ('mlflow', 'pandas', 'pydantic', 'tasks', 'models', 'flows', 'rnnlab.api'); "
        "print(sorted(m for m in heavy if m in sys.modules), "
        "sorted(n for n in ('load_study', 'curves', 'run_study') if n in dir(rnnlab)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] ['curves', 'load_study', 'run_study']"
    with pytest.raises(AttributeError, match="no attribute 'load_studies'"):
        rnnlab.load_studies  # noqa: B018


def test_a_param_reads_back_as_the_value_that_was_logged():
    from tasks.record.tracking import param_from_text, param_value

    for value in (None, True, False, 0, 16, 0.25, 1.0e38, math.inf, [1, 2], ["valid"], {"a": None}, "lstm", "x=1"):
        assert param_from_text(param_value(value)) == value
    assert param_from_text('"quoted"') == '"quoted"'  # a string written bare stays the string it was


def test_a_text_field_of_the_config_stays_text_even_where_it_reads_as_a_number():
    from rnnlab.api.results import text_fields, typed_column

    text = text_fields({"lm"})
    assert text["data.corpus"] is False and text["data.dir"] is True and "train.lr" not in text
    assert typed_column(pd.Series(["2024"]), text["data.corpus"]).tolist() == ["2024"]
    assert typed_column(pd.Series(["null"]), text["data.dir"]).tolist() == [None]
    numbers = typed_column(pd.Series(["16", "8"]), None)
    assert numbers.dtype == "int64" and numbers.tolist() == [16, 8]
    clip = typed_column(pd.Series(["0.25", "null"]), None)  # a null among numbers: NaN, as pandas marks one
    assert clip.dtype == "float64" and clip[0] == 0.25 and math.isnan(clip[1])
    assert typed_column(pd.Series(["null", "null"]), None).tolist() == [None, None]


def test_load_study_gives_what_rnnlab_compare_shows(ui_home):
    home = ui_home["home"]
    study = rnnlab.load_study("tiny_ui")
    done = rnnlab_command("compare", "tiny_ui", "--json", "--fresh", home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout.splitlines()[-1])
    assert study.parent_run_id == ui_home["parent_run_id"] == shown["parent_run_id"]
    assert (study.name, study.question, study.metric, study.goal) == (
        "tiny_ui",
        shown["question"],
        shown["metric"],
        shown["goal"],
    )
    assert study.answer == shown["answer"] and study.findings == shown["factors"]
    assert json.loads(study.table.to_json(orient="records")) == shown["table"]
    assert study.variants == [row["variant"] for row in shown["table"]]
    assert study.factors == {"model.cell": ["rnn_tanh", "lstm"], "train.lr": ["1.0", "1e+38"]}
    # printed as the command prints it: the answer, then the table with its starred best and the floor
    printed = str(study)
    assert printed.startswith(f"Question: {study.question}\nAnswer: ")
    assert study.shown.to_string(index=False) in printed and " *" in printed
    assert study.markdown.startswith(study.answer) and "|" in study._repr_markdown_()
    assert repr(study).startswith("<StudyResults 'tiny_ui': 2 variants, 4 runs, decided by valid_ppl (min)")


def test_its_runs_carry_every_param_with_its_real_type(ui_home):
    from tasks.record.tracking import param_from_text

    study = rnnlab.load_study("tiny_ui")
    runs = study.runs
    assert len(runs) == 4 and runs["run_id"].is_unique
    assert sorted(zip(runs["params.model.cell"], runs["params.train.lr"], runs["seed"])) == [
        ("lstm", 1.0e38, 1),
        ("lstm", 1.0e38, 2),
        ("rnn_tanh", 1.0, 1),
        ("rnn_tanh", 1.0, 2),
    ]
    assert runs["params.train.lr"].dtype == "float64" and runs["params.model.hidden_size"].dtype == "int64"
    assert set(runs["params.model.hidden_size"]) == {16} and set(runs["params.train.max_steps"]) == {40}
    assert runs["params.data.dir"].isna().all() and all(isinstance(v, str) for v in runs["params.data.corpus"])
    assert all(v == ["valid"] for v in runs["params.eval.splits"])
    assert set(runs["outcome"]) == {"trained", "diverged"} and set(runs["status"]) == {"FINISHED"}
    assert (runs["outcome"] == "diverged").tolist() == (runs["params.train.lr"] > 1).tolist()
    # every param of every run, as MLflow holds it, read back; every metric as logged
    client = store(ui_home["home"])
    for row in runs.itertuples(index=False):
        recorded = client.get_run(row.run_id).data
        params = {c.removeprefix("params."): runs.loc[runs["run_id"] == row.run_id, c].iloc[0] for c in runs}
        for key, text in recorded.params.items():
            value = params[key]
            expected = text if key == "data.corpus" else param_from_text(text)
            assert value == expected or (expected is None and pd.isna(value)), key
        for key, value in recorded.metrics.items():
            ours = params[f"metrics.{key}"]
            assert ours == value or abs(value) > 1e300 or (math.isnan(value) and math.isnan(ours)), key
    # what the comparison computes: the paired effect of each factor, per stratum of the other
    effects = study.effects
    assert set(effects["factor"]) == {"model.cell", "train.lr"}
    assert {"from", "to", "stratum", "pairs", "mean_difference", "ci_low", "ci_high"} <= set(effects.columns)
    from tasks.analysis.answer import answer
    from tasks.analysis.compare import comparison

    pd.testing.assert_frame_equal(effects, answer(comparison("tiny_ui")).effects)


def test_curves_are_mlflows_metric_history_per_run(ui_home):
    study = rnnlab.load_study("tiny_ui")
    client = store(ui_home["home"])
    for metric in ("valid/ppl", "train/loss"):
        curve = rnnlab.curves("tiny_ui", metric)
        assert list(curve.columns) == ["run_id", "variant", "seed", "step", "value"]
        for row in study.runs.itertuples(index=False):
            mine = curve[curve["run_id"] == row.run_id]
            history = sorted((m.step, m.value) for m in client.get_metric_history(row.run_id, metric))
            assert list(zip(mine["step"], mine["value"])) == history, (metric, row.variant)
            assert set(mine["variant"]) <= {row.variant} and set(mine["seed"]) <= {row.seed}
    ppl = rnnlab.curves("tiny_ui", "valid/ppl")
    trained = set(study.runs.loc[study.runs["outcome"] == "trained", "run_id"])
    assert set(ppl["run_id"]) == trained and sorted(set(ppl["step"])) == [20, 40]
    with pytest.raises(LookupError, match=r"logged metric 'valid_pp'; they logged: .*valid/ppl"):
        rnnlab.curves("tiny_ui", "valid_pp")
    with pytest.raises(LookupError, match="no study 'no_such_study'"):
        rnnlab.load_study("no_such_study")


def notebook_folder(folder: Path) -> Path:
    """A notebook's folder with packages of its own named as rnnlab's: each fails loudly if imported."""
    for name in ("models", "tasks", "flows"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('the notebook folder\\'s own {name}/')\n")
    return folder


def python_env(home: Path, **more: str) -> dict[str, str]:
    """The environment of a notebook's kernel on this checkout: rnnlab found after the notebook's folder."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "RNNLAB_HOME": str(home), "PYTHONPATH": path, "MPLBACKEND": "Agg", **more}


def test_the_notebook_example_runs_against_a_recorded_study(ui_study, tmp_path):
    example = REPO / "docs" / "examples" / "notebook.py"
    cells = example.read_text()
    assert cells.count("# %%") >= 5
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=notebook_folder(tmp_path),
        env=python_env(ui_study["home"], RNNLAB_STUDY="tiny_ui"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert out.startswith("<StudyResults 'tiny_ui': 2 variants, 4 runs")
    assert "Answer: " in out and "best: ['cell=rnn_tanh,lr=1.0']" in out
    assert "params.train.lr ['float']" in out and "params.model.cell ['str']" in out
    assert "2 of 4 runs trained" in out and "wrote valid_ppl.png" in out
    assert (tmp_path / "valid_ppl.png").read_bytes().startswith(b"\x89PNG")


def test_run_study_from_a_folder_holding_a_notebooks_own_models_tasks_and_flows(tiny_corpus, tmp_path):
    """A notebook kernel's folder comes first on sys.path, before rnnlab's: rnnlab's code is still the one that
    runs (in the notebook's process and in the cell workers a study spawns), and after each call the notebook's own
    packages are again what its imports give it, one it had imported before the call included."""
    home = tmp_path / "home"
    home.mkdir()
    path = tiny_study(
        home, "tiny_api", tiny_corpus, {"model.cell": ["rnn_tanh"]}, concurrency=1, **{"train.max_steps": 20}
    )
    script = textwrap.dedent(
        f"""
        import json, sys, types
        from pathlib import Path
        assert sys.path[0] == ""  # the notebook's folder first, as in a kernel
        import rnnlab
        own = types.ModuleType("models")  # a models package the notebook imported before calling rnnlab
        sys.modules["models"] = own
        first = rnnlab.run_study({str(path)!r}, overrides={{"seeds": [1], "train.val_every_n_steps": 10}})
        again = rnnlab.run_study({str(path)!r}, overrides=["seeds=[1]", "train.val_every_n_steps=10"])
        curve = rnnlab.curves("tiny_api", "valid/ppl")
        assert sys.modules["models"] is own
        refused = []
        for name in ("tasks", "flows"):
            try:
                __import__(name)
            except ImportError as err:
                refused.append(str(err))
        from rnnlab.api.packages import ROOT, _kept
        print(json.dumps({{
            "runs": [first.runs["run_id"].tolist(), again.runs["run_id"].tolist()],
            "parents": [first.parent_run_id, again.parent_run_id],
            "outcome": first.runs["outcome"].tolist(),
            "seeds": first.runs["params.seed"].tolist(),
            "every": first.runs["params.train.val_every_n_steps"].tolist(),
            "steps": sorted(set(curve["step"])),
            "refused": refused,
            "root": str(ROOT),
            "kept": sorted({{k.partition(".")[0] for k in _kept}}),
            "kept_from": sorted({{str(ROOT.joinpath(*Path(m.__file__).resolve().relative_to(ROOT).parts[:1]))
                                 for m in _kept.values()}}),
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=notebook_folder(tmp_path / "notebook"),
        env=python_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["outcome"] == ["trained"] and found["seeds"] == [1] and found["every"] == [10]
    assert found["runs"][0] == found["runs"][1] and len(set(found["parents"])) == 2  # the cell reused, not retrained
    assert found["steps"] == [10, 20]
    assert found["refused"] == ["the notebook folder's own tasks/", "the notebook folder's own flows/"]
    # rnnlab's modules, kept aside until the next call
    root = str(REPO.resolve())
    assert found["root"] == root and found["kept"] == ["flows", "models", "tasks"]
    assert found["kept_from"] == [f"{root}/flows", f"{root}/models", f"{root}/tasks"]
    assert "rnnlab: study 'tiny_api': 1 variants × 1 seed(s) = 1 cells" in done.stderr


def test_a_script_calling_run_study_without_a_main_guard_runs_once_and_its_study_finishes(tiny_corpus, tmp_path):
    """Python's spawn start of the cell workers imports the parent's `__main__`: an unguarded script would start
    the study again in each worker. It runs once, and the study's two cells train in two workers."""
    home = tmp_path / "home"
    home.mkdir()
    path = tiny_study(home, "tiny_script", tiny_corpus, {"model.cell": ["rnn_tanh", "gru"]}, **{"train.max_steps": 10})
    ran = tmp_path / "ran.txt"
    script = tmp_path / "analysis.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            import rnnlab

            with open({str(ran)!r}, "a") as log:  # one line per time this file runs
                log.write(f"{{os.getpid()}}\\n")
            study = rnnlab.run_study({str(path)!r})
            print(len(study.runs), *sorted(study.runs["outcome"]))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=python_env(home), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(ran.read_text().splitlines()) == 1, ran.read_text()  # not again in a worker
    assert done.stdout.split() == ["2", "trained", "trained"], done.stdout
    assert "bootstrapping phase" not in done.stderr
