"""Corpora become token tensors with the published sizes, cached by checksum; bad files fail naming the file."""

import functools
import http.server
import threading

import pytest
import torch

from rnnlab.config import DataConfig
from tasks.data import EOS, UNK, DataError, data_dir, download, prepare_lm_corpus, read_vocab, sha256_file

from conftest import DATA_DIR, cut_corpus


@pytest.mark.parametrize("corpus, vocab, tokens", [
    ("ptb", 10_000, {"train": 929_589, "valid": 73_760}),
    ("wikitext-2", 33_278, {"train": 2_088_628, "valid": 217_646, "test": 245_569}),
])
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


def test_data_dir_comes_from_the_config_key_else_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "from-env"))
    assert data_dir(DataConfig()) == tmp_path / "from-env"
    assert data_dir(DataConfig(dir=str(tmp_path / "from-key"))) == tmp_path / "from-key"


def test_missing_split_is_named(tmp_path):
    corpus = cut_corpus(tmp_path / "c")
    (corpus / "valid.txt").unlink()
    with pytest.raises(DataError, match=rf"{corpus / 'valid.txt'}: missing valid split"):
        prepare_lm_corpus(DataConfig(corpus=str(corpus)))


def test_empty_file_is_named(tmp_path):
    corpus = cut_corpus(tmp_path / "c")
    (corpus / "test.txt").write_text("\n\n")
    with pytest.raises(DataError, match=rf"{corpus / 'test.txt'}: file is empty"):
        prepare_lm_corpus(DataConfig(corpus=str(corpus)))


def test_undecodable_bytes_are_named(tmp_path):
    corpus = cut_corpus(tmp_path / "c")
    (corpus / "train.txt").write_bytes(b"good words\nbad \xff\xfe bytes\n")
    with pytest.raises(DataError, match=rf"{corpus / 'train.txt'}: not valid UTF-8 \(byte 15"):
        prepare_lm_corpus(DataConfig(corpus=str(corpus)))


def test_unknown_corpus_that_is_no_directory_is_explained(tmp_path):
    with pytest.raises(DataError, match=r"data.corpus='penn' is neither a known corpus \(ptb, wikitext-2\) nor a directory"):
        prepare_lm_corpus(DataConfig(corpus="penn"))


@pytest.fixture
def http_root(tmp_path):
    """A static HTTP server on 127.0.0.1 serving a temporary folder (stands in for the public source)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_missing_known_corpus_is_downloaded_and_checksum_verified(http_root, tmp_path, monkeypatch):
    root, url = http_root
    (root / "ptb").mkdir()
    for name in ("ptb.train.txt", "ptb.valid.txt"):  # the mirror has no test split: a warning, not an error
        (root / "ptb" / name).write_bytes((DATA_DIR / "ptb" / name).read_bytes())
    monkeypatch.setenv("RNNLAB_DATA_MIRROR", url)
    target = tmp_path / "data"
    prepared = prepare_lm_corpus(DataConfig(corpus="ptb", dir=str(target)))
    assert prepared.vocab_size == 10_000 and prepared.tokens == {"train": 929_589, "valid": 73_760}
    assert sha256_file(target / "ptb" / "ptb.train.txt") == sha256_file(DATA_DIR / "ptb" / "ptb.train.txt")
    assert not (target / "ptb" / "ptb.test.txt").exists()


def test_download_with_a_wrong_checksum_leaves_nothing_behind(http_root, tmp_path):
    root, url = http_root
    (root / "f.txt").write_text("tampered\n")
    dest = tmp_path / "out" / "f.txt"
    with pytest.raises(DataError, match=r"f.txt: sha256 mismatch: expected 0{64}, got [0-9a-f]{64}"):
        download(f"{url}/f.txt", dest, "0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_required_split_that_cannot_be_downloaded_is_named(http_root, tmp_path, monkeypatch):
    _, url = http_root
    monkeypatch.setenv("RNNLAB_DATA_MIRROR", url)
    with pytest.raises(DataError, match=rf"could not download {url}/ptb/ptb.train.txt to .*ptb.train.txt: HTTP 404"):
        prepare_lm_corpus(DataConfig(corpus="ptb", dir=str(tmp_path / "data")))
    assert not any((tmp_path / "data" / "ptb").iterdir())


def test_download_can_be_switched_off(tmp_path):
    with pytest.raises(DataError, match=r"missing train split of corpus 'ptb'"):
        prepare_lm_corpus(DataConfig(corpus="ptb", dir=str(tmp_path), download=False))
