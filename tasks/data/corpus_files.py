"""The shared floor of corpus preparation, the same for every task kind: find a corpus's files (fetching a known
corpus with its checksum checked), read them, hash them, and publish a prepared cache next to its checksums.

Each task kind's corpus (tasks/data/lm_corpus.py, tasks/data/nmt_corpus.py) says what a corpus's files are and what a
cache holds."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rnnlab.runtime.env import project_dir
from rnnlab.schemas.config import DataConfig, ParallelDataConfig


class DataError(ValueError):
    """A corpus is missing, unreadable or fails its checksum; the message names the file."""


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str | None = None  # None only for a user's own files, which are never downloaded
    url: str | None = None
    gunzip: bool = False  # the URL serves <name>.gz; the checksum is of the decompressed file


@dataclass(frozen=True)
class PreparedCorpus:
    """A prepared corpus: paths and facts only, so it can pass between Prefect tasks and into a cache key. Each task
    kind's corpus adds its sizes."""

    name: str
    cache_dir: str
    checksum: str

    def cached(self, file: str) -> Path:
        return Path(self.cache_dir) / file

    def source_files(self) -> dict[str, list[str]]:
        """Each split's source file(s) (a parallel corpus: source and target), as its cache recorded them."""
        meta = json.loads(self.cached("meta.json").read_text(encoding="utf-8"))
        return {split: files if isinstance(files, list) else [files] for split, files in meta["files"].items()}

    def datasets(self) -> list[dict[str, str]]:
        """One MLflow dataset per split: its name, the corpus checksum as digest, its files, its context."""
        return [
            {"name": f"{self.name}-{split}", "digest": self.checksum, "source": " + ".join(files), "context": split}
            for split, files in self.source_files().items()
        ]


def data_dir(cfg: DataConfig | ParallelDataConfig) -> Path:
    if cfg.dir:
        origin, root = "data.dir", Path(cfg.dir)
    elif os.environ.get("RNNLAB_DATA_DIR"):
        origin, root = "RNNLAB_DATA_DIR", Path(os.environ["RNNLAB_DATA_DIR"])
    elif (project_dir().parent / "shared" / "data").is_dir():  # the README's (and make's) rule, for any command
        origin, root = "../shared/data beside the project", project_dir().parent / "shared" / "data"
    else:
        origin, root = "the default data directory", project_dir() / "data"
    root = root.expanduser().resolve()
    # A file where the directory (or one of its parents) should be would otherwise surface much later, as a
    # NotADirectoryError from a download or a "missing split" that hides the real mistake.
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "" if existing == root else f" (its parent {existing})"
        raise DataError(f"{origin}={root}{where} is a file, not a directory")
    return root


def user_folder(corpus: str, known: Iterable[str], kind: str = "") -> Path:
    """The directory a user named as data.corpus (relative to the project), which must exist."""
    folder = Path(corpus).expanduser()
    folder = folder if folder.is_absolute() else project_dir() / folder
    if not folder.is_dir():
        raise DataError(
            f"data.corpus={corpus!r} is neither a known {kind}corpus ({', '.join(known)}) "
            f"nor a directory (looked for {folder})"
        )
    return folder


def check_corpus(cfg: DataConfig | ParallelDataConfig) -> None:
    """What can be checked of a config's corpus before torch is imported: a name is a known corpus or an existing
    directory, and the data directory is not a file (the command line checks this first: `rnnlab data`, `train`,
    `study`)."""
    if cfg.corpus in cfg.KNOWN:
        data_dir(cfg)
    else:
        user_folder(cfg.corpus, cfg.KNOWN, "parallel " if isinstance(cfg, ParallelDataConfig) else "")


def cache_root() -> Path:
    return Path(os.environ.get("RNNLAB_CACHE_DIR") or project_dir() / ".cache" / "rnnlab").resolve()


def sha256_file(path: Path) -> str:
    """The file's sha256. A command prepares each corpus once and hands it to its flow (tasks/kinds/steps.py
    prepare_study), so each file is hashed once per command: `tests/test_load_once.py` counts."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(material: object) -> str:
    """A short, stable digest of JSON-able key material (checksums, format version, settings)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


MAX_DOWNLOAD_BYTES = 2 << 30  # a decompressed corpus file larger than this is refused (gzip bombs)


