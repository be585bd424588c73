"""Parallel corpora become subword tensors, cached by checksum; a damaged cache is rebuilt, and a corpus left with
no training pairs fails in preparation."""

import random
from pathlib import Path

import pytest
from conftest import DATA_DIR, REPO
from test_flows_nmt import write_reversal_corpus

from rnnlab.schemas import config
from rnnlab.schemas.config import ParallelDataConfig
from tasks.data.corpus_files import DataError
from tasks.data.nmt_corpus import prepare_parallel_corpus, processor
from tasks.kinds.steps import prepare_corpus


def test_a_damaged_subword_cache_is_rebuilt(tmp_path, capsys):
    root = write_parallel(tmp_path / "pairs", pairs=60)
    first = prepare_parallel_corpus(
        ParallelDataConfig(corpus=str(root), src="src", tgt="tgt", vocab_size=30, max_len=50)
    )
    (Path(first.cache_dir) / "src.model").write_bytes(b"other bytes")
    capsys.readouterr()
    again = prepare_parallel_corpus(
        ParallelDataConfig(corpus=str(root), src="src", tgt="tgt", vocab_size=30, max_len=50)
    )
    assert capsys.readouterr().err.startswith(
        f"rnnlab: token cache {first.cache_dir} is damaged (src.model does not match its checksum); rebuilding it\n"
    )
    assert again == first and processor(first.model_path("src")).encode("red blue")


def test_a_translation_corpus_left_with_no_training_pairs_fails_in_preparation(tmp_path):
    root = write_parallel(tmp_path / "pairs", pairs=60)
    cfg = config.load(
        REPO / "conf" / "runs" / "multi30k_deen.yaml",
        [f"data.corpus={root}", "data.src=src", "data.tgt=tgt", "data.vocab_size=30", "data.max_len=1"],
    )
    with pytest.raises(
        DataError,
        match=rf"^data.corpus={root}: the train split has no sentence pairs left after "
        r"filtering the 60 that were empty or longer than data.max_len=1 subwords",
    ):
        prepare_corpus(cfg)


def write_parallel(root: Path, pairs: int) -> Path:
    """Sentence pairs of 3–6 colour words (source) and the same words reversed (target)."""
    rng = random.Random(0)
    root.mkdir(parents=True)
    for split, n in (("train", pairs), ("valid", 10), ("test", 10)):
        lines = [
            " ".join(rng.choice(["red", "green", "blue", "black", "white"]) for _ in range(rng.randint(3, 6)))
            for _ in range(n)
        ]
        (root / f"{split}.src").write_text("".join(line + "\n" for line in lines))
        (root / f"{split}.tgt").write_text("".join(" ".join(reversed(line.split())) + "\n" for line in lines))
    return root


def test_subword_detokenization_gives_back_the_raw_references(tmp_path):
    corpus = tmp_path / "m30k"
    corpus.mkdir()
    for split, stem in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            lines = (DATA_DIR / "multi30k" / f"{stem}.{lang}").read_text().splitlines(keepends=True)
            (corpus / f"{split}.{lang}").write_text("".join(lines[:400]))
    prepared = prepare_parallel_corpus(
        ParallelDataConfig(corpus=str(corpus), src="de", tgt="en", vocab_size=500, max_len=100)
    )
    detok = processor(prepared.model_path("tgt"))
    decoded = detok.decode([t.tolist() for t in prepared.load("train")["tgt"]])
    assert decoded == (corpus / "train.en").read_text().splitlines()  # cased, untokenized, byte for byte
    assert prepared.references("test") == (corpus / "test.en").read_text().splitlines()  # BLEU's references: raw


def test_parallel_files_of_different_lengths_are_named_with_both_counts(tmp_path):
    corpus = write_reversal_corpus(tmp_path / "c")
    (corpus / "valid.tgt").write_text("one line only\n")
    with pytest.raises(DataError, match=rf"{corpus / 'valid.src'} has 100 lines, {corpus / 'valid.tgt'} has 1"):
        prepare_parallel_corpus(
            ParallelDataConfig(corpus=str(corpus), src="src", tgt="tgt", vocab_size=40, max_len=100)
        )


def test_long_or_empty_training_pairs_are_filtered_and_counted_but_test_pairs_never(tmp_path):
    corpus = write_reversal_corpus(tmp_path / "c")
    long_line = " ".join(["red"] * 200)
    for split in ("train", "test"):
        for side in ("src", "tgt"):
            with open(corpus / f"{split}.{side}", "a") as f:
                f.write(f"{long_line}\n" + ("\n" if split == "train" and side == "src" else "red\n"))
    prepared = prepare_parallel_corpus(
        ParallelDataConfig(corpus=str(corpus), src="src", tgt="tgt", vocab_size=40, max_len=50)
    )
    assert prepared.filtered["train"] == 2 and prepared.pairs["train"] == 3000
    assert prepared.pairs["test"] == 102 and prepared.filtered["test"] == 0
