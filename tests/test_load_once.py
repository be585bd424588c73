"""Each input is loaded once per command: the command line reads the study file (or claims file), validates it and
prepares its corpora before anything starts, then hands them to the flow, which reads and hashes nothing again.

Counted in the command's own process, where it reads a YAML file of the study and hashes a corpus file (source or
cache): each happens once, whatever the command does after."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, RUN_CONFIG, TINY

# Runs `rnnlab <args>` in-process after wrapping what reads a YAML file and what hashes a file, then prints the
# counts: which files, how many times. Only paths under the folders named in RNNLAB_COUNT_UNDER are counted.
COUNTING = r"""
import collections, json, os, pathlib, sys

under = [str(pathlib.Path(p).resolve()) for p in os.environ["RNNLAB_COUNT_UNDER"].split(os.pathsep)]
counts = collections.Counter()

def mine(path):
    path = str(pathlib.Path(path).resolve())
    return path if any(path.startswith(folder) for folder in under) else None

read_text = pathlib.Path.read_text
def counting_read_text(self, *args, **kwargs):
    if self.suffix in (".yaml", ".yml") and mine(self):
        counts["read " + mine(self)] += 1
    return read_text(self, *args, **kwargs)
pathlib.Path.read_text = counting_read_text

from tasks.data import corpus_files  # before anything imports its sha256_file by name

sha256_file = corpus_files.sha256_file
def counting_sha256_file(path):
    if mine(path):
        counts["hash " + mine(path)] += 1
    return sha256_file(path)
corpus_files.sha256_file = counting_sha256_file

from rnnlab.cli.main import main

try:
    code = main(sys.argv[1:])
finally:
    print("COUNTS " + json.dumps(counts), file=sys.stderr, flush=True)
sys.exit(code)
"""


def counted(*args: str, home: Path, under: list[Path]) -> tuple[subprocess.CompletedProcess, Counter]:
    env = {**os.environ, "RNNLAB_HOME": str(home), "RNNLAB_COUNT_UNDER": os.pathsep.join(map(str, under))}
    done = subprocess.run(
        [sys.executable, "-c", COUNTING, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )
    line = next(line for line in done.stderr.splitlines() if line.startswith("COUNTS "))
    return done, Counter(json.loads(line.removeprefix("COUNTS ")))


def reads(counts: Counter) -> dict[str, int]:
    return {k.removeprefix("read "): n for k, n in counts.items() if k.startswith("read ")}


def hashes(counts: Counter) -> dict[str, int]:
    return {k.removeprefix("hash "): n for k, n in counts.items() if k.startswith("hash ")}


def cache_of(home: Path) -> Path:
    """Where the command keeps its prepared corpora (the suite's shared cache, when it sets one)."""
    return Path(os.environ.get("RNNLAB_CACHE_DIR") or home / ".cache" / "rnnlab").resolve()


@pytest.fixture(scope="module")
def tiny_study_file(tmp_path_factory, tiny_corpus) -> Path:
    folder = tmp_path_factory.mktemp("load-once")
    tree = {
        "study": "load_once",
        "question": "Does a study read its inputs once?",
        "base": str(RUN_CONFIG),
        "factors": {"model.cell": ["rnn_tanh", "gru"]},
        "seeds": [1],
        "concurrency": 2,
        "overrides": {
            **{k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in TINY)},
            "data.corpus": str(tiny_corpus),
        },
        "metric": {"name": "valid_ppl", "goal": "min"},
    }
    path = folder / "load_once.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_study_reads_its_files_and_hashes_each_corpus_file_once(tmp_path, tiny_study_file, tiny_corpus):
    home = tmp_path / "home"
    cache = cache_of(home)
    done, counts = counted(
        "study", str(tiny_study_file), home=home, under=[tiny_study_file.parent, tiny_corpus, RUN_CONFIG.parent, cache]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert reads(counts) == {str(tiny_study_file.resolve()): 1, str(RUN_CONFIG.resolve()): 1}
    hashed = hashes(counts)
    splits = {str((tiny_corpus / f"{split}.txt").resolve()) for split in ("train", "valid", "test")}
    assert splits <= set(hashed)  # the corpus's own files, and its cache's
    assert any(path.startswith(str(cache)) for path in hashed)
    assert set(hashed.values()) == {1}, {path: n for path, n in hashed.items() if n > 1}


def test_a_train_command_hashes_each_corpus_file_once(tmp_path, tiny_corpus):
    home = tmp_path / "home"
    done, counts = counted(
        "train",
        str(RUN_CONFIG),
        f"data.corpus={tiny_corpus}",
        "experiment=load-once",
        *TINY,
        home=home,
        under=[tiny_corpus, RUN_CONFIG.parent, cache_of(home)],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert reads(counts) == {str(RUN_CONFIG.resolve()): 1}
    hashed = hashes(counts)
    assert {str((tiny_corpus / f"{split}.txt").resolve()) for split in ("train", "valid", "test")} <= set(hashed)
    assert set(hashed.values()) == {1}, {path: n for path, n in hashed.items() if n > 1}


def test_a_claims_file_reads_each_study_file_once(monkeypatch):
    """The lecture names five studies; loading it reads the claims file and each study file once (the studies'
    names, to route `<study>:key=value` overrides, come from the same read)."""
    from tasks.claims.claims_file import load_claims

    read = Counter()
    read_text = Path.read_text

    def counting(self, *args, **kwargs):
        read[self.resolve()] += 1
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    lecture = load_claims(REPO / "conf" / "studies" / "lecture.yaml")
    studies = {Path(file).resolve() for file in lecture.files.values()}
    assert len(studies) >= 5
    assert {path: read[path] for path in studies} == dict.fromkeys(studies, 1)
    assert read[(REPO / "conf" / "studies" / "lecture.yaml").resolve()] == 1
