"""The floor for "learned": the unigram model of the training split, exact, cached with the corpus, and the line a
run must get below to count as trained."""

import math
from collections import Counter

import pytest
import torch
from conftest import DATA_DIR

from tasks.data.unigram import floor_tags, unigram_perplexities
from tasks.record.outcome import FAILED_TO_LEARN, TRAINED, judge


def test_the_floor_is_the_exact_unigram_perplexity_of_the_split():
    train = torch.tensor([0, 0, 0, 1, 2, 2])  # p = 1/2, 1/6, 1/3
    valid = torch.tensor([0, 1, 2, 2])
    expected = math.exp(-(math.log(1 / 2) + math.log(1 / 6) + 2 * math.log(1 / 3)) / 4)
    found = unigram_perplexities(train, {"valid": valid}, vocab_size=3)
    assert found["ppl"]["valid"] == pytest.approx(expected, rel=1e-12)
    assert found["smoothing"] == "none"


def test_a_word_the_training_split_never_has_is_smoothed_not_infinite():
    found = unigram_perplexities(torch.tensor([0, 0, 1]), {"valid": torch.tensor([0, 2])}, vocab_size=3)
    # add-one: counts 3, 2, 1 over 6
    assert found["ppl"]["valid"] == pytest.approx(math.exp(-(math.log(3 / 6) + math.log(1 / 6)) / 2))
    assert found["smoothing"] == "add-one"
    assert floor_tags(found)["data.unigram_smoothing"] == "add-one"


def test_ptb_valid_floor_is_687_and_travels_with_the_corpus_as_a_run_tag(tiny_cfg):
    from rnnlab.schemas import config
    from tasks.data.lm_corpus import prepare_lm_corpus

    cfg = config.load("conf/runs/ptb_small.yaml", [])
    corpus = prepare_lm_corpus(cfg.data)
    assert corpus.floor["valid"] == pytest.approx(687.03, abs=0.01)
    assert float(corpus.facts()["data.unigram_ppl.valid"]) == pytest.approx(687.03, abs=0.01)
    # computed independently from the raw text: word counts of train (with one <eos> per line)
    train = Counter(
        w for line in (DATA_DIR / "ptb" / "ptb.train.txt").read_text().splitlines() for w in [*line.split(), "<eos>"]
    )
    valid = [
        w for line in (DATA_DIR / "ptb" / "ptb.valid.txt").read_text().splitlines() for w in [*line.split(), "<eos>"]
    ]
    total = sum(train.values())
    independent = math.exp(-sum(math.log(train[w] / total) for w in valid) / len(valid))
    assert corpus.floor["valid"] == pytest.approx(independent, rel=1e-9)


def test_a_run_at_or_above_the_floor_failed_to_learn_and_the_reason_names_both_numbers(tiny_cfg):
    cfg = tiny_cfg()
    above = judge(cfg, 10_000, {"valid_ppl": 713.8}, None, {"valid": 687.03})
    assert above.kind == FAILED_TO_LEARN
    assert "713.8" in above.reason and "687.0" in above.reason and "unigram" in above.reason
    below = judge(cfg, 10_000, {"valid_ppl": 480.0}, None, {"valid": 687.03})
    assert below.kind == TRAINED and "×0.70" in below.reason
    # far below the uniform guess (10,000) is not enough
    assert judge(cfg, 10_000, {"valid_ppl": 5_000.0}, None, {"valid": 687.03}).kind == FAILED_TO_LEARN


def test_a_tiny_run_that_learned_only_word_frequencies_is_recorded_as_failed_to_learn(prefect_server, tiny_cfg):
    """A run whose steps are too small to learn even the word frequencies (lr 1e-4: it stays near its uniform
    start) ends far above the unigram floor, though below a uniform guess over the vocabulary, the old floor: under
    the default floor its run says that it failed to learn, with both numbers, and carries the floor as a tag."""
    from flows.train import run_steps
    from tasks.kinds.steps import prepare_corpus
    from tasks.record import tracking

    cfg = tiny_cfg("eval.floor=unigram", "train.lr_schedule=constant", "train.lr=1e-4", experiment="floor")
    corpus = prepare_corpus(cfg)
    result = run_steps(cfg, corpus)
    floor, ppl = corpus.floor["valid"], result["metrics"]["valid_ppl"]
    assert floor < ppl < corpus.vocab_size
    assert result["outcome"] == FAILED_TO_LEARN
    assert f"{floor:,.1f}" in result["outcome_reason"] and f"{ppl:,.1f}" in result["outcome_reason"]
    tags = tracking.get_run(result["run_id"]).data.tags
    assert float(tags["data.unigram_ppl.valid"]) == pytest.approx(floor, rel=1e-5)
    assert tags["rnnlab.outcome"] == FAILED_TO_LEARN
