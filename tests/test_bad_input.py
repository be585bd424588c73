"""Bad input of every kind ends the same way: exit code 2, one `rnnlab: error:` line that names the problem (the file,
key or value) and what is expected, no traceback, and nothing left behind in the tracking store.

CASES is the catalogue: (id, argv, expected substring, [setup]). In argv and the expected text, {tmp} is the case's
own temporary folder, {run} the shipped ptb_small config, {nmt} a translation one, {tiny} a tiny corpus cut from PTB;
a setup may name more (it is called with {tmp} and returns its names, e.g. {failed}: the id of a FAILED run). Cases
run in-process through `rnnlab.cli.main`, for speed; a few run as real processes to prove what a shell sees.
"""

import hashlib
import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, RUN_CONFIG, TINY, cut_corpus, rnnlab_command

from rnnlab.cli.main import main
from rnnlab.runtime import store
from rnnlab.runtime.env import EnvironmentProblem
from rnnlab.runtime.processes import Interrupts
from rnnlab.schemas import config
from tasks.record import tracking

# --- setups: each writes into the case's folder and returns the names it adds to the argv -------------------------


def text(name: str, content: str | bytes):
    def setup(tmp: Path) -> dict[str, str]:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return {}

    return setup


def study(overrides=None, **fields):
    """{tmp}/study.yaml: two cells of the shipped ptb_small config, changed by `fields` (None removes a field)."""
    tree = {
        "study": "bad",
        "base": str(RUN_CONFIG),
        "factors": {"model.cell": ["rnn_tanh", "lstm"]},
        **({"overrides": overrides} if overrides else {}),
        **fields,
    }
    return text("study.yaml", yaml.safe_dump({k: v for k, v in tree.items() if v is not None}))


def corpus(**files: str | bytes | None):
    """{tmp}/corpus: the tiny PTB cut, with some split files replaced (None removes one)."""

    def setup(tmp: Path) -> dict[str, str]:
        folder = cut_corpus(tmp / "corpus")
        for name, content in files.items():
            path = folder / f"{name}.txt"
            if content is None:
                path.unlink()
            else:
                path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return {}

    return setup


_RECORDED: dict[str, str] = {}


def recorded(tmp: Path) -> dict[str, str]:
    """Runs as the store keeps them, made directly (no training), once per test session:
    {failed} and {killed}: a run that ended so; {lm}: a FINISHED language-model run with its config.yaml;
    the study 'pplx', recorded with a deciding metric (valid_pplx) that its trained cells never logged."""
    if not _RECORDED:
        for status in ("FAILED", "KILLED"):
            run_id = tracking.open_run("bad-input-catalogue", status.lower(), {}, {})
            tracking.close_run(run_id, status)
            _RECORDED[status.lower()] = run_id
        lm = tracking.open_run("bad-input-catalogue", "lm", {}, {})
        tracking.log_text(lm, config.load(RUN_CONFIG, TINY).to_yaml(), "config.yaml")
        tracking.close_run(lm)
        _RECORDED["lm"] = lm
        parent = tracking.open_run(
            "pplx",
            "study pplx",
            {},
            {"rnnlab.role": "study", "rnnlab.metric": "valid_pplx", "rnnlab.goal": "min", "rnnlab.task": "lm"},
        )
        grid = []
        for cell in ("rnn_tanh", "lstm"):
            key = f"pplx-{cell}"
            run_id = tracking.open_run(
                "pplx",
                f"cell={cell},seed=1",
                {"seed": 1},
                {
                    "rnnlab.role": "cell",
                    "rnnlab.cell": f"cell={cell}",
                    "rnnlab.cell_key": key,
                    "factor.model.cell": cell,
                    "rnnlab.outcome": "trained",
                },
                parent,
            )
            tracking.log_metrics(run_id, {"valid_ppl": 300.0, "test_ppl": 310.0, "train_seconds": 1.0})
            tracking.close_run(run_id)
            grid.append(
                {
                    "variant": f"cell={cell}",
                    "seed": 1,
                    "cell_key": key,
                    "run_name": f"cell={cell},seed=1",
                    "factors": {"model.cell": cell},
                }
            )
        tracking.log_text(parent, json.dumps(grid), "grid.json")
        tracking.close_run(parent)
    return dict(_RECORDED)


