"""The command line's conventions (issue 29, point 4): `rnnlab --version`; -v and --json before or after the command;
with --json an error is a JSON object on stdout too; YAML 1.2 values and strict scalar types; unknown run ids, studies
and corpora refused before torch or MLflow is imported (their times: benchmarks/bench_cli_refusals.py); `rnnlab runs`;
the project directory found upwards from the current one; no library warning on a first run.

The refusals' messages themselves are in tests/test_bad_input.py's catalogue."""

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, RUN_CONFIG, rnnlab_command

from rnnlab.cli.main import build_parser, main
from rnnlab.runtime import env, store
from rnnlab.schemas import config
from rnnlab.schemas.study import load_study
from tasks.claims.claims_file import load_claims
from tasks.record import tracking

STUDY_FILE = REPO / "conf" / "studies" / "quick.yaml"
ERROR_LINE = re.compile(r"^rnnlab(?: [\w-]+)?: error: (.*)$", re.MULTILINE)


def rnnlab(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's refusal, --help, --version
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def one_command_per_process():
    yield
    store.READ_ONLY = False  # `runs`, `compare`, `report` set it for their process


@pytest.fixture(scope="module")
def conventions() -> dict[str, str]:
    """The study 'conventions' in the session's store, made directly (no training): an execution and two cells, one
    trained with a valid_ppl, one diverged; and {lm}: a language-model run's id."""
    parent = tracking.open_run(
        "conventions", "study conventions", {}, {"rnnlab.role": "study", "rnnlab.metric": "valid_ppl"}
    )
    ids = {"parent": parent}
    for cell, seed, outcome in (("lstm", 1, "trained"), ("rnn_tanh", 2, "diverged")):
        tags = {"rnnlab.role": "cell", "rnnlab.variant": f"cell={cell}", "rnnlab.outcome": outcome}
        run_id = tracking.open_run("conventions", f"cell={cell} s{seed}", {"seed": seed}, tags, parent)
        if outcome == "trained":
            tracking.log_metrics(run_id, {"valid_ppl": 123.456})
        tracking.close_run(run_id)
        ids[cell] = run_id
    tracking.close_run(parent)
    return ids


# --- --version, -v and --json -----------------------------------------------------------------------------------------


def test_version_names_the_package_and_its_commit(capsys):
    code, out, _ = rnnlab(["--version"], capsys)
    assert code == 0
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)[1]
    assert out.startswith(f"rnnlab {version}")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit is named
        assert re.fullmatch(rf"rnnlab {re.escape(version)} \(commit {head.stdout.strip()}( \+ changes)?\)\n", out)


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "--json", "compare", "s"],
        ["compare", "s", "-v", "--json"],
        ["-v", "compare", "s", "--json"],
        ["--json", "compare", "--verbose", "s"],
    ],
)
def test_verbose_and_json_go_before_or_after_the_command(argv):
    args, extra = build_parser()[0].parse_known_args(argv)
    assert (args.verbose, args.json, args.study, extra) == (True, True, "s", [])


