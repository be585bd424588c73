"""Corpora become token tensors with the published sizes, cached by checksum; bad files fail naming the file."""

import functools
import http.server
import json
import random
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from rnnlab import config
from rnnlab.config import DataConfig, ParallelDataConfig
from tasks import tracking
from tasks.corpus_files import DataError, data_dir, download, sha256_file
from tasks.lm_corpus import EOS, UNK, prepare_lm_corpus, read_vocab
from tasks.nmt_corpus import prepare_parallel_corpus, processor
from tasks.steps import prepare_corpus

from conftest import DATA_DIR, REPO, RUN_CONFIG, TINY, cut_corpus, rnnlab_command


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


def leftovers(cache: Path) -> list[str]:
    """Staging or set-aside directories of this cache that were not cleaned up."""
    return [p.name for p in cache.parent.iterdir() if cache.name in p.name and p != cache]


def damage_train(cache):
    (cache / "train.pt").write_bytes(b"other bytes")


def truncate_meta(cache):
    text = (cache / "meta.json").read_text()
    (cache / "meta.json").write_text(text[: len(text) // 2])


def delete_valid(cache):
    (cache / "valid.pt").unlink()


def forget_checksums(cache):  # what rnnlab wrote before it recorded checksums
    meta = json.loads((cache / "meta.json").read_text())
    del meta["contents_sha256"]
    (cache / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, why", [
    (damage_train, "train.pt does not match its checksum"),
    (truncate_meta, "meta.json does not parse"),
    (delete_valid, "valid.pt is missing"),
    (forget_checksums, "meta.json records no checksums: built by an older rnnlab"),
])
def test_a_damaged_token_cache_is_rebuilt_with_one_line_saying_why(tmp_path, capsys, damage, why):
    corpus = cut_corpus(tmp_path / "c", train_lines=50, valid_lines=10, test_lines=10)
    first = prepare_lm_corpus(DataConfig(corpus=str(corpus)))
    train = first.load("train")
    damage(Path(first.cache_dir))
    capsys.readouterr()

    again = prepare_lm_corpus(DataConfig(corpus=str(corpus)))

    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"rnnlab: token cache {first.cache_dir} is damaged ({why}); rebuilding it"
    assert [line for line in err if " is damaged " in line] == err[:1] and "tokenizing" in err[1]
    assert again == first and torch.equal(again.load("train"), train) and again.load("valid").numel() > 0
    assert prepare_lm_corpus(DataConfig(corpus=str(corpus))) == first
    assert capsys.readouterr().err == ""  # intact now: trusted, not rebuilt again
    assert leftovers(Path(first.cache_dir)) == []


def test_the_same_damage_found_by_two_at_once_is_repaired_once(tmp_path, capsys):
    corpus = cut_corpus(tmp_path / "c", train_lines=50, valid_lines=10, test_lines=10)
    first = prepare_lm_corpus(DataConfig(corpus=str(corpus)))
    damage_train(Path(first.cache_dir))
    capsys.readouterr()
    both = threading.Barrier(2)
    results = []

    def prepare():
        both.wait()
        results.append(prepare_lm_corpus(DataConfig(corpus=str(corpus))))

    workers = [threading.Thread(target=prepare) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [first, first]
    assert capsys.readouterr().err.count("is damaged") == 1
    assert torch.equal(first.load("train"), prepare_lm_corpus(DataConfig(corpus=str(corpus))).load("train"))
    assert leftovers(Path(first.cache_dir)) == []


def test_a_damaged_subword_cache_is_rebuilt(tmp_path, capsys):
    root = write_parallel(tmp_path / "pairs", pairs=60)
    first = prepare_parallel_corpus(ParallelDataConfig(corpus=str(root), src="src", tgt="tgt", vocab_size=30, max_len=50))
    (Path(first.cache_dir) / "src.model").write_bytes(b"other bytes")
    capsys.readouterr()
    again = prepare_parallel_corpus(ParallelDataConfig(corpus=str(root), src="src", tgt="tgt", vocab_size=30, max_len=50))
    assert capsys.readouterr().err.startswith(
        f"rnnlab: token cache {first.cache_dir} is damaged (src.model does not match its checksum); rebuilding it\n")
    assert again == first and processor(first.model_path("src")).encode("red blue")


@pytest.mark.parametrize("download", [True, False])
def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path, download):
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a directory\n")
    with pytest.raises(DataError, match=rf"^data.dir={a_file} is a file, not a directory$"):
        prepare_lm_corpus(DataConfig(corpus="ptb", dir=str(a_file), download=download))
    with pytest.raises(DataError, match=rf"^data.dir={a_file / 'sub'} \(its parent {a_file}\) is a file, not a directory$"):
        prepare_lm_corpus(DataConfig(corpus="ptb", dir=str(a_file / "sub"), download=download))
    with pytest.raises(DataError, match=rf"^data.dir={a_file} is a file, not a directory$"):
        prepare_parallel_corpus(ParallelDataConfig(corpus="multi30k", src="de", tgt="en", vocab_size=100, max_len=50, dir=str(a_file), download=download))


def test_a_train_split_shorter_than_the_batch_size_fails_in_preparation_naming_split_size_and_key(tiny_cfg, tiny_corpus):
    tokens = prepare_lm_corpus(tiny_cfg().data).tokens["train"]
    assert prepare_corpus(tiny_cfg(f"train.batch_size={tokens}")).tokens["train"] == tokens  # one column each: fits
    with pytest.raises(DataError) as err:
        prepare_corpus(tiny_cfg(f"train.batch_size={tokens + 1}"))
    assert str(err.value) == (
        f"data.corpus={tiny_corpus}: the train split of {tokens:,} tokens is too short for batch size {tokens + 1:,} "
        f"(train.batch_size): training lays it out as train.batch_size columns, so it needs at least {tokens + 1:,} "
        f"tokens; lower train.batch_size or use a longer corpus")


def test_a_translation_corpus_left_with_no_training_pairs_fails_in_preparation(tmp_path):
    root = write_parallel(tmp_path / "pairs", pairs=60)
    cfg = config.load(REPO / "conf" / "runs" / "multi30k_deen.yaml", [
        f"data.corpus={root}", "data.src=src", "data.tgt=tgt", "data.vocab_size=30", "data.max_len=1"])
    with pytest.raises(DataError, match=rf"^data.corpus={root}: the train split has no sentence pairs left after "
                                        r"filtering the 60 that were empty or longer than data.max_len=1 subwords"):
        prepare_corpus(cfg)


def test_the_cli_reports_a_too_short_split_in_one_line_before_any_run_opens(tiny_corpus):
    done = subprocess.run(rnnlab_command("train", str(RUN_CONFIG), f"data.corpus={tiny_corpus}", *TINY,
                                         "train.batch_size=1000000", "experiment=too-short"),
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"rnnlab: error: data.corpus={tiny_corpus}: the train split of ")
    assert "(train.batch_size)" in done.stderr and "Traceback" not in done.stderr
    assert tracking.client().get_experiment_by_name("too-short") is None


def write_parallel(root: Path, pairs: int) -> Path:
    """Sentence pairs of 3–6 colour words (source) and the same words reversed (target)."""
    rng = random.Random(0)
    root.mkdir(parents=True)
    for split, n in (("train", pairs), ("valid", 10), ("test", 10)):
        lines = [" ".join(rng.choice(["red", "green", "blue", "black", "white"]) for _ in range(rng.randint(3, 6)))
                 for _ in range(n)]
        (root / f"{split}.src").write_text("".join(line + "\n" for line in lines))
        (root / f"{split}.tgt").write_text("".join(" ".join(reversed(line.split())) + "\n" for line in lines))
    return root