def environ(**variables: str):
    """Environment variables for the case ({tmp} filled in): names starting with `$` are set, not substituted."""

    def setup(tmp: Path) -> dict[str, str]:
        return {f"${k}": v.replace("{tmp}", str(tmp)) for k, v in variables.items()}

    return setup


def damaged_store(how: str):
    """{tmp}/proj: a project whose MLflow store is garbage, or a real store cut short, or an empty file."""

    def setup(tmp: Path) -> dict[str, str]:
        db = tmp / "proj" / "mlruns" / "mlflow.db"
        db.parent.mkdir(parents=True)
        if how == "garbage":
            db.write_bytes(b"this is not a database\n" * 100)
        elif how == "truncated":
            from mlflow.tracking import MlflowClient

            MlflowClient(f"sqlite:///{db}").search_experiments()  # a real, new store (its migrations)
            db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
        return {"$RNNLAB_HOME": str(tmp / "proj")}

    return setup


def both(*setups):
    def setup(tmp: Path) -> dict[str, str]:
        return {k: v for s in setups for k, v in s(tmp).items()}

    return setup


TRAIN = ["train", "{run}", *TINY]
NMT_CONFIG = REPO / "conf" / "runs" / "multi30k_deen.yaml"
STUDY_FILE = REPO / "conf" / "studies" / "quick.yaml"
CLAIMS_FILE = REPO / "conf" / "studies" / "lecture.yaml"
ON_TINY = [*TRAIN, "data.corpus={tiny}"]
ON_CORPUS = [*TRAIN, "data.corpus={tmp}/corpus"]
NOT_UTF8 = "train:\n  lr: caf\xe9\n".encode("latin-1")
EMPTY_GRID = [{"model.cell": "rnn_tanh"}, {"model.cell": "lstm"}]

