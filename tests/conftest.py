"""Test-session set-up: every store (MLflow, Prefect, caches) lives in a temporary project directory, data comes
from ../shared/data (or $RNNLAB_DATA_DIR), and tiny corpora are cut from it at test time."""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SESSION_HOME = Path(tempfile.mkdtemp(prefix="rnnlab-tests-"))
os.environ["RNNLAB_HOME"] = str(SESSION_HOME)
SESSION_MARK = "RNNLAB_TEST_SESSION"  # inherited by every process the tests start: see pytest_sessionfinish
os.environ[SESSION_MARK] = SESSION_HOME.name
os.environ["RNNLAB_CACHE_DIR"] = str(SESSION_HOME / "user-cache")  # the user's cache (kept answers), not ~/.cache
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("RNNLAB_DATA_MIRROR", None)
os.environ["RNNLAB_DATA_DIR"] = str(
    Path(os.environ.get("RNNLAB_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
)

from rnnlab.runtime.env import configure  # noqa: E402  (must run before Prefect/MLflow are imported)

configure()

DATA_DIR = Path(os.environ["RNNLAB_DATA_DIR"])
RUN_CONFIG = REPO / "conf" / "runs" / "ptb_small.yaml"

# The real recipe, shrunk: tiny widths and budgets, same code path. Models this small, trained for seconds on 150
# lines, end near the tiny corpus's unigram model (valid perplexity 73.3): measured between 68 and 132 with the
# settings the tests use, on either side of it by chance. Tests of the machinery judge them against the uniform guess
# instead (eval.floor=uniform), so that their outcomes do not hang on that; tests/test_floor.py uses the default.
TINY = [
    "model.embedding_size=16",
    "model.hidden_size=16",
    "train.max_epochs=2",
    "train.batch_size=4",
    "train.bptt=8",
    "eval.batch_size=3",
    "train.num_threads=1",
    "eval.floor=uniform",
]


def pytest_configure(config):
    if not (DATA_DIR / "ptb" / "ptb.train.txt").exists():
        raise pytest.UsageError(f"test data not found in {DATA_DIR}: set RNNLAB_DATA_DIR to the corpora directory")


def pytest_sessionfinish(session, exitstatus):
    """No process that the tests started outlives them: a Prefect server, a cell worker, anything still alive 15 s
    after the last test (every process started here carries the session's mark in its environment) fails the run."""
    left = processes_left(grace=15.0)
    if left:
        lines = [f"  pid {p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:200]}" for p in left]
        session.config.get_terminal_writer().line(
            f"\nFAILED: {len(left)} process(es) started by the tests are still alive after them:\n" + "\n".join(lines),
            red=True,
        )
        for process in left:
            process.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


def processes_left(grace: float = 0.0, mark: str | None = None) -> list:
    """Live processes (not zombies) with this test session's mark (or `mark`), after waiting up to `grace` s."""
    import psutil

    mark = mark or os.environ[SESSION_MARK]
    deadline = time.monotonic() + grace
    while True:
        left = []
        for process in psutil.process_iter():
            try:
                if (
                    process.pid != os.getpid()
                    and process.status() != psutil.STATUS_ZOMBIE
                    and process.environ().get(SESSION_MARK) == mark
                ):
                    left.append(process)
            except psutil.Error:
                pass
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


def cut_corpus(target: Path, train_lines: int = 150, valid_lines: int = 40, test_lines: int = 40) -> Path:
    """A tiny user corpus (train/valid/test.txt) cut from the real PTB files."""
    target.mkdir(parents=True, exist_ok=True)
    train = (DATA_DIR / "ptb" / "ptb.train.txt").read_text().splitlines(keepends=True)
    valid = (DATA_DIR / "ptb" / "ptb.valid.txt").read_text().splitlines(keepends=True)
    (target / "train.txt").write_text("".join(train[:train_lines]))
    (target / "valid.txt").write_text("".join(valid[:valid_lines]))
    (target / "test.txt").write_text("".join(valid[-test_lines:]))
    return target


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    return cut_corpus(tmp_path_factory.mktemp("corpus") / "tiny")


@pytest.fixture
def tiny_cfg(tiny_corpus):
    """The shipped ptb_small config with tiny limits, on the tiny corpus; more overrides may be given."""
    from rnnlab.schemas import config

    def make(*overrides: str, experiment: str = "tests"):
        return config.load(RUN_CONFIG, [f"data.corpus={tiny_corpus}", f"experiment={experiment}", *TINY, *overrides])

    return make


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def rnnlab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rnnlab.cli", *args]


@pytest.fixture(scope="session")
def ui_study(tmp_path_factory, tiny_corpus) -> dict:
    """A tiny real study to look at in the MLflow UI, run once per session: a language model, 2 variants × 2 seeds,
    40 steps each with a validation every 20, its report written. One variant trains (a tanh RNN at lr 1), the other
    diverges at once (an LSTM at lr 1e38), as in a real study; two factors give the variants names as long as real
    ones. Its project directory, name, experiment and parent run."""
    import yaml
    from test_flows_study import rnnlab, store, tiny_study

    home = tmp_path_factory.mktemp("ui-home")
    path = tiny_study(
        home,
        "tiny_ui",
        tiny_corpus,
        {"model.cell": ["rnn_tanh", "lstm"], "train.lr": [1.0, 1.0e38]},
        seeds=(1, 2),
        **{"train.max_steps": 40, "train.val_every_n_steps": 20},
    )
    tree = yaml.safe_load(path.read_text())
    tree["exclude"] = [{"model.cell": "rnn_tanh", "train.lr": 1.0e38}, {"model.cell": "lstm", "train.lr": 1.0}]
    path.write_text(yaml.safe_dump(tree))
    done = rnnlab("study", str(path), "--json", home=home)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert (result["cells"], result["diverged"]) == (4, 2)
    experiment = store(home).get_experiment_by_name("tiny_ui")
    return {
        "home": home,
        "study": "tiny_ui",
        "experiment_id": experiment.experiment_id,
        "parent_run_id": result["parent_run_id"],
        "result": result,
    }
