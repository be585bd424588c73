"""When a claim's criterion was committed, read from a real (tiny) git repository, against when the data it judges
was recorded: a claim is pre-registered only where its criterion came first. The criterion's date is that of the
commit that introduced it as it stands (a threshold edited later moves it; a comment or a verdict's words do not);
a working-tree edit is "uncommitted"; without a checkout the order is unknown."""

import os
import subprocess

import pytest
import yaml
from conftest import REPO

from rnnlab.schemas.config import read_yaml
from tasks.claim_kinds.base import Evidence
from tasks.claims.claims_file import ClaimsConfig
from tasks.claims.registration import timeline
from tasks.claims.verdicts import PREREGISTERED, claim_results

CLIPPING = next(
    c
    for c in ClaimsConfig.model_validate(read_yaml(REPO / "conf" / "studies" / "lecture.yaml")).claims
    if c.id == "clipping"
)


def git(repo, *args, date="2026-01-01T00:00:00+00:00"):
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    command = ["git", "-c", "user.name=lab", "-c", "user.email=lab@example.org", "-c", "commit.gpgsign=false", *args]
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def write_claims(path, min_drop=0.5, words="clipping lets them train", comment=""):
    tree = {
        "study": "tiny",
        "claims": [
            {
                "id": "clipping",
                "quote": "clipping fixes exploding gradients",
                "measure": {"kind": "clipping", "study": "lm_clipping"},
                "criterion": {"exploded_share": 0.5, "min_drop": min_drop},
                "verdicts": {"supported": words},
            }
        ],
    }
    path.write_text(comment + yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")


def commit(repo, path, message, date):
    git(repo, "add", path.name)
    git(repo, "commit", "-q", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def history(tmp_path, monkeypatch):
    """A repository whose claims file changed three times: the criterion on 1 January, its threshold on 1 March, a
    verdict's words and a comment on 1 April."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never the checkout this test runs in
    repo = tmp_path / "lab"
    repo.mkdir()
    git(repo, "init", "-q")
    path = repo / "claims.yaml"
    write_claims(path, min_drop=0.3)
    first = commit(repo, path, "criterion", "2026-01-01T09:00:00+00:00")
    write_claims(path, min_drop=0.5)
    threshold = commit(repo, path, "a threshold edited", "2026-03-01T09:00:00+00:00")
    write_claims(path, min_drop=0.5, words="clipping rescues them", comment="# why the threshold is 0.5\n")
    commit(repo, path, "words only", "2026-04-01T09:00:00+00:00")
    return repo, path, first, threshold


def judged(path, start, published=None):
    """Claim 4 on six lm_clipping runs started at `start`, with the timeline git gives for `path`."""
    runs = [
        {
            "run_id": f"r{i}",
            "variant": "v",
            "seed": i,
            "outcome": "diverged" if i < 3 else "trained",
            "factors": {"model.cell": "rnn_tanh", "train.clip_norm": "null" if i < 3 else "0.25", "train.lr": "3.0"},
            "params": {},
            "corpus": "ptb",
            "metrics": {},
            "floor": {},
            "start_time": start,
        }
        for i in range(6)
    ]
    ev = Evidence(runs={"lm_clipping": runs}, timeline=timeline(path, ["clipping"], published or {}))
    (result,) = claim_results([CLIPPING], ev)
    return ev, result.registration


def test_the_criterion_dates_from_the_commit_that_last_changed_it(history):
    repo, path, _, threshold = history
    ev, _ = judged(path, "2026-05-01T00:00:00+00:00")
    found = ev.timeline["criteria"]["clipping"]
    assert found["status"] == "committed" and found["commit"] == threshold  # not the first, not the words-only one
    assert found["date"] == "2026-03-01T09:00:00+00:00"


def test_data_recorded_after_the_criterion_is_pre_registered_and_before_it_is_not(history):
    _, path, _, _ = history
    _, after = judged(path, "2026-03-15T00:00:00+00:00")
    assert after.status == PREREGISTERED and after.preregistered
    _, before = judged(path, "2026-02-15T00:00:00+00:00")  # between the first criterion and the edited threshold
    assert not before.preregistered and "committed after the data" in before.status
    assert "2026-03-01T09:00:00+00:00" in before.text and "2026-02-15T00:00:00+00:00" in before.text


def test_results_published_in_an_earlier_commit_count_as_recorded_then(history):
    repo, path, first, _ = history
    _, found = judged(path, "2026-03-15T00:00:00+00:00", published={"lm_clipping": [first[:7]]})
    assert not found.preregistered and found.data == "2026-01-01T09:00:00+00:00"
    assert f"commit {first[:7]} published its study's results" in found.text


def test_a_criterion_edited_in_the_working_tree_is_uncommitted_and_a_comment_changes_nothing(history):
    _, path, _, _ = history
    write_claims(path, min_drop=0.5, words="clipping rescues them", comment="# a new comment\n")
    assert judged(path, "2026-03-15T00:00:00+00:00")[1].preregistered
    write_claims(path, min_drop=0.6)
    ev, found = judged(path, "2026-03-15T00:00:00+00:00")
    assert ev.timeline["criteria"]["clipping"]["status"] == "uncommitted"
    assert not found.preregistered and "not committed" in found.status


def test_without_a_git_checkout_the_order_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    path = tmp_path / "claims.yaml"
    write_claims(path)
    ev, found = judged(path, "2026-03-15T00:00:00+00:00", published={"lm_clipping": ["8b7ff1c"]})
    assert ev.timeline["criteria"]["clipping"]["status"] == "unknown"
    assert found.status == "order unknown" and not found.preregistered and "no git checkout" in found.text
    assert ev.timeline["published"]["lm_clipping"] == [{"commit": "8b7ff1c", "date": None}]


def test_a_published_commit_git_does_not_know_leaves_the_order_unknown(history):
    """A shallow or foreign checkout cannot date the publication: the claim is not called pre-registered."""
    _, path, _, _ = history
    _, found = judged(path, "2026-03-15T00:00:00+00:00", published={"lm_clipping": ["0123abc"]})
    assert found.status == "order unknown" and "does not know when" in found.text
