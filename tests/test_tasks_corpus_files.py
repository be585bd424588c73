"""The shared corpus floor: the data directory, downloads checked by sha256, files that cannot be read named, and
caches that are verified, rebuilt when damaged, and published whole (shown through the language-model corpus)."""

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, cut_corpus

from rnnlab.schemas.config import DataConfig, ParallelDataConfig
from tasks.data.corpus_files import DataError, data_dir, download, sha256_file
from tasks.data.lm_corpus import prepare_lm_corpus
from tasks.data.nmt_corpus import prepare_parallel_corpus


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test here its own cache root: the caches these tests build, damage and repair are not left for a later
    test that expects to build the same corpus itself."""
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))


def test_data_dir_comes_from_the_config_key_else_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "from-env"))
    assert data_dir(DataConfig()) == tmp_path / "from-env"
    assert data_dir(DataConfig(dir=str(tmp_path / "from-key"))) == tmp_path / "from-key"


def test_without_either_the_data_is_shared_data_beside_the_project_else_its_own_data_folder(monkeypatch, tmp_path):
    """As the README says for every command (not only under make): ../shared/data when it sits beside the project."""
    monkeypatch.delenv("RNNLAB_DATA_DIR")
    monkeypatch.setenv("RNNLAB_HOME", str(tmp_path / "project"))
    (tmp_path / "project").mkdir()
    assert data_dir(DataConfig()) == tmp_path / "project" / "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert data_dir(DataConfig()) == tmp_path / "shared" / "data"


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


@pytest.mark.parametrize(
    "damage, why",
    [
        (damage_train, "train.pt does not match its checksum"),
        (truncate_meta, "meta.json does not parse"),
        (delete_valid, "valid.pt is missing"),
        (forget_checksums, "meta.json records no checksums: built by an older rnnlab"),
    ],
)
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


@pytest.mark.parametrize("download", [True, False])
def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path, download):
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a directory\n")
    with pytest.raises(DataError, match=rf"^data.dir={a_file} is a file, not a directory$"):
        prepare_lm_corpus(DataConfig(corpus="ptb", dir=str(a_file), download=download))
    with pytest.raises(
        DataError, match=rf"^data.dir={a_file / 'sub'} \(its parent {a_file}\) is a file, not a directory$"
    ):
        prepare_lm_corpus(DataConfig(corpus="ptb", dir=str(a_file / "sub"), download=download))
    with pytest.raises(DataError, match=rf"^data.dir={a_file} is a file, not a directory$"):
        prepare_parallel_corpus(
            ParallelDataConfig(
                corpus="multi30k", src="de", tgt="en", vocab_size=100, max_len=50, dir=str(a_file), download=download
            )
        )