def test_without_them_neither_is_set_and_overrides_still_follow():
    args, _ = build_parser()[0].parse_known_args(["compare", "s"])
    assert (args.verbose, args.json) == (False, False)
    args, extra = build_parser()[0].parse_known_args(["--json", "train", "run.yaml", "train.lr=1"])
    assert (args.json, args.config, args.overrides, extra) == (True, "run.yaml", ["train.lr=1"], [])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--json", "train", "{tmp}/nope.yaml"], "config file not found: {tmp}/nope.yaml"),  # ours, before
        (["train", "{tmp}/nope.yaml", "--json"], "config file not found: {tmp}/nope.yaml"),  # and after
        (["compare", "s", "--json", "--bogus"], "unrecognized arguments: --bogus"),  # argparse's
        (["--json", "ui"], "--json: `rnnlab ui` has no JSON output"),
        (["--json", "runs", "nosuchstudy"], "no study 'nosuchstudy'"),
        (["--json", "train", str(RUN_CONFIG), "train.max_epochs=true"], "train.max_epochs: Input should be"),
    ],
)
def test_with_json_an_error_is_a_json_object_on_stdout_too(argv, expected, tmp_path, capsys, conventions):
    code, out, err = rnnlab([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2
    assert len(ERROR_LINE.findall(err)) == 1, err
    said = json.loads(out.splitlines()[-1])
    assert said == {"error": ERROR_LINE.search(err)[1], "exit_code": 2}
    assert expected.replace("{tmp}", str(tmp_path)) in said["error"]


def test_without_json_an_error_leaves_stdout_empty(tmp_path, capsys):
    code, out, err = rnnlab(["train", str(tmp_path / "nope.yaml")], capsys)
    assert (code, out) == (2, "") and "config file not found" in err


# --- YAML 1.2 and strict scalars ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, value",
    [
        ("no", "no"),
        ("yes", "yes"),
        ("on", "on"),
        ("Off", "Off"),
        ("y", "y"),
        ("true", True),
        ("False", False),
        ("010", 10),  # not octal 8
        ("0o17", 15),
        ("0x1f", 31),
        ("1e-3", 0.001),  # a number (YAML 1.1: a string)
        ("-2.5", -2.5),
        (".inf", math.inf),
        ("1_000", "1_000"),
        ("1:20", "1:20"),  # not sexagesimal 80
        ("2026-12-06", "2026-12-06"),  # not a date
        ("~", None),
        ("null", None),
        ("=", "="),
        ("[1, no]", [1, "no"]),
    ],
)
def test_override_values_are_yaml_1_2(raw, value):
    parsed = config.parse_overrides([f"k={raw}"])["k"]
    assert parsed == value and type(parsed) is type(value)


def test_a_run_name_of_no_stays_the_word(tmp_path):
    assert config.load(RUN_CONFIG, ["run_name=no"]).run_name == "no"
    (tmp_path / "c.yaml").write_text("run_name: off\ntrain:\n  lr: 1e-3\n  max_epochs: 010\n")
    cfg = config.load(tmp_path / "c.yaml")
    assert (cfg.run_name, cfg.train.lr, cfg.train.max_epochs) == ("off", 0.001, 10)


def test_numbers_convert_as_before():
    cfg = config.load(RUN_CONFIG, ["train.lr=1", "train.max_epochs=2.0", "train.clip_norm=null"])
    assert (cfg.train.lr, type(cfg.train.lr), cfg.train.max_epochs, cfg.train.clip_norm) == (1.0, float, 2, None)


def test_what_rnnlab_writes_reads_back_the_same_with_either_yaml():
    tree = {"words": ["no", "yes", "on", "1e3", "0o7", "010", "1:20", "true", "x"], "n": 1e-5, "b": True, "z": None}
    text = config.dump_yaml(tree)
    assert config.load_yaml(text) == tree and yaml.safe_load(text) == tree


CLAIMS_FILE = """\
study: strictness
claims:
  - id: context
    quote: a simple RNN conditions ~7 tokens back
    studies: [quick.yaml]
    measure: {kind: effective_context, study: quick, subject: rnn_tanh, reference: lstm, level: k_5pct}
    criterion:
      supported_range: {low: 3, high: 15}
      refuted_outside: {low: 2, high: 30}
      max_ratio: 0.5
      refuted_ratio: 1.0
      min_seeds: %s
    verdicts: {supported: yes it does, not_supported: it does not, inconclusive: cannot say}
"""


@pytest.mark.parametrize(
    "value, problem",
    [
        ("true", "claims.0.criterion.min_seeds: Input should be a valid integer, not a boolean (got True)"),
        ("2", None),
    ],
)
def test_a_claims_file_has_strict_scalars_too(tmp_path, value, problem):
    (tmp_path / "quick.yaml").write_text(
        (REPO / "conf" / "studies" / "quick.yaml").read_text().replace("../runs/", f"{REPO}/conf/runs/")
    )
    (tmp_path / "claims.yaml").write_text(CLAIMS_FILE % value)
    if problem is None:
        lecture = load_claims(tmp_path / "claims.yaml")
        assert lecture.config.claims[0].rule().min_seeds == 2
        assert lecture.config.claims[0].verdicts.supported == "yes it does"  # YAML 1.2: `yes` is a word
    else:
        with pytest.raises(config.ConfigError) as refused:
            load_claims(tmp_path / "claims.yaml")
        assert str(refused.value) == f"{tmp_path / 'claims.yaml'}: invalid claims file: {problem}"


def test_every_shipped_config_loads():
    for path in sorted((REPO / "conf" / "runs").glob("*.yaml")):
        config.load(path)
    for path in sorted((REPO / "conf" / "studies").glob("*.yaml")):
        (load_claims if "claims" in config.read_yaml(path) else load_study)(path)


# --- unknown names refused before torch or MLflow, `rnnlab runs` ---------------------------------------------------

PROBE = """
import contextlib, io, json, sys
from rnnlab.cli.main import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exit:
        code = exit.code
heavy = sorted(m for m in ("torch", "lightning", "mlflow", "prefect", "pandas") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue(), "err": err.getvalue()}))
"""


@pytest.mark.parametrize(
    "argv, code, said",
    [
        (["evaluate", "nosuchrun", "--file", "{file}"], 2, "no run 'nosuchrun'"),
        (["translate", "nosuchrun", "--input", "{file}"], 2, "no run 'nosuchrun'"),
        (["probe", "nosuchrun", "context"], 2, "'conventions' (3 runs)"),
        (["report", "nosuchstudy"], 2, "no study 'nosuchstudy'"),
        (["compare", "nosuchstudy"], 2, "there are: "),
        (["runs", "nosuchstudy"], 2, "conventions"),
        (["runs", "conventions"], 0, "rnnlab: 3 runs in 'conventions'"),
        (["data", "data.corpus=ptbx"], 2, "neither a known corpus (ptb, wikitext-2)"),
        (["train", str(RUN_CONFIG), "data.corpus=ptbx"], 2, "neither a known corpus"),
        (["study", str(STUDY_FILE), "data.corpus=ptbx"], 2, "neither a known corpus"),
        (["train", str(STUDY_FILE)], 2, "`rnnlab study"),
        (["study", str(RUN_CONFIG)], 2, "`rnnlab train"),
        (["--version"], 0, ""),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_refused_before_torch_or_mlflow_is_imported(argv, code, said, conventions, tmp_path):
    (tmp_path / "t.txt").write_text("a b\n")
    argv = [a.replace("{file}", str(tmp_path / "t.txt")) for a in argv]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == code, result["err"]
    assert said in result["err"]
    assert result["heavy"] == []


def test_runs_lists_ids_with_variant_seed_status_outcome_and_the_metric(conventions, capsys):
    code, out, err = rnnlab(["runs", "conventions"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["run", "id", "role", "variant", "seed", "status", "outcome", "valid_ppl"]
    assert lines[1].split() == [conventions["parent"], "study", "FINISHED"]
    assert lines[2].split() == [conventions["lstm"], "cell", "cell=lstm", "1", "FINISHED", "trained", "123.46"]
    assert lines[3].split() == [conventions["rnn_tanh"], "cell", "cell=rnn_tanh", "2", "FINISHED", "diverged"]
    assert "3 runs in 'conventions' (3 FINISHED)" in err


def test_runs_as_json(conventions, capsys):
    code, out, _ = rnnlab(["--json", "runs", "conventions"], capsys)
    assert code == 0
    listed = json.loads(out.splitlines()[-1])
    assert (listed["study"], listed["metric"]) == ("conventions", "valid_ppl")
    rows = {row["run_id"]: row for row in listed["runs"]}
    assert [row["run_id"] for row in listed["runs"]] == [conventions[k] for k in ("parent", "lstm", "rnn_tanh")]
    lstm = rows[conventions["lstm"]]
    assert (lstm["role"], lstm["variant"], lstm["seed"], lstm["status"]) == ("cell", "cell=lstm", 1, "FINISHED")
    assert (lstm["outcome"], lstm["metric"], lstm["parent_run_id"]) == ("trained", 123.456, conventions["parent"])
    assert rows[conventions["rnn_tanh"]]["metric"] is None


def test_a_run_ids_start_is_told_the_whole_id(conventions, capsys, tmp_path):
    (tmp_path / "t.txt").write_text("a b\n")
    code, _, err = rnnlab(["evaluate", conventions["lstm"][:8], "--file", str(tmp_path / "t.txt")], capsys)
    assert code == 2 and f"did you mean '{conventions['lstm']}' (the whole id)?" in err


# --- the project directory ------------------------------------------------------------------------------------------


def mark(project: Path, kind: str) -> None:
    if kind == "pyproject.toml":
        (project / kind).write_text('[project]\nname = "rnnlab"\nversion = "0.1.0"\n')
    else:
        (project / kind).parent.mkdir(parents=True, exist_ok=True)
        (project / kind).write_bytes(b"")


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """tmp_path/proj/conf/runs as the current directory, without RNNLAB_HOME; skipped where a folder above tmp_path
    is a project itself."""
    if any(env.is_project(folder) for folder in tmp_path.parents):
        pytest.skip(f"a folder above {tmp_path} is an rnnlab project")
    deep = tmp_path / "proj" / "conf" / "runs"
    deep.mkdir(parents=True)
    monkeypatch.delenv("RNNLAB_HOME")
    monkeypatch.chdir(deep)
    return deep


@pytest.mark.parametrize("kind", ["mlruns/mlflow.db", ".rnnlab-reserve", "pyproject.toml"])
def test_the_project_is_the_nearest_marked_folder_upwards(kind, elsewhere):
    project = elsewhere.parent.parent
    mark(project, kind)
    assert env.project_dir() == project.resolve()
    mark(elsewhere.parent, kind)  # the nearest one wins
    assert env.project_dir() == elsewhere.parent.resolve()


def test_what_does_not_mark_a_project(elsewhere):
    project = elsewhere.parent.parent
    (project / ".prefect").mkdir()  # Prefect's home: ~/.prefect by default
    (project / "mlruns").mkdir()  # MLflow's file store, made wherever MLflow runs
    (project / "pyproject.toml").write_text('[project]\nname = "another"\n')
    assert env.project_dir() == elsewhere.resolve()  # none found: the current directory, where a project begins


def test_rnnlab_home_still_wins(elsewhere, tmp_path, monkeypatch):
    mark(elsewhere.parent.parent, ".rnnlab-reserve")
    monkeypatch.setenv("RNNLAB_HOME", str(tmp_path / "home"))
    assert env.project_dir() == (tmp_path / "home").resolve()


def test_help_says_how_the_project_is_found(capsys):
    code, out, _ = rnnlab(["--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "$RNNLAB_HOME" in text and "upwards" in text
    assert all(kind.split()[0] in text for kind in env.PROJECT_MARKS)


def test_a_command_in_a_subfolder_uses_the_project_above(conventions, tmp_path):
    project = tmp_path / "proj"
    (project / "conf").mkdir(parents=True)
    (project / "mlruns").mkdir()
    with sqlite3.connect(store.store_path(store.tracking_uri())) as source:  # the session's store, copied whole
        with sqlite3.connect(project / "mlruns" / "mlflow.db") as copy:
            source.backup(copy)
    environ = {k: v for k, v in os.environ.items() if k != "RNNLAB_HOME"}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # this code
    done = subprocess.run(
        rnnlab_command("runs", "conventions"), cwd=project / "conf", env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert conventions["lstm"] in done.stdout and "3 runs in 'conventions'" in done.stderr
    assert sorted(p.name for p in (project / "conf").iterdir()) == []  # no second project made in conf/


# --- a first run is quiet --------------------------------------------------------------------------------------------


def test_no_library_warning_on_a_first_run(tmp_path, tiny_corpus):
    """A new machine: a project directory and a temporary folder that do not exist yet. Both a command that writes
    (`data`: torch, Prefect) and one that only reads (Prefect's home then goes under the temporary folder) print no
    warning of a library."""
    (tmp_path / "tmp").mkdir()
    environ = {**os.environ, "RNNLAB_HOME": str(tmp_path / "new"), "TMPDIR": str(tmp_path / "tmp")}
    done = subprocess.run(
        rnnlab_command("data", f"data.corpus={tiny_corpus}"), env=environ, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "warn" not in done.stderr.lower(), done.stderr
    read_only = "from rnnlab.runtime.env import configure; configure(read_only=True); import prefect"
    done = subprocess.run([sys.executable, "-c", read_only], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "warn" not in done.stderr.lower(), done.stderr
