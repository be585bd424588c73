"""Translation end to end on tiny data: subwords, a model that truly learns, beam vs greedy, sacreBLEU, the CLI."""

import json
import random
import subprocess
from pathlib import Path

import pytest

from rnnlab import config
from rnnlab.config import ParallelDataConfig
from tasks import tracking
from tasks.corpus_files import DataError
from tasks.nmt_corpus import prepare_parallel_corpus, processor

from conftest import DATA_DIR, REPO, rnnlab_command

WORDS = "red green blue black white small big old young tall short happy".split()
NMT_CONFIG = REPO / "conf" / "runs" / "multi30k_deen.yaml"


def write_reversal_corpus(root: Path, seed: int = 0) -> Path:
    """Source: 3–7 random words; target: the same words in reverse order."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 3000), ("valid", 100), ("test", 100)):
        sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(n)]
        (root / f"{split}.src").write_text("".join(s + "\n" for s in sources))
        (root / f"{split}.tgt").write_text("".join(" ".join(reversed(s.split())) + "\n" for s in sources))
    return root


@pytest.fixture(scope="module")
def reversal(tmp_path_factory) -> Path:
    return write_reversal_corpus(tmp_path_factory.mktemp("reversal") / "corpus")


def reversal_cfg(corpus: Path, *overrides: str):
    return config.load(NMT_CONFIG, [
        f"data.corpus={corpus}", "data.src=src", "data.tgt=tgt", "data.vocab_size=40", "model.embedding_size=32",
        "model.hidden_size=64", "model.dropout=0.0", "train.batch_size=50", "train.lr=0.005", "train.max_epochs=5",
        "train.lr_schedule=constant", "train.label_smoothing=0.0", "train.num_threads=1", "eval.beam=3",
        "experiment=reversal", *overrides])


@pytest.fixture(scope="module")
def learned(prefect_server, reversal):
    """The same budget with and without attention (runs once for the module)."""
    from flows.train import train_flow

    return {attention: train_flow(reversal_cfg(reversal, f"model.attention={attention}", f"run_name={attention}"))
            for attention in ("dot", "none")}


def test_the_model_learns_to_reverse_sentences_and_attention_learns_faster(learned):
    with_attention, without = learned["dot"]["metrics"], learned["none"]["metrics"]
    assert with_attention["test_bleu"] > 90
    assert with_attention["test_bleu"] > without["test_bleu"] + 10
    assert with_attention["test_ppl"] < without["test_ppl"]


def test_a_translation_run_records_signatures_translations_and_subword_models(learned):
    run_id = learned["dot"]["run_id"]
    run = tracking.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sacrebleu.bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert run.data.tags["sacrebleu.chrf_signature"].startswith("nrefs:1|case:mixed")
    assert {a.path for a in tracking.client().list_artifacts(run_id, "translations")} == {
        f"translations/{split}.{kind}" for split in ("valid", "test") for kind in ("greedy.hyp", "beam.hyp", "ref")}
    assert {a.path for a in tracking.client().list_artifacts(run_id, "subwords")} == {"subwords/src.model", "subwords/tgt.model"}
    *epochs, final = sorted(tracking.client().get_metric_history(run_id, "valid_bleu_greedy"), key=lambda m: m.step)
    assert len(epochs) == 5  # validation BLEU (greedy) every epoch, then once more for the chosen checkpoint
    assert final.value == pytest.approx(max(m.value for m in epochs))  # the best checkpoint was the one kept
    assert len(tracking.client().get_metric_history(run_id, "grad_norm")) == run.data.metrics["train_steps"]


def test_cli_translate_and_evaluate_reproduce_the_flow_scores(learned, reversal, tmp_path):
    run_id, metrics = learned["dot"]["run_id"], learned["dot"]["metrics"]
    translated = subprocess.run(rnnlab_command("translate", run_id, "--input", str(reversal / "test.src")),
                                capture_output=True, text=True, cwd=REPO, timeout=300)
    assert translated.returncode == 0, translated.stderr[-2000:]
    saved = tracking.download_artifact(run_id, "translations/test.beam.hyp", tmp_path).read_text()
    assert translated.stdout == saved

    greedy = subprocess.run(rnnlab_command("translate", run_id, "--input", str(reversal / "test.src"), "--beam", "1"),
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    saved_greedy = tracking.download_artifact(run_id, "translations/test.greedy.hyp", tmp_path).read_text()
    assert greedy.stdout == saved_greedy

    scored = subprocess.run(rnnlab_command("evaluate", run_id, "--src", str(reversal / "test.src"),
                                           "--ref", str(reversal / "test.tgt"), "--json"),
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout.splitlines()[-1])["metrics"]
    assert result["file.test.src_bleu"] == pytest.approx(metrics["test_bleu"])
    assert result["file.test.src_chrf_greedy"] == pytest.approx(metrics["test_chrf_greedy"])


def test_subword_detokenization_gives_back_the_raw_references(tmp_path):
    corpus = tmp_path / "m30k"
    corpus.mkdir()
    for split, stem in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            lines = (DATA_DIR / "multi30k" / f"{stem}.{lang}").read_text().splitlines(keepends=True)
            (corpus / f"{split}.{lang}").write_text("".join(lines[:400]))
    prepared = prepare_parallel_corpus(ParallelDataConfig(corpus=str(corpus), src="de", tgt="en", vocab_size=500, max_len=100))
    detok = processor(prepared.model_path("tgt"))
    decoded = detok.decode([t.tolist() for t in prepared.load("train")["tgt"]])
    assert decoded == (corpus / "train.en").read_text().splitlines()  # cased, untokenized, byte for byte
    assert prepared.references("test") == (corpus / "test.en").read_text().splitlines()  # BLEU's references: raw


def test_parallel_files_of_different_lengths_are_named_with_both_counts(tmp_path):
    corpus = write_reversal_corpus(tmp_path / "c")
    (corpus / "valid.tgt").write_text("one line only\n")
    with pytest.raises(DataError, match=rf"{corpus / 'valid.src'} has 100 lines, {corpus / 'valid.tgt'} has 1"):
        prepare_parallel_corpus(ParallelDataConfig(corpus=str(corpus), src="src", tgt="tgt", vocab_size=40, max_len=100))


def test_long_or_empty_training_pairs_are_filtered_and_counted_but_test_pairs_never(tmp_path):
    corpus = write_reversal_corpus(tmp_path / "c")
    long_line = " ".join(["red"] * 200)
    for split in ("train", "test"):
        for side in ("src", "tgt"):
            with open(corpus / f"{split}.{side}", "a") as f:
                f.write(f"{long_line}\n" + ("\n" if split == "train" and side == "src" else "red\n"))
    prepared = prepare_parallel_corpus(ParallelDataConfig(corpus=str(corpus), src="src", tgt="tgt", vocab_size=40, max_len=50))
    assert prepared.filtered["train"] == 2 and prepared.pairs["train"] == 3000
    assert prepared.pairs["test"] == 102 and prepared.filtered["test"] == 0


def test_language_model_scoring_of_a_translation_run_is_refused_clearly(learned, reversal):
    done = subprocess.run(rnnlab_command("evaluate", learned["dot"]["run_id"], "--file", str(reversal / "test.src")),
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2
    assert "is a nmt run: score it with --src and --ref, not --file" in done.stderr
