"""`rnnlab compare`'s answer, kept until anything it was computed from changes.

Computing it costs ~3 s on 2 cores, nearly all imports (MLflow with SQLAlchemy ~1.5 s, SciPy's stats ~0.45 s,
pandas; `python -X importtime -m rnnlab.cli compare STUDY`); its queries and statistics take ~0.2 s. Asked again of
an unchanged store, the command prints the answer it printed before, in ~0.1 s. Written here because nothing in the
stack keeps a command's output: Prefect's result cache would itself cost ~2 s of imports to read.

Only for a local SQLite store: a server's store has no file whose changes can be seen. An answer is found by a key
of everything it was computed from:
- the store's file and its write-ahead log: device, inode, size, modification and change times (ns);
- rnnlab's code (each source file's path and the same stat), the interpreter, its installed packages
  (their folders' modification times: pip changes them when it installs or removes anything);
- the command's arguments.
The store's part is read before the first query and again after the answer; the answer is kept only if both agree
and the store last changed more than `SETTLED_S` before the first read. The second condition is "racy git"'s: a
write within the same clock tick as the read, after it, would leave every time unchanged, and an answer from before
that write would pass for current.

Kept in the user's cache ($RNNLAB_CACHE_DIR, else $XDG_CACHE_HOME/rnnlab, else ~/.cache/rnnlab), never in the project:
`compare` writes nothing there. A folder another user owns, or one others may write, is not trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import site
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rnnlab.runtime.env import source_files
from rnnlab.runtime.store import is_local_store, store_path, tracking_uri

SETTLED_S = 1.0  # ≫ a file system's timestamp tick (1–10 ms on Linux), and some clock skew to a network disk
KEPT = 64  # answers kept; the oldest go first


def cache_dir() -> Path:
    if os.environ.get("RNNLAB_CACHE_DIR"):
        return Path(os.environ["RNNLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnlab"


def stat_of(path: Path) -> tuple[int, ...] | None:
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns


def store_state() -> tuple | None:
    """The store file's and its WAL's stat, or None where nothing can be kept (no local store, or none yet)."""
    uri = tracking_uri()
    if not is_local_store(uri):
        return None
    path = store_path(uri)
    state = (str(path), stat_of(path), stat_of(path.with_name(path.name + "-wal")))
    return state if state[1] is not None else None


def code_state() -> list:
    files = [(str(p), stat_of(p)) for p in source_files()]
    folders = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    packages = [(folder, stat_of(Path(folder))) for folder in folders]
    return [sys.prefix, os.path.realpath(sys.executable), sys.version, files, packages]


@dataclass
class Lookup:
    """One command's place in the cache: its key and the store's state at the start; `found` is the kept answer."""

    key: str | None
    store: tuple | None
    started_ns: int
    found: dict | None = None

    def keep(self, stdout: str) -> bool:
        """Keep the answer just printed, if the store did not change while it was computed and had settled before."""
        if self.key is None or store_state() != self.store:
            return False
        newest = max(time_ns for part in self.store[1:] if part is not None for time_ns in part[3:5])
        if newest > self.started_ns - SETTLED_S * 1e9:
            return False
        folder = trusted(cache_dir() / "answers", create=True)
        if folder is None:
            return False
        written = folder / f"{self.key}.tmp{os.getpid()}"
        try:
            written.write_text(json.dumps({"stdout": stdout, "kept": time.time()}), encoding="utf-8")
            os.replace(written, folder / f"{self.key}.json")  # whole or not at all, for a reader at the same time
        except OSError:  # a full or read-only disk: the answer was printed all the same
            written.unlink(missing_ok=True)
            return False
        answers = [(stat_of(p), p) for p in folder.glob("*.json")]
        for _, old in sorted((state[3], p) for state, p in answers if state)[:-KEPT]:  # the oldest go
            old.unlink(missing_ok=True)
        return True


def trusted(folder: Path, create: bool = False) -> Path | None:
    """`folder` if this user owns it and no one else may write it (else another user could plant an answer)."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        s = folder.stat()
    except OSError:
        return None
    return folder if s.st_uid == os.getuid() and not s.st_mode & 0o022 else None


def lookup(*arguments: object) -> Lookup:
    """Where the answer to `rnnlab compare *arguments` is kept, and the answer if it is there."""
    started_ns = time.time_ns()
    state = store_state()
    if state is None:
        return Lookup(None, None, started_ns)
    key = hashlib.sha256(json.dumps([state, code_state(), list(map(str, arguments))]).encode()).hexdigest()[:32]
    found = None
    folder = trusted(cache_dir() / "answers")
    if folder is not None:
        try:
            found = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
    return Lookup(key, state, started_ns, found if isinstance(found, dict) and "stdout" in found else None)