CASES = [
    # config files
    ("config file missing", ["train", "{tmp}/nope.yaml"], "config file not found: {tmp}/nope.yaml"),
    ("config file not UTF-8", ["train", "{tmp}/c.yaml"], "{tmp}/c.yaml: not valid UTF-8", text("c.yaml", NOT_UTF8)),
    (
        "config YAML syntax",
        ["train", "{tmp}/c.yaml"],
        "{tmp}/c.yaml: not valid YAML",
        text("c.yaml", "train:\n  lr: 1\n bad: [\n"),
    ),
    (
        "config YAML tab indent",
        ["train", "{tmp}/c.yaml"],
        "{tmp}/c.yaml: not valid YAML",
        text("c.yaml", "train:\n\tlr: 1\n"),
    ),
    (
        "config duplicate key",
        ["train", "{tmp}/c.yaml"],
        "{tmp}/c.yaml: not valid YAML: key 'lr' is given twice, on lines 2 and 3",
        text("c.yaml", "train:\n  lr: 1\n  lr: 2\n"),
    ),
    (
        "config duplicate section",
        ["train", "{tmp}/c.yaml"],
        "key 'train' is given twice, on lines 1 and 2",
        text("c.yaml", "train: {lr: 1}\ntrain: {bptt: 5}\n"),
    ),
    ("config not a mapping", ["train", "{tmp}/c.yaml"], "expected a mapping of config keys", text("c.yaml", "- a\n")),
    (
        "config unknown key in file",
        ["train", "{tmp}/c.yaml"],
        "did you mean 'train.clip_norm'?",
        text("c.yaml", "train:\n  clip_nrom: 1.0\n"),
    ),
    ("config unknown task", [*TRAIN, "task=transformer"], "task: must be one of 'lm', 'nmt' (got 'transformer')"),
    # keys, types, ranges, conflicts
    ("key typo", [*TRAIN, "model.cel=gru"], "unknown key 'model.cel'; did you mean 'model.cell'?"),
    ("section typo", [*TRAIN, "modle.cell=gru"], "unknown key 'modle.cell'; did you mean 'model.cell'?"),
    ("section typo, several keys", [*TRAIN, "modle.cell=gru", "modle.layers=1"], "did you mean 'model'?"),
    (
        "unknown top-level key lists the sections",
        [*TRAIN, "foo=1"],
        "allowed here: experiment, run_name, seed, task, data.*, model.*, train.*, eval.*",
    ),
    ("not a number", [*TRAIN, "train.lr=fast"], "train.lr: Input should be a valid number"),
    ("not an integer", [*TRAIN, "train.batch_size=2.5"], "train.batch_size: Input should be a valid integer"),
    ("not a boolean", [*TRAIN, "model.tied=maybe"], "model.tied: Input should be a valid boolean"),
    ("not a choice", [*TRAIN, "model.cell=transformer"], "model.cell: Input should be 'rnn_tanh', 'lstm' or 'gru'"),
    ("not a split", [*TRAIN, "eval.splits=[train]"], "Input should be 'valid' or 'test' (got 'train')"),
    ("dropout out of range", [*TRAIN, "model.dropout=1.5"], "model.dropout: Input should be less than 1"),
    ("negative lr", [*TRAIN, "train.lr=-1"], "train.lr: Input should be greater than 0"),
    ("zero batch size", [*TRAIN, "train.batch_size=0"], "train.batch_size: Input should be greater than or equal to 1"),
    ("lr decay above 1", [*TRAIN, "train.lr_decay=2"], "train.lr_decay: Input should be less than or equal to 1"),
    ("infinite lr", [*TRAIN, "train.lr=.inf"], "train.lr: Input should be a finite number (got inf)"),
    ("NaN lr", [*TRAIN, "train.lr=.nan"], "train.lr: Input should be a finite number"),
    ("infinite budget", [*TRAIN, "train.max_minutes=.inf"], "train.max_minutes: Input should be a finite number"),
    ("section given a value", [*TRAIN, "model=3"], "model: Input should be a valid dictionary"),
    ("value given a section", [*TRAIN, "model.cell.size=3"], "model.cell: Input should be"),
    ("bidirectional language model", [*TRAIN, "model.bidirectional=true"], "would see the future"),
    (
        "tied sizes differ",
        [*TRAIN, "model.tied=true", "model.hidden_size=300"],
        "model.tied=true needs model.embedding_size == model.hidden_size (got 16 and 300)",
    ),
    ("clip by norm and by value", [*TRAIN, "train.clip_value=1.0"], "choose one way of clipping"),
    (
        "odd hidden size, bidirectional encoder",
        ["train", "{nmt}", "model.hidden_size=3"],
        "model.hidden_size=3 must be even",
    ),
    ("language-model key in a translation run", ["train", "{nmt}", "train.bptt=5"], "unknown key 'train.bptt'"),
    # strict scalar types: a bool is not a number, nor a number or a word a bool (YAML 1.2: `yes` is a word)
    (
        "bool as an integer",
        [*TRAIN, "train.max_epochs=true"],
        "train.max_epochs: Input should be a valid integer, not a boolean (got True)",
    ),
    ("bool as a number", [*TRAIN, "train.lr=true"], "train.lr: Input should be a valid number, not a boolean"),
    ("bool as a seed", [*TRAIN, "seed=false"], "seed: Input should be a valid integer, not a boolean (got False)"),
    (
        "bool as an integer in a file",
        ["train", "{tmp}/c.yaml"],
        "{tmp}/c.yaml: invalid config: train.max_epochs: Input should be a valid integer, not a boolean",
        text("c.yaml", "train:\n  max_epochs: true\n"),
    ),
    (
        "number as a bool",
        [*TRAIN, "model.tied=1"],
        "model.tied: Input should be a valid boolean, true or false (got 1)",
    ),
    ("yes as a bool", [*TRAIN, "data.download=yes"], "data.download: Input should be a valid boolean, true or false"),
    (
        "bool among the seeds",
        ["study", "{tmp}/study.yaml", "seeds=[1,true]"],
        "seeds: Input should be a valid integer, not a boolean",
        study(),
    ),
    # a file given to the other command
    (
        "run config given to study",
        ["study", "{run}"],
        "{run} is a run config, not a study file: train it with `rnnlab train {run}`",
    ),
    (
        "study file given to train",
        ["train", str(STUDY_FILE)],
        f"{STUDY_FILE} is a study file, not a run config: run it with `rnnlab study {STUDY_FILE}`",
    ),
    ("claims file given to train", ["train", str(CLAIMS_FILE)], "is a claims file, not a run config: run it with"),
    # overrides
    ("override without =", [*TRAIN, "train"], "override 'train' is not of the form key=value"),
    ("override without key", [*TRAIN, "=3"], "override '=3' is not of the form key=value"),
    ("override value not YAML", [*TRAIN, "train.lr=[1"], "the value '[1' is not valid YAML"),
    ("override value with a duplicate key", [*TRAIN, "eval.splits={a: 1, a: 2}"], "key 'a' is given twice"),
    (
        "override after --json is applied",
        [*TRAIN, "--json", "train.lr=fast"],
        "train.lr: Input should be a valid number",
    ),
    ("unknown option after --json", [*TRAIN, "--json", "--jsno"], "unrecognized arguments: --jsno"),
    ("override to a command without overrides", ["compare", "pplx", "a=1"], "unrecognized arguments: a=1"),
    # corpora
    ("unknown corpus", [*TRAIN, "data.corpus=ptbx"], "data.corpus='ptbx' is neither a known corpus"),
    ("data unknown corpus", ["data", "data.corpus=ptbx"], "'ptbx' is neither a known corpus (ptb, wikitext-2)"),
    (
        "data unknown parallel corpus",
        ["data", "task=nmt", "data.corpus=multi31k"],
        "'multi31k' is neither a known parallel corpus (multi30k, chr_en)",
    ),
    ("study unknown corpus", ["study", "{tmp}/study.yaml", "data.corpus=ptbx"], "neither a known corpus", study()),
    ("corpus directory missing", [*TRAIN, "data.corpus={tmp}/nowhere"], "{tmp}/nowhere"),
    ("corpus split missing", ON_CORPUS, "missing valid split", corpus(valid=None)),
    ("corpus file empty", ON_CORPUS, "{tmp}/corpus/train.txt: file is empty", corpus(train="")),
    ("corpus file not UTF-8", ON_CORPUS, "{tmp}/corpus/valid.txt: not valid UTF-8", corpus(valid=b"caf\xe9 au lait\n")),
    (
        "known corpus missing, download off",
        [*TRAIN, "data.corpus=wikitext-2", "data.dir={tmp}", "data.download=false"],
        "missing train split",
    ),
    ("data.dir is a file", [*TRAIN, "data.dir={tmp}/c.yaml"], "is a file, not a directory", text("c.yaml", "a: 1\n")),
    ("corpus shorter than a batch", [*ON_TINY, "train.batch_size=100000"], "train.batch_size"),
    # studies
    ("study file missing", ["study", "{tmp}/nope.yaml"], "config file not found: {tmp}/nope.yaml"),
    ("study file not UTF-8", ["study", "{tmp}/c.yaml"], "not valid UTF-8", text("c.yaml", NOT_UTF8)),
    (
        "study duplicate key",
        ["study", "{tmp}/c.yaml"],
        "key 'seeds' is given twice",
        text("c.yaml", "study: s\nbase: x.yaml\nseeds: [1]\nseeds: [2]\nfactors: {model.cell: [lstm]}\n"),
    ),
    ("study base missing", ["study", "{tmp}/study.yaml"], "config file not found", study(base="nope.yaml")),
    ("study without factors", ["study", "{tmp}/study.yaml"], "at least one factor", study(factors={})),
    (
        "study empty factor",
        ["study", "{tmp}/study.yaml"],
        "factor 'model.cell' has an empty list of values",
        study(factors={"model.cell": []}),
    ),
    ("study empty grid", ["study", "{tmp}/study.yaml"], "the grid is empty", study(exclude=EMPTY_GRID)),
    (
        "study bad factor key",
        ["study", "{tmp}/study.yaml"],
        "did you mean 'model.cell'?",
        study(factors={"model.cel": ["lstm"]}),
    ),
    (
        "study factor value of the wrong type",
        ["study", "{tmp}/study.yaml"],
        "cell clip_norm=abc (seed 1)",
        study(factors={"train.clip_norm": [0.25, "abc"]}),
    ),
    (
        "study bidirectional factor",
        ["study", "{tmp}/study.yaml"],
        "would see the future",
        study(factors={"model.bidirectional": [False, True]}),
    ),
    (
        "study seed as a factor",
        ["study", "{tmp}/study.yaml"],
        "'seed' cannot be a factor",
        study(factors={"seed": [1, 2]}),
    ),
    ("study duplicated seeds", ["study", "{tmp}/study.yaml"], "seeds repeat a value: [1, 1]", study(seeds=[1, 1])),
    (
        "study unknown metric",
        ["study", "{tmp}/study.yaml"],
        "metric.name='valid_pplx' is not a metric",
        study(metric={"name": "valid_pplx"}),
    ),
    (
        "study metric of the other task",
        ["study", "{tmp}/study.yaml"],
        "metric.name='test_bleu' is not a metric",
        study(metric={"name": "test_bleu"}),
    ),
    (
        "study metric goal",
        ["study", "{tmp}/study.yaml"],
        "metric.goal: Input should be 'min' or 'max'",
        study(metric={"goal": "up"}),
    ),
    (
        "study unknown field",
        ["study", "{tmp}/study.yaml"],
        "unknown key 'factor'; did you mean 'factors'?",
        study(factors=None, factor={"model.cell": ["lstm"]}),
    ),
    ("study seed= override", ["study", "{tmp}/study.yaml", "seed=3"], "'seed' cannot be overridden", study()),
    ("study experiment= override", ["study", "{tmp}/study.yaml", "experiment=x"], "set `study` instead", study()),
    (
        "study run_name= override",
        ["study", "{tmp}/study.yaml", "run_name=x"],
        "named after its variant and seed",
        study(),
    ),
    (
        "study seed in its overrides",
        ["study", "{tmp}/study.yaml"],
        "overrides: 'seed' cannot be overridden",
        study(overrides={"seed": 3}),
    ),
    (
        "study experiment in its overrides",
        ["study", "{tmp}/study.yaml"],
        "overrides: 'experiment' cannot be",
        study(overrides={"experiment": "x"}),
    ),
    ("study seedz= is told seeds", ["study", "{tmp}/study.yaml", "seedz=[1]"], "did you mean 'seeds'?", study()),
    ("study run key typo", ["study", "{tmp}/study.yaml", "train.lrr=1"], "did you mean 'train.lr'?", study()),
    ("study factor overridden", ["study", "{tmp}/study.yaml", "model.cell=gru"], "model.cell is a factor", study()),
    (
        "study concurrency 0",
        ["study", "{tmp}/study.yaml", "concurrency=0"],
        "concurrency: Input should be greater",
        study(),
    ),
    # recorded studies
    ("compare unknown study", ["compare", "nosuchstudy"], "no study 'nosuchstudy'", recorded),
    (
        "compare metric never logged",
        ["compare", "pplx"],
        "metric 'valid_pplx', which none of its trained runs logged",
        recorded,
    ),
    ("report metric never logged", ["report", "pplx", "--out", "{tmp}/reports"], "'valid_pplx'", recorded),
    (
        "compare another run as execution",
        ["compare", "pplx", "--parent-run", "{failed}"],
        "is not an execution of study 'pplx'",
        recorded,
    ),
    (
        "compare --csv into a missing folder",
        ["compare", "pplx", "--csv", "{tmp}/missing/x.csv"],
        "the folder {tmp}/missing does not exist",
    ),
    ("compare --csv a folder", ["compare", "pplx", "--csv", "{tmp}"], "--csv {tmp}: a directory"),
    # run ids
    (
        "evaluate unknown run",
        ["evaluate", "nosuchrun", "--file", "{tmp}/t.txt"],
        "no run 'nosuchrun'",
        both(recorded, text("t.txt", "a b\n")),
    ),
    (
        "translate unknown run",
        ["translate", "nosuchrun", "--input", "{tmp}/t.txt"],
        "no run 'nosuchrun'",
        both(recorded, text("t.txt", "a b\n")),
    ),
    (
        "evaluate a FAILED run",
        ["evaluate", "{failed}", "--file", "{tmp}/t.txt"],
        "run {failed} is FAILED: it has no checkpoint to evaluate",
        both(recorded, text("t.txt", "a b\n")),
    ),
    (
        "evaluate a KILLED run",
        ["evaluate", "{killed}", "--file", "{tmp}/t.txt"],
        "run {killed} is KILLED",
        both(recorded, text("t.txt", "a b\n")),
    ),
    (
        "translate with a FAILED run",
        ["translate", "{failed}", "--input", "{tmp}/t.txt"],
        "run {failed} is FAILED",
        both(recorded, text("t.txt", "a b\n")),
    ),
    (
        "translate with a language model",
        ["translate", "{lm}", "--input", "{tmp}/t.txt"],
        "run {lm} is a lm run, not a translation run",
        both(recorded, text("t.txt", "a b\n")),
    ),
    (
        "evaluate a language model with --src/--ref",
        ["evaluate", "{lm}", "--src", "{tmp}/t.txt", "--ref", "{tmp}/t.txt"],
        "not a translation run",
        both(recorded, text("t.txt", "a b\n")),
    ),
    (
        "evaluate an empty file",
        ["evaluate", "{lm}", "--file", "{tmp}/t.txt"],
        "{tmp}/t.txt: file is empty",
        both(recorded, text("t.txt", "")),
    ),
    ("evaluate without a file", ["evaluate", "somerun"], "give either --file"),
    (
        "evaluate --src without --ref",
        ["evaluate", "somerun", "--src", "{tmp}/t.txt"],
        "give either --file",
        text("t.txt", "a b\n"),
    ),
    ("probe unknown run", ["probe", "nosuchrun", "context"], "no run 'nosuchrun'", recorded),
    (
        "unknown run: the studies named",
        ["evaluate", "nosuchrun", "--file", "{tmp}/t.txt"],
        "'pplx' (3 runs)",
        both(recorded, text("t.txt", "a b\n")),
    ),
    ("report unknown study", ["report", "nosuchstudy"], "no study 'nosuchstudy' in the tracking store", recorded),
    ("runs unknown study", ["runs", "nosuchstudy"], "no study 'nosuchstudy'", recorded),
    ("runs near a study's name", ["runs", "pplxx"], "did you mean 'pplx'?", recorded),
    (
        "runs in an empty project",
        ["runs", "x"],
        "no tracking store at {tmp}/empty/mlruns/mlflow.db",
        environ(RNNLAB_HOME="{tmp}/empty"),
    ),
    # files
    (
        "evaluate --file missing",
        ["evaluate", "somerun", "--file", "{tmp}/missing.txt"],
        "argument --file: {tmp}/missing.txt: no such file",
    ),
    (
        "evaluate --src missing",
        ["evaluate", "somerun", "--src", "{tmp}/missing.de", "--ref", "{tmp}/t.txt"],
        "argument --src: {tmp}/missing.de: no such file",
        text("t.txt", "a\n"),
    ),
    (
        "evaluate --ref missing",
        ["evaluate", "somerun", "--src", "{tmp}/t.txt", "--ref", "{tmp}/missing.en"],
        "argument --ref: {tmp}/missing.en: no such file",
        text("t.txt", "a\n"),
    ),
    (
        "translate --input missing",
        ["translate", "somerun", "--input", "{tmp}/missing.txt"],
        "argument --input: {tmp}/missing.txt: no such file",
    ),
    ("translate --input a folder", ["translate", "somerun", "--input", "{tmp}"], "{tmp}: a directory, not a file"),
    # command-line options
    (
        "beam 0",
        ["translate", "somerun", "--input", "{tmp}/t.txt", "--beam", "0"],
        "argument --beam: invalid value '0'",
        text("t.txt", "a\n"),
    ),
    (
        "beam -1",
        ["translate", "somerun", "--input", "{tmp}/t.txt", "--beam", "-1"],
        "invalid value '-1'",
        text("t.txt", "a\n"),
    ),
    (
        "beam not a number",
        ["translate", "somerun", "--input", "{tmp}/t.txt", "--beam", "wide"],
        "invalid value 'wide'",
        text("t.txt", "a\n"),
    ),
    ("ui port too large", ["ui", "--port", "99999"], "argument --port: invalid port '99999'"),
    ("ui port too high", ["ui", "--port", "65536"], "expected a whole number from 0 (any free port) to 65535"),
    ("server prefect port", ["server", "start", "--prefect-port", "70000"], "argument --prefect-port: invalid port"),
    ("server mlflow port", ["server", "status", "--mlflow-port", "http"], "argument --mlflow-port: invalid port"),
    ("worker limit 0", ["worker", "--pool", "p", "--limit", "0"], "argument --limit: invalid value '0'"),
    ("--json to a command without JSON", ["--json", "ui"], "--json: `rnnlab ui` has no JSON output"),
    # the environment, checked before any data is prepared
    (
        "tracking server unreachable",
        ON_TINY,
        "MLFLOW_TRACKING_URI=http://127.0.0.1:9: the tracking server does not answer",
        environ(MLFLOW_TRACKING_URI="http://127.0.0.1:9"),
    ),
    (
        "tracking server unreachable (study)",
        ["study", "{tmp}/study.yaml"],
        "MLFLOW_TRACKING_URI=http://127.0.0.1:9",
        both(study(), environ(MLFLOW_TRACKING_URI="http://127.0.0.1:9")),
    ),
    ("tracking URI not a URL", ON_TINY, "MLFLOW_TRACKING_URI=http://", environ(MLFLOW_TRACKING_URI="http://")),
    (
        "store folder is a file",
        ON_TINY,
        "{tmp}/afile is a file, not a directory",
        both(text("afile", "x"), environ(MLFLOW_TRACKING_URI="sqlite:///{tmp}/afile/mlflow.db")),
    ),
    (
        "store folder cannot be made",
        ON_TINY,
        "MLflow store sqlite:////proc/rnnlab/mlflow.db: cannot write in /proc/rnnlab",
        environ(MLFLOW_TRACKING_URI="sqlite:////proc/rnnlab/mlflow.db"),
    ),
    (
        "store is a folder",
        ON_TINY,
        "{tmp}/db is not a file",
        both(text("db/x", "x"), environ(MLFLOW_TRACKING_URI="sqlite:///{tmp}/db")),
    ),
    (
        "store is garbage",
        ON_TINY,
        "{tmp}/proj/mlruns/mlflow.db is damaged: it is not a SQLite database",
        damaged_store("garbage"),
    ),
    (
        "store is garbage (compare)",
        ["compare", "x"],
        "mlflow.db is damaged: it is not a SQLite database; move it aside".replace("; move it aside", ""),
        damaged_store("garbage"),
    ),
    ("store cut short", ON_TINY, "{tmp}/proj/mlruns/mlflow.db is damaged", damaged_store("truncated")),
    (
        "project dir is a file",
        ON_TINY,
        "the project directory {tmp}/afile is a file",
        both(text("afile", "x"), environ(RNNLAB_HOME="{tmp}/afile")),
    ),
    (
        "project dir cannot be made",
        ON_TINY,
        "cannot create the project directory /proc/rnnlab",
        environ(RNNLAB_HOME="/proc/rnnlab"),
    ),
    (
        "data dir from the environment is a file",
        TRAIN,
        "RNNLAB_DATA_DIR={tmp}/afile is a file",
        both(text("afile", "x"), environ(RNNLAB_DATA_DIR="{tmp}/afile")),
    ),
    (
        "compare in an empty project",
        ["compare", "x"],
        "no tracking store at {tmp}/empty/mlruns/mlflow.db",
        environ(RNNLAB_HOME="{tmp}/empty"),
    ),
    (
        "report in an empty project",
        ["report", "x"],
        "no tracking store at {tmp}/empty/mlruns/mlflow.db",
        environ(RNNLAB_HOME="{tmp}/empty"),
    ),
    (
        "ui in an empty project",
        ["ui"],
        "no tracking store at {tmp}/empty/mlruns/mlflow.db",
        environ(RNNLAB_HOME="{tmp}/empty"),
    ),
    (
        "ui of a tracking server",
        ["ui"],
        "MLFLOW_TRACKING_URI=http://127.0.0.1:9 is a tracking server, which serves the MLflow UI itself",
        environ(MLFLOW_TRACKING_URI="http://127.0.0.1:9"),
    ),
    ("ui of a garbage store", ["ui"], "mlflow.db is damaged: it is not a SQLite database", damaged_store("garbage")),
    (
        "pool worker without a tracking server",
        ["worker", "--pool", "p"],
        "must record into a tracking server that every machine reaches",
        environ(PREFECT_API_URL="http://127.0.0.1:9/api"),
    ),
    (
        "pool deployment without a tracking server",
        ["deploy", "--pool", "p"],
        "must record into a tracking server that every machine reaches",
        environ(PREFECT_API_URL="http://127.0.0.1:9/api"),
    ),
    (
        "remote dask cells with a local store",
        [
            "study",
            str(REPO / "conf" / "studies" / "quick.yaml"),
            "runner=dask",
            "runner.address=tcp://127.0.0.1:9",
            "data.corpus={tiny}",
            "seeds=[1]",
        ],
        "runner.address: cells on a remote Dask cluster record into the study's store",
    ),
]

