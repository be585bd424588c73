"""Parallel corpora → SentencePiece subwords (trained on the train split) → token tensors, cached by checksum.

Training pairs that are empty or longer than `data.max_len` subwords are filtered (the counts are recorded);
valid and test sets are kept whole, and their raw target lines are the references for BLEU.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rnnlab.config import DataConfig
from rnnlab.env import project_dir
from tasks.data import (CONTENTS, DataError, SourceFile, cache_root, contents_sha256, data_dir, download_missing,
                        read_lines, sha256_file, verified_cache)

FORMAT_VERSION = "parallel-spm-v1"
PAD, BOS, EOS, UNK = 0, 1, 2, 3

_M30K = "https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw"
_CHREN = "https://raw.githubusercontent.com/amanchadha/stanford-cs224n-assignments-2021/20ede2ff6b419bab8bed6355ae01e4baf6e37cef/a4/chr_en_data"


@dataclass(frozen=True)
class ParallelSpec:
    name: str
    folder: str
    stems: dict[str, str]  # split → file stem; files are <stem>.<lang>
    languages: tuple[str, ...]
    sources: dict[str, SourceFile] = field(default_factory=dict)  # file name → checksum and URL


def _sources(base: str, checksums: dict[str, str], gz: bool) -> dict[str, SourceFile]:
    return {name: SourceFile(name, sha, f"{base}/{name}.gz" if gz else f"{base}/{name}", gunzip=gz)
            for name, sha in checksums.items()}


KNOWN_PARALLEL: dict[str, ParallelSpec] = {
    "multi30k": ParallelSpec("multi30k", "multi30k", {"train": "train", "valid": "val", "test": "test_2016_flickr"},
                             ("de", "en"), _sources(_M30K, {
        "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
        "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
        "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
        "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
        "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
        "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    }, gz=True)),
    "chr_en": ParallelSpec("chr_en", "chr_en", {"train": "train", "valid": "dev", "test": "test"},
                           ("chr", "en"), _sources(_CHREN, {
        "train.chr": "2fa9a94f8e26527d0bb8186b9bf19c8d2a34d0103bb195458b512b6af5fbc72f",
        "train.en": "03908c36f1db4a2ab911c723a7ac8fcb0f4f995d4669d18b0c2053f7a3a0bfab",
        "dev.chr": "7a3f7da75bfb8f06403fd9f4bf2fc378e2b6183c7c9a7eaadc6972df257728d8",
        "dev.en": "dffafdee460b1c009026a49e2432db3739743f75e8730aa8b452b5b8a3526383",
        "test.chr": "2587883d8d8f9e3bbc0eb3286af741ac7773fda40863a82c26ecac7123c2bfd7",
        "test.en": "74c34ac3da2383e0884de005d1950b0ed0c41f85fc4f0cf06ca6503aa0f3d5f0",
    }, gz=False)),
}


@dataclass(frozen=True)
class ParallelCorpus:
    """A prepared parallel corpus: paths and facts only (passes between Prefect tasks)."""

    name: str
    cache_dir: str
    checksum: str
    src_vocab: int
    tgt_vocab: int
    pairs: dict[str, int] = field(hash=False)
    filtered: dict[str, int] = field(hash=False)

    def model_path(self, side: str) -> Path:
        return Path(self.cache_dir) / f"{side}.model"

    @property
    def output_vocab(self) -> int:
        """The target subwords a model predicts over: a uniform guess over them has this perplexity."""
        return self.tgt_vocab

    def load(self, split: str) -> dict[str, list[torch.Tensor]]:
        return torch.load(Path(self.cache_dir) / f"{split}.pt", weights_only=True)

    def facts(self) -> dict[str, str]:
        return {"data.src_vocab": str(self.src_vocab), "data.tgt_vocab": str(self.tgt_vocab),
                **{f"data.pairs.{s}": str(n) for s, n in self.pairs.items()},
                "data.filtered.train": str(self.filtered.get("train", 0))}

    def artifacts(self) -> dict[str, list[Path]]:
        """Files a run needs to be used later, by artifact folder."""
        return {"subwords": [self.model_path("src"), self.model_path("tgt")]}

    def references(self, split: str) -> list[str]:
        return json.loads((Path(self.cache_dir) / "references.json").read_text())[split]


def locate_pairs(corpus: str, src: str, tgt: str, directory: Path, download: bool) -> tuple[str, dict[str, tuple[Path, Path]]]:
    if corpus in KNOWN_PARALLEL:
        spec = KNOWN_PARALLEL[corpus]
        folder = directory / spec.folder
        for lang in (src, tgt):
            if lang not in spec.languages:
                raise DataError(f"data.src/data.tgt: corpus '{corpus}' has languages {', '.join(spec.languages)}, not '{lang}'")
    else:
        folder = Path(corpus).expanduser()
        folder = folder if folder.is_absolute() else project_dir() / folder
        if not folder.is_dir():
            raise DataError(f"data.corpus={corpus!r} is neither a known parallel corpus "
                            f"({', '.join(KNOWN_PARALLEL)}) nor a directory (looked for {folder})")
        spec = ParallelSpec(folder.name, str(folder), {"train": "train", "valid": "valid", "test": "test"}, (src, tgt))
    files = {}
    for split, stem in spec.stems.items():
        paths = []
        for lang in (src, tgt):
            name = f"{stem}.{lang}"
            path = folder / name
            if not path.exists() and download and name in spec.sources:
                download_missing(spec.folder, spec.sources[name], path)
            if not path.exists():
                if split == "test":
                    break
                raise DataError(f"{path}: missing {split} split of corpus '{spec.name}'")
            paths.append(path)
        if len(paths) == 2:
            files[split] = (paths[0], paths[1])
    return spec.name, files


def read_pairs(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"parallel files differ in length: {src_path} has {len(src):,} lines, "
                        f"{tgt_path} has {len(tgt):,}")
    return src, tgt


def train_sentencepiece(lines: list[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(line for line in lines if line.strip()), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK,
        num_threads=1, minloglevel=2, hard_vocab_limit=False)
    return model.getvalue()


def processor(model: bytes | Path):
    import sentencepiece as spm

    proto = model.read_bytes() if isinstance(model, Path) else model
    return spm.SentencePieceProcessor(model_proto=proto)


def prepare_parallel_corpus(corpus: str, src: str, tgt: str, vocab_size: int, max_len: int,
                            directory: str | None = None, download: bool = True) -> ParallelCorpus:
    root = data_dir(DataConfig(dir=directory))
    name, files = locate_pairs(corpus, src, tgt, root, download)
    checksums = {f"{split}.{side}": sha256_file(path) for split, pair in sorted(files.items())
                 for side, path in zip(("src", "tgt"), pair)}
    key_material = [FORMAT_VERSION, checksums, src, tgt, vocab_size, max_len]
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
    target = cache_root() / "parallel" / f"{name}-{src}-{tgt}-{key}"
    meta = verified_cache(target, lambda: build_parallel_cache(files, target, vocab_size, max_len))
    return ParallelCorpus(name, str(target), key, meta["src_vocab"], meta["tgt_vocab"], meta["pairs"], meta["filtered"])


def build_parallel_cache(files: dict[str, tuple[Path, Path]], target: Path, vocab_size: int, max_len: int) -> None:
    print(f"rnnlab: training subword models and encoding {', '.join(str(p) for pair in files.values() for p in pair)}",
          file=sys.stderr)
    texts = {split: read_pairs(*pair) for split, pair in files.items()}
    models = {side: train_sentencepiece(texts["train"][i], vocab_size) for i, side in enumerate(("src", "tgt"))}
    sp = {side: processor(model) for side, model in models.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        pairs, filtered, references = {}, {}, {}
        for split, (src_lines, tgt_lines) in texts.items():
            src_ids, tgt_ids = sp["src"].encode(src_lines), sp["tgt"].encode(tgt_lines)
            keep = range(len(src_ids))
            if split == "train":  # only training pairs are filtered; evaluation sets stay whole
                keep = [i for i in keep if 0 < len(src_ids[i]) <= max_len and 0 < len(tgt_ids[i]) <= max_len]
            torch.save({"src": [torch.tensor(src_ids[i], dtype=torch.int32) for i in keep],
                        "tgt": [torch.tensor(tgt_ids[i], dtype=torch.int32) for i in keep]}, staging / f"{split}.pt")
            pairs[split], filtered[split] = len(keep), len(src_ids) - len(keep)
            references[split] = tgt_lines
        for side, model in models.items():
            (staging / f"{side}.model").write_bytes(model)
        print(f"rnnlab: kept {pairs['train']:,} training pairs; filtered {filtered['train']:,} that were empty or "
              f"longer than {max_len} subwords", file=sys.stderr)
        (staging / "references.json").write_text(json.dumps(references, ensure_ascii=False))
        meta = {"format": FORMAT_VERSION, "files": {s: [str(p) for p in pair] for s, pair in files.items()},
                "src_vocab": sp["src"].get_piece_size(), "tgt_vocab": sp["tgt"].get_piece_size(),
                "pairs": pairs, "filtered": filtered, CONTENTS: contents_sha256(staging)}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            staging.rename(target)
        except OSError:  # prepared concurrently by another process: theirs is identical
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)

