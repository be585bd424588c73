"""The channel from a study's runs (cells, tuning trials) in their worker processes to the study's display: each run
rewrites a small JSON status file (its step of its budget, loss, latest validation, throughput) that the study process
reads. A file, not a queue: it needs nothing shared between the processes but a directory (Prefect's process pool and
a local Dask cluster alike), and a reader never blocks a writer. Written atomically (a temporary file renamed over
it), so a reader never sees half of one; best effort both ways: a run whose disk refuses the file trains on, and a
study that cannot read one shows what it knows (cells done).

With the live display, a run's own output (its progress lines, warnings) goes to a log beside its status file
instead of the terminal the display draws on."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rnnlab.runtime.env import project_dir


def status_dir(parent_run_id: str) -> Path:
    """Where the runs of one study execution (its parent run) leave their status files."""
    return project_dir() / ".cache" / "rnnlab" / "progress" / parent_run_id


def forget_stale_status(root: Path, older_than_days: float = 7.0) -> None:
    """Remove the status folders under `root` that nothing has written to for `older_than_days`: those of studies
    killed before they could remove their own (a live study rewrites its runs' files every second while they
    train; a crashed cell's log is kept this long)."""
    cutoff = time.time() - older_than_days * 86400
    for folder in root.glob("*") if root.is_dir() else []:
        try:
            newest = max((f.stat().st_mtime for f in folder.iterdir()), default=folder.stat().st_mtime)
        except OSError:
            continue  # removed meanwhile, or not a folder
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def status_path(folder: Path, key: str) -> Path:
    """A run's status file: named by a digest of its key (a cell's key, or an arm and trial number)."""
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def write_status(path: str | Path, status: dict[str, Any]) -> bool:
    """Replace the status file at `path` with `status` in one step; False (and no exception) when it cannot."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(status, allow_nan=False, default=str))
        os.replace(temporary, path)
        return True
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        return False


def read_status(path: str | Path) -> dict[str, Any] | None:
    """The status at `path`, or None when there is none (not started, or unreadable)."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


@contextlib.contextmanager
def output_to(log: str | Path | None) -> Iterator[None]:
    """This process's stdout and stderr appended to `log` while inside, then back where they were: the file
    descriptors (what C code and child processes write to) and Python's streams (which a host such as a test runner
    may have replaced). None: left as they are."""
    if log is None:
        yield
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        with (
            open(log, "a", buffering=1, encoding="utf-8", errors="backslashreplace") as text,
            contextlib.redirect_stdout(text),
            contextlib.redirect_stderr(text),
        ):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