PENDING: dict[str, str] = {}  # case id → why it is expected to fail for now (marked xfail, not strict)
ERROR_LINE = re.compile(r"^rnnlab(?: [\w-]+)?: error: ", re.MULTILINE)  # ours, or argparse's `rnnlab <command>: error:`


def params():
    for case in CASES:
        marks = [pytest.mark.xfail(reason=PENDING[case[0]], strict=False)] if case[0] in PENDING else []
        yield pytest.param(*case[1:3], case[3] if len(case) > 3 else None, id=case[0], marks=marks)


def fill(template: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        template = template.replace("{" + name + "}", value)
    return template


def recorded_runs() -> dict[str, str] | str | None:
    """Every run of the store, id → status; None where there is no store (none is created to look); the bytes' hash
    of a store damaged on purpose (it must stay as it was)."""
    uri = tracking.tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        return None
    try:
        mlflow = tracking.client()
    except EnvironmentProblem:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    ids = [e.experiment_id for e in mlflow.search_experiments()]
    return {r.info.run_id: r.info.status for r in mlflow.search_runs(ids, max_results=50000)} if ids else {}


def rnnlab(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse refuses its own way
        return exit.code


def test_the_catalogue_covers_every_kind_of_bad_input():
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, expected, setup", params())
def test_bad_input_exits_2_with_one_error_line_naming_it_and_records_nothing(
    argv, expected, setup, tmp_path, tiny_corpus, capsys, monkeypatch
):
    names = {
        "tmp": str(tmp_path),
        "run": str(RUN_CONFIG),
        "nmt": str(NMT_CONFIG),
        "tiny": str(tiny_corpus),
        **(setup(tmp_path) if setup else {}),
    }
    for name, value in names.items():
        if name.startswith("$"):
            monkeypatch.setenv(name[1:], value)
    before = recorded_runs()
    capsys.readouterr()
    code = rnnlab([fill(item, names) for item in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(ERROR_LINE.findall(err)) == 1, err
    assert fill(expected, names) in err
    after = recorded_runs()  # the store, if there is one, still opens, and holds the same runs in the same states
    assert after is None or after == (before or {}), "a run was recorded, changed or left RUNNING"
    if "RNNLAB_HOME" in {name[1:] for name in names if name.startswith("$")} and "empty" in names["$RNNLAB_HOME"]:
        assert not Path(names["$RNNLAB_HOME"]).exists() or not any(Path(names["$RNNLAB_HOME"]).iterdir())


@pytest.fixture(autouse=True)
def one_command_per_process():
    """Each case runs `main` in this process, as if it were a new command: what a command sets for itself (the
    read-only mode of compare/report/ui, its signal handlers) ends with it."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    store.READ_ONLY = False
    Interrupts.received = None
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize(
    "argv, expected, setup",
    [
        (["train", "{tmp}/c.yaml"], "not valid UTF-8", text("c.yaml", NOT_UTF8)),
        (["ui", "--port", "99999"], "invalid port '99999'", None),
        (["compare", "pplx"], "'valid_pplx', which none of its trained runs logged", recorded),
    ],
    ids=["config not UTF-8", "ui port", "compare metric never logged"],
)
def test_the_real_process_exits_2_without_a_traceback(argv, expected, setup, tmp_path):
    names = {"tmp": str(tmp_path), **(setup(tmp_path) if setup else {})}
    done = subprocess.run(
        rnnlab_command(*(fill(item, names) for item in argv)), capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and expected in done.stderr
    assert len(ERROR_LINE.findall(done.stderr)) == 1, done.stderr


def test_overrides_after_options_are_applied(tiny_corpus, capsys):
    assert rnnlab(["data", "--json", f"data.corpus={tiny_corpus}"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["corpus"] == tiny_corpus.name
