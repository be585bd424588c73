"""Word corpora become token tensors with the published sizes, cached by checksum; a corpus too short for the
batches fails in preparation."""

import subprocess

import pytest
import torch
from conftest import REPO, RUN_CONFIG, TINY, cut_corpus, rnnlab_command

from rnnlab.schemas.config import DataConfig
from tasks.data.corpus_files import DataError
from tasks.data.lm_corpus import EOS, UNK, prepare_lm_corpus, read_vocab
from tasks.kinds.steps import prepare_corpus
from tasks.record import tracking


@pytest.mark.parametrize(
    "corpus, vocab, tokens",
    [
        ("ptb", 10_000, {"train": 929_589, "valid": 73_760}),
        ("wikitext-2", 33_278, {"train": 2_088_628, "valid": 217_646, "test": 245_569}),
    ],
)
def test_known_corpora_have_the_published_sizes(corpus, vocab, tokens):
    prepared = prepare_lm_corpus(DataConfig(corpus=corpus, download=False))
    assert prepared.vocab_size == vocab
    assert {s: n for s, n in prepared.tokens.items() if s in tokens} == tokens
    for split, n in tokens.items():
        ids = prepared.load(split)
        assert ids.shape == (n,) and ids.dtype == torch.int64 and int(ids.max()) < vocab


def test_one_eos_per_line_and_vocabulary_from_train(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train.txt").write_text("the cat\nthe dog\n")
    (tmp_path / "c" / "valid.txt").write_text("the bird\n")
    prepared = prepare_lm_corpus(DataConfig(corpus=str(tmp_path / "c")))
    vocab = read_vocab(prepared.vocab_path)
    assert vocab == ["the", "cat", EOS, "dog", UNK]
    assert prepared.load("train").tolist() == [0, 1, 2, 0, 3, 2]
    assert prepared.load("valid").tolist() == [0, 4, 2]  # unseen 'bird' becomes <unk>
    assert "test" not in prepared.tokens  # a user corpus may have no test split


def test_second_prepare_reuses_the_cache_and_a_changed_file_invalidates_it(tmp_path, capsys):
    corpus = cut_corpus(tmp_path / "c", train_lines=50, valid_lines=10, test_lines=10)
    first = prepare_lm_corpus(DataConfig(corpus=str(corpus)))
    assert "tokenizing" in capsys.readouterr().err
    second = prepare_lm_corpus(DataConfig(corpus=str(corpus)))
    assert "tokenizing" not in capsys.readouterr().err
    assert second == first
    with open(corpus / "valid.txt", "a") as f:
        f.write("one more line\n")
    third = prepare_lm_corpus(DataConfig(corpus=str(corpus)))
    assert third.checksum != first.checksum and third.cache_dir != first.cache_dir
    assert third.tokens["valid"] == first.tokens["valid"] + 4


def test_missing_split_is_named(tmp_path):
    corpus = cut_corpus(tmp_path / "c")
    (corpus / "valid.txt").unlink()
    with pytest.raises(DataError, match=rf"{corpus / 'valid.txt'}: missing valid split"):
        prepare_lm_corpus(DataConfig(corpus=str(corpus)))


def test_unknown_corpus_that_is_no_directory_is_explained(tmp_path):
    with pytest.raises(
        DataError, match=r"data.corpus='penn' is neither a known corpus \(ptb, wikitext-2\) nor a directory"
    ):
        prepare_lm_corpus(DataConfig(corpus="penn"))


def test_a_train_split_shorter_than_the_batch_size_fails_in_preparation_naming_split_size_and_key(
    tiny_cfg, tiny_corpus
):
    tokens = prepare_lm_corpus(tiny_cfg().data).tokens["train"]
    assert prepare_corpus(tiny_cfg(f"train.batch_size={tokens}")).tokens["train"] == tokens  # one column each: fits
    with pytest.raises(DataError) as err:
        prepare_corpus(tiny_cfg(f"train.batch_size={tokens + 1}"))
    assert str(err.value) == (
        f"data.corpus={tiny_corpus}: the train split of {tokens:,} tokens is too short for batch size {tokens + 1:,} "
        f"(train.batch_size): training lays it out as train.batch_size columns, so it needs at least {tokens + 1:,} "
        f"tokens; lower train.batch_size or use a longer corpus"
    )


def test_the_cli_reports_a_too_short_split_in_one_line_before_any_run_opens(tiny_corpus):
    done = subprocess.run(
        rnnlab_command(
            "train",
            str(RUN_CONFIG),
            f"data.corpus={tiny_corpus}",
            *TINY,
            "train.batch_size=1000000",
            "experiment=too-short",
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"rnnlab: error: data.corpus={tiny_corpus}: the train split of ")
    assert "(train.batch_size)" in done.stderr and "Traceback" not in done.stderr
    assert tracking.client().get_experiment_by_name("too-short") is None
