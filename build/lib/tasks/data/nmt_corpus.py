"""Parallel corpora → SentencePiece subwords (trained on the train split) → token tensors, cached by checksum.

Training pairs that are empty or longer than `data.max_len` subwords are filtered (the counts are recorded);
valid and test sets are kept whole, and their raw target lines are the references for BLEU.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from models.seq2seq import PAD
from rnnlab.schemas.config import NMTRunConfig, ParallelDataConfig
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

FORMAT_VERSION = "parallel-spm-v2"  # v2: the unigram floor in the meta
BOS_ID, EOS_ID, UNK_ID = 1, 2, 3  # subword ids; padding is the model's PAD (0)

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
    return {
        name: SourceFile(name, sha, f"{base}/{name}.gz" if gz else f"{base}/{name}", gunzip=gz)
        for name, sha in checksums.items()
    }


KNOWN_PARALLEL: dict[str, ParallelSpec] = {
    "multi30k": ParallelSpec(
        "multi30k",
        "multi30k",
        {"train": "train", "valid": "val", "test": "test_2016_flickr"},
        ("de", "en"),
        _sources(
            _M30K,
            {
                "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
                "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
                "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
                "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
                "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
                "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
            },
            gz=True,
        ),
    ),
    "chr_en": ParallelSpec(
        "chr_en",
        "chr_en",
        {"train": "train", "valid": "dev", "test": "test"},
        ("chr", "en"),
        _sources(
            _CHREN,
            {
                "train.chr": "2fa9a94f8e26527d0bb8186b9bf19c8d2a34d0103bb195458b512b6af5fbc72f",
                "train.en": "03908c36f1db4a2ab911c723a7ac8fcb0f4f995d4669d18b0c2053f7a3a0bfab",
                "dev.chr": "7a3f7da75bfb8f06403fd9f4bf2fc378e2b6183c7c9a7eaadc6972df257728d8",
                "dev.en": "dffafdee460b1c009026a49e2432db3739743f75e8730aa8b452b5b8a3526383",
                "test.chr": "2587883d8d8f9e3bbc0eb3286af741ac7773fda40863a82c26ecac7123c2bfd7",
                "test.en": "74c34ac3da2383e0884de005d1950b0ed0c41f85fc4f0cf06ca6503aa0f3d5f0",
            },
            gz=False,
        ),
    ),
}


@dataclass(frozen=True)
class ParallelCorpus(PreparedCorpus):
    src_vocab: int
    tgt_vocab: int
    pairs: dict[str, int] = field(hash=False)
    filtered: dict[str, int] = field(hash=False)
    unigram: dict = field(default_factory=dict, hash=False)  # the floor on target tokens: tasks/data/unigram.py
    unit: ClassVar[str] = "sentence pairs"

    @property
    def sizes(self) -> dict[str, int]:
        """split → its size, in `unit`s."""
        return self.pairs

    @property
    def floor(self) -> dict[str, float]:
        """split → the target-token perplexity of the training targets' unigram model on it (EOS included, as the
        model is scored): a translation model at or above it learned nothing of the source."""
        return self.unigram.get("ppl", {})

    def model_path(self, side: str) -> Path:
        return self.cached(f"{side}.model")

    @property
    def output_vocab(self) -> int:
        """The target subwords a model predicts over: a uniform guess over them has this perplexity."""
        return self.tgt_vocab

    def load(self, split: str) -> dict[str, list[torch.Tensor]]:
        return torch.load(self.cached(f"{split}.pt"), weights_only=True)

    def facts(self) -> dict[str, str]:
        return {
            "data.src_vocab": str(self.src_vocab),
            "data.tgt_vocab": str(self.tgt_vocab),
            **{f"data.pairs.{s}": str(n) for s, n in self.pairs.items()},
            "data.filtered.train": str(self.filtered.get("train", 0)),
            **floor_tags(self.unigram),
        }

    def artifacts(self) -> dict[str, list[Path]]:
        """Files a run needs to be used later, by artifact folder."""
        return {"subwords": [self.model_path("src"), self.model_path("tgt")]}

    def references(self, split: str) -> list[str]:
        return json.loads(self.cached("references.json").read_text())[split]


def locate_pairs(cfg: ParallelDataConfig) -> tuple[str, dict[str, tuple[Path, Path]]]:
    """Find (and, for a known corpus, fetch if missing) the src/tgt files of each split; a test split is optional."""
    if cfg.corpus in KNOWN_PARALLEL:
        spec = KNOWN_PARALLEL[cfg.corpus]
        folder = data_dir(cfg) / spec.folder
        for lang in (cfg.src, cfg.tgt):
            if lang not in spec.languages:
                raise DataError(
                    f"data.src/data.tgt: corpus '{cfg.corpus}' has languages {', '.join(spec.languages)}, not '{lang}'"
                )
    else:
        folder = user_folder(cfg.corpus, KNOWN_PARALLEL, "parallel ")
        spec = ParallelSpec(
            folder.name, str(folder), {"train": "train", "valid": "valid", "test": "test"}, (cfg.src, cfg.tgt)
        )
    files = {}
    for split, stem in spec.stems.items():
        paths = [folder / f"{stem}.{lang}" for lang in (cfg.src, cfg.tgt)]
        found = [
            fetch_if_missing(
                p,
                spec.folder,
                spec.sources.get(p.name),
                cfg.download,
                split != "test",
                f"{split} split for {spec.name}",
            )
            for p in paths
        ]
        if all(found):
            files[split] = (paths[0], paths[1])
        elif split != "test":
            raise DataError(f"{paths[found.index(False)]}: missing {split} split of corpus '{spec.name}'")
    return spec.name, files


def read_pairs(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"parallel files differ in length: {src_path} has {len(src):,} lines, {tgt_path} has {len(tgt):,}"
        )
    return src, tgt


def train_sentencepiece(lines: list[str], vocab_size: int) -> bytes:
    # here, not at import: the kinds registry imports this module for language-model runs too
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(line for line in lines if line.strip()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=PAD,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        num_threads=1,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    return model.getvalue()


def processor(model: bytes | Path):
    import sentencepiece as spm  # here, not at import (see train_sentencepiece)

    proto = model.read_bytes() if isinstance(model, Path) else model
    return spm.SentencePieceProcessor(model_proto=proto)


def prepare_parallel_corpus(cfg: ParallelDataConfig) -> ParallelCorpus:
    """Train the subword models and encode a corpus once; later calls with unchanged files load the cache."""
    name, files = locate_pairs(cfg)
    checksums = {
        f"{split}.{side}": sha256_file(path)
        for split, pair in sorted(files.items())
        for side, path in zip(("src", "tgt"), pair)
    }
    key = cache_key([FORMAT_VERSION, checksums, cfg.src, cfg.tgt, cfg.vocab_size, cfg.max_len])
    target = cache_root() / "parallel" / f"{name}-{cfg.src}-{cfg.tgt}-{key}"
    meta = verified_cache(target, lambda staging: write_cache(files, staging, cfg.vocab_size, cfg.max_len))
    return ParallelCorpus(
        name, str(target), key, meta["src_vocab"], meta["tgt_vocab"], meta["pairs"], meta["filtered"], meta["unigram"]
    )


def write_cache(files: dict[str, tuple[Path, Path]], staging: Path, vocab_size: int, max_len: int) -> dict:
    """Train the subword models and encode the split files into `staging`; return the cache's meta."""
    print(
        f"rnnlab: training subword models and encoding {', '.join(str(p) for pair in files.values() for p in pair)}",
        file=sys.stderr,
    )
    texts = {split: read_pairs(*pair) for split, pair in files.items()}
    models = {side: train_sentencepiece(texts["train"][i], vocab_size) for i, side in enumerate(("src", "tgt"))}
    sp = {side: processor(model) for side, model in models.items()}
    pairs, filtered, references, targets = {}, {}, {}, {}
    for split, (src_lines, tgt_lines) in texts.items():
        src_ids, tgt_ids = sp["src"].encode(src_lines), sp["tgt"].encode(tgt_lines)
        keep = range(len(src_ids))
        if split == "train":  # only training pairs are filtered; evaluation sets stay whole
            keep = [i for i in keep if 0 < len(src_ids[i]) <= max_len and 0 < len(tgt_ids[i]) <= max_len]
        torch.save(
            {
                "src": [torch.tensor(src_ids[i], dtype=torch.int32) for i in keep],
                "tgt": [torch.tensor(tgt_ids[i], dtype=torch.int32) for i in keep],
            },
            staging / f"{split}.pt",
        )
        pairs[split], filtered[split] = len(keep), len(src_ids) - len(keep)
        # the tokens a model is scored on: each target followed by EOS (tasks/kinds/nmt.py batches)
        targets[split] = torch.tensor([t for i in keep for t in [*tgt_ids[i], EOS_ID]], dtype=torch.int64)
        references[split] = tgt_lines
    for side, model in models.items():
        (staging / f"{side}.model").write_bytes(model)
    print(
        f"rnnlab: kept {pairs['train']:,} training pairs; filtered {filtered['train']:,} that were empty or "
        f"longer than {max_len} subwords",
        file=sys.stderr,
    )
    (staging / "references.json").write_text(json.dumps(references, ensure_ascii=False))
    return {
        "format": FORMAT_VERSION,
        "files": {s: [str(p) for p in pair] for s, pair in files.items()},
        "src_vocab": sp["src"].get_piece_size(),
        "tgt_vocab": sp["tgt"].get_piece_size(),
        "pairs": pairs,
        "filtered": filtered,
        "unigram": unigram_perplexities(
            targets["train"], {s: t for s, t in targets.items() if s != "train"}, sp["tgt"].get_piece_size()
        ),
    }


def check_fits(cfg: NMTRunConfig, corpus: ParallelCorpus) -> None:
    """Fail before any run opens when no training pairs are left once the long and empty ones are filtered
    (translation batches may be short, and evaluation sets stay whole, so nothing else can fail to fit)."""
    if corpus.pairs.get("train", 0) == 0:
        raise DataError(
            f"data.corpus={cfg.data.corpus}: the train split has no sentence pairs left after filtering "
            f"the {corpus.filtered.get('train', 0):,} that were empty or longer than data.max_len="
            f"{cfg.data.max_len} subwords; training needs at least 1: raise data.max_len"
        )