def download(url: str, dest: Path, sha256: str | None, gunzip: bool = False) -> Path:
    """Fetch `url` to `dest` (decompressing gzip if asked), verifying the sha256 of what is written;
    nothing is left at `dest` unless the check passes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"rnnlab: downloading {url} → {dest}", file=sys.stderr)
    digest, written = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            stream = gzip.GzipFile(fileobj=response) if gunzip else response
            for block in iter(lambda: stream.read(1 << 20), b""):
                written += len(block)
                if written > MAX_DOWNLOAD_BYTES:
                    raise DataError(f"{url}: larger than {MAX_DOWNLOAD_BYTES:,} bytes; refused")
                digest.update(block)
                out.write(block)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DataError(
                f"{url}: sha256 mismatch: expected {sha256}, got {digest.hexdigest()}; {dest} was not written"
            )
        os.replace(tmp, dest)
    except urllib.error.HTTPError as err:
        raise DataError(f"could not download {url} to {dest}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, EOFError) as err:
        raise DataError(f"could not download {url} to {dest}: {getattr(err, 'reason', err)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def download_missing(folder: str, source: SourceFile, dest: Path) -> Path:
    """Download a known corpus file from its public source, or from $RNNLAB_DATA_MIRROR/<folder>/<name>."""
    mirror = os.environ.get("RNNLAB_DATA_MIRROR")
    suffix = ".gz" if source.gunzip else ""
    url = f"{mirror.rstrip('/')}/{folder}/{source.name}{suffix}" if mirror else source.url
    if url is None:
        raise DataError(f"{dest}: missing, and no public source is known for it")
    return download(url, dest, source.sha256, source.gunzip)


_UNAVAILABLE: set[Path] = set()


def fetch_if_missing(
    path: Path, folder: str, source: SourceFile | None, allowed: bool, required: bool, what: str
) -> bool:
    """Whether `path` exists, downloading it first when it is missing, known (`source` has a URL) and `allowed`.
    A failed download of a `required` file raises; of an optional one (a test split), warns once per process."""
    if not path.exists() and allowed and source is not None and source.url and path not in _UNAVAILABLE:
        try:
            download_missing(folder, source, path)
        except DataError as err:
            if required:
                raise
            _UNAVAILABLE.add(path)  # warn once per process, not at every prepare
            print(f"rnnlab: warning: no {what}: {err}", file=sys.stderr)
    return path.exists()


def read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 (byte {err.start}: {err.reason})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


CONTENTS = "contents_sha256"  # meta.json's record of the sha256 of every other file of the cache


def contents_sha256(folder: Path) -> dict[str, str]:
    """What a cache records when it is built, and what every later use checks against."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != "meta.json"}


def publish(target: Path, write: Callable[[Path], dict]) -> None:
    """Build a cache in a staging directory beside `target` and rename it into place whole: `write(staging)` fills it
    and returns its meta, to which the files' checksums are added. No process ever sees a half-built cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        meta = write(staging)
        meta[CONTENTS] = contents_sha256(staging)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            staging.rename(target)
        except OSError:  # another process finished the same cache first: theirs is identical
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_cache(target: Path) -> tuple[dict | None, str | None]:
    """(meta, None) for an intact cache; (None, why) when meta.json does not parse or a file it records is missing
    or does not match its checksum. Caches built before checksums were recorded count as damaged: rebuilt once."""
    try:
        meta = json.loads((target / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "meta.json is missing"
    except (OSError, ValueError):  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        return None, "meta.json does not parse"
    recorded = meta.get(CONTENTS) if isinstance(meta, dict) else None
    if not isinstance(recorded, dict) or not recorded:
        return None, "meta.json records no checksums: built by an older rnnlab"
    for name, sha in recorded.items():
        path = target / name
        if not path.is_file():
            return None, f"{name} is missing"
        if sha256_file(path) != sha:
            return None, f"{name} does not match its checksum"
    return meta, None


@contextlib.contextmanager
def repairing(folder: Path) -> Iterator[None]:
    """One process at a time repairs the caches in `folder`; the lock goes with the process (no file is left)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def verified_cache(target: Path, write: Callable[[Path], dict]) -> dict:
    """The meta.json of the cache at `target`, published first (`publish(target, write)`) if absent, and rebuilt if
    it is damaged.

    Several processes may find the same damage at once: the first to take the lock rebuilds, the others wait and then
    find the cache intact. Under the lock, the directory moved away is the one found damaged, never a fresh build."""
    meta, problem = read_cache(target) if target.exists() else (None, None)
    if meta is not None:
        return meta
    if problem is None:
        publish(target, write)
    else:
        with repairing(target.parent):
            if target.exists():  # else another process's repair failed midway: just build
                meta, problem = read_cache(target)
                if meta is not None:  # rebuilt by another process while this one waited
                    return meta
                print(
                    f"rnnlab: token cache {target} is damaged ({problem}); rebuilding it", file=sys.stderr, flush=True
                )
                aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.damaged."))
                target.replace(aside)  # at once, so no process can find it half deleted
                shutil.rmtree(aside, ignore_errors=True)
            publish(target, write)
    meta, problem = read_cache(target)
    if meta is None:
        raise DataError(
            f"token cache {target} is damaged ({problem}) right after it was built: is the disk full "
            f"or failing? Delete it and try again"
        )
    return meta
