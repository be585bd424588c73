"""When each claim's criterion was committed, from git: the record that says whether it came before the data it
judges (tasks/claims/verdicts.py compares it with the runs' start times, from MLflow, and calls a claim pre-registered
only where the criterion came first).

A claim's criterion is what decides its verdict: its `measure` and `criterion` (the thresholds, and the parts held
by construction), as parsed from the claims file; comments, quotes and verdict words do not count. Its commit is the
oldest commit from which on the file's history carries that criterion unchanged: when a threshold was edited after
the runs, the edit's commit, not the file's first. A criterion that differs from the last committed one is
"uncommitted" (it has no date to show); without git or a checkout, "unknown". The claims file's `published`
commits (a study's results shown, e.g. in the README, before the runs this store holds) are dated the same way.

Dates are committer dates: when the commit entered the history (a rebase moves it later, never earlier).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from rnnlab.schemas.config import load_yaml

COMMITTED, UNCOMMITTED, UNKNOWN = "committed", "uncommitted", "unknown"


def git(folder: Path, *args: str) -> str | None:
    """git's stdout in `folder`, or None where git or a checkout is missing or the command fails."""
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def decisive(tree: Any, claim_id: str) -> dict | None:
    """The parts of a claim that decide its verdict, from a parsed claims file; None where the claim is absent."""
    claims = tree.get("claims") if isinstance(tree, dict) else None
    found = next((c for c in claims or [] if isinstance(c, dict) and c.get("id") == claim_id), None)
    return None if found is None else {"measure": found.get("measure"), "criterion": found.get("criterion")}


def history(path: Path) -> list[tuple[str, str, Any]] | None:
    """(commit, committer date, parsed file) for every commit that touched the file, newest first; None without
    git or outside a checkout."""
    folder = path.resolve().parent
    prefix = git(folder, "rev-parse", "--show-prefix")
    log = git(folder, "log", "--format=%H%x09%cI", "--", path.name) if prefix is not None else None
    if log is None:
        return None
    found = []
    for line in log.splitlines():
        commit, _, date = line.partition("\t")
        text = git(folder, "show", f"{commit}:{prefix.strip()}{path.name}")
        try:
            tree = load_yaml(text) if text is not None else None
        except yaml.YAMLError:
            tree = None  # a version that did not parse carries no criterion
        found.append((commit, date, tree))
    return found


def criterion_commit(current: Any, claim_id: str, commits: list[tuple[str, str, Any]] | None) -> dict[str, Any]:
    """{"status", "commit", "date", "why"}: the oldest commit from which on the claim's criterion is the one in
    `current` (the claims file as it runs now)."""
    if commits is None:
        return {
            "status": UNKNOWN,
            "commit": None,
            "date": None,
            "why": "no git checkout holds the claims file: when its criterion was committed is unknown",
        }
    wanted = decisive(current, claim_id)
    first = None
    for commit, date, tree in commits:  # newest first: walk back while the criterion is the same
        if decisive(tree, claim_id) != wanted:
            break
        first = (commit, date)
    if first is None:
        return {
            "status": UNCOMMITTED,
            "commit": None,
            "date": None,
            "why": "the criterion as it runs differs from every committed one (it is not committed)",
        }
    return {
        "status": COMMITTED,
        "commit": first[0],
        "date": first[1],
        "why": f"the criterion entered the history in commit {first[0][:7]} ({first[1]})",
    }


def commit_date(folder: Path, commit: str) -> dict[str, Any]:
    """{"commit", "date"} of a named commit; date None where git does not know it."""
    line = git(folder, "log", "-1", "--format=%H%x09%cI", commit, "--")
    if not line:
        return {"commit": commit, "date": None}
    full, _, date = line.strip().partition("\t")
    return {"commit": full, "date": date}


def timeline(claims_file: str | Path, claim_ids: list[str], published: dict[str, list[str]]) -> dict[str, Any]:
    """What the evidence records about time: per claim its criterion's commit; per study, its `published` commits
    with their dates."""
    path = Path(claims_file)
    current = load_yaml(path.read_text(encoding="utf-8"))
    commits = history(path)
    folder = path.resolve().parent
    return {
        "criteria": {cid: criterion_commit(current, cid, commits) for cid in claim_ids},
        "published": {study: [commit_date(folder, c) for c in found] for study, found in published.items()},
    }
