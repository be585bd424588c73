"""A study's answer in words is right for every mix of outcomes: all trained, some failed, all failed, a tie; and the
comparison never averages a run that did not train."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from tasks.compare import compare, formatted
from tasks.verdict import answer

TANH_OFF, TANH_ON, LSTM_OFF, LSTM_ON = ("rnn_tanh", "null"), ("rnn_tanh", "0.25"), ("lstm", "null"), ("lstm", "0.25")


def comparison(cells: dict[tuple[str, str], list[tuple[str, float]]], metric: str = "valid_ppl", goal: str = "min"):
    """A recorded study as MLflow would return it: cells (cell, clip) → (outcome, metric value) per seed."""
    grid, rows = [], []
    for (cell, clip), seeds in cells.items():
        variant = f"cell={cell},clip_norm={clip}"
        for seed, (outcome, value) in enumerate(seeds, start=1):
            grid.append({"variant": variant, "seed": seed, "cell_key": f"{variant}/{seed}",
                         "factors": {"model.cell": cell, "train.clip_norm": clip}})
            rows.append({"run_id": f"run-{variant}-{seed}", "tags.rnnlab.cell": variant, "params.seed": str(seed),
                         "tags.rnnlab.outcome": outcome, "tags.rnnlab.outcome_reason": f"{outcome} for a reason",
                         f"metrics.{metric}": value, "metrics.diverged_step": 50.0 if outcome == "diverged" else math.nan,
                         "tags.factor.model.cell": cell, "tags.factor.train.clip_norm": clip})
    parent = SimpleNamespace(info=SimpleNamespace(run_id="parent"), data=SimpleNamespace(
        tags={"rnnlab.metric": metric, "rnnlab.goal": goal, "rnnlab.question": "Does clipping matter?"}))
    return compare("study", parent, grid, pd.DataFrame(rows))


def no_number_from_a_failed_run(text: str) -> None:
    for word in ("inf", "nan", "1.8e+308", "e+30"):
        assert word not in text.lower()


def test_all_trained_the_winner_is_named_with_its_margin_and_seed_count():
    c = comparison({TANH_OFF: [("trained", 900.0), ("trained", 910.0)], TANH_ON: [("trained", 850.0), ("trained", 860.0)],
                    LSTM_OFF: [("trained", 700.0), ("trained", 720.0)], LSTM_ON: [("trained", 800.0), ("trained", 810.0)]})
    text = answer(c).text
    assert text.startswith("`cell=lstm,clip_norm=null` is best: validation perplexity 709.9 (95% CI ")
    assert "against `cell=lstm,clip_norm=0.25` (805.0), lower in 2 of 2 paired seeds." in text
    assert "Every run trained (8 of 8)." in text
    assert text.count(". ") + 1 <= 3  # one to three sentences


def test_failed_variants_are_named_in_words_and_never_averaged():
    c = comparison({TANH_OFF: [("diverged", math.inf), ("diverged", 1.7976931348623157e308)],
                    TANH_ON: [("trained", 850.0), ("trained", 860.0)],
                    LSTM_OFF: [("trained", 700.0), ("failed_to_learn", 12000.0)],
                    LSTM_ON: [("trained", 800.0), ("trained", 810.0)]})
    result = answer(c)
    assert "`cell=lstm,clip_norm=null` is best: validation perplexity 700.0, ×0.875 (13% lower) against " \
           "`cell=lstm,clip_norm=0.25` (805.0), lower in 1 of 1 paired seeds; but it trained in only 1 of its 2 seeds." \
           in result.text
    assert "Did not train: `cell=rnn_tanh,clip_norm=null` (diverged in 2 of 2 seeds); `cell=lstm,clip_norm=null` " \
           "(failed to learn in 1 of 2 seeds)." in result.text
    assert result.text.endswith("Whether a run trained depended on cell (in 1 of 2 settings) and clip_norm (in 2 of 2 "
                                "settings).")
    clipping = next(line for line in result.factors if line.startswith("`train.clip_norm` null → 0.25: "))
    assert "more runs trained with cell=rnn_tanh (0/2 → 2/2, Fisher's exact p = 0.33)" in clipping
    assert "more runs trained with cell=lstm (1/2 → 2/2, Fisher's exact p = 1)" in clipping
    assert "perplexity ×1.14 (14% higher; higher in 1 of 1 pairs) with cell=lstm" in clipping
    no_number_from_a_failed_run(result.text + "\n".join(result.basis) + formatted(c).to_string())
    row = c.table.set_index("variant").loc["cell=lstm,clip_norm=null"]
    assert (row["trained"], row["failed_to_learn"]) == (1, 1) and row["valid_ppl_mean"] == pytest.approx(700.0)
    assert math.isnan(row["valid_ppl_low"])  # one trained seed: no interval
    assert math.isnan(c.table.set_index("variant").loc["cell=rnn_tanh,clip_norm=null", "valid_ppl_mean"])


def test_all_failed_the_answer_says_so_and_ranks_nothing():
    c = comparison({TANH_OFF: [("diverged", math.inf), ("diverged", 1e40)], TANH_ON: [("failed_to_learn", 2e5)] * 2,
                    LSTM_OFF: [("diverged", 1e31), ("diverged", math.inf)], LSTM_ON: [("diverged", 3e4)] * 2})
    result = answer(c)
    assert result.text.startswith("No variant trained: all 8 runs ended without a usable model (6 diverged, 2 failed "
                                  "to learn), so the study cannot rank the variants by validation perplexity.")
    assert "best" not in result.text and not c.table["best"].any()
    no_number_from_a_failed_run(result.text + "\n".join(result.basis) + formatted(c).to_string())


def test_variants_that_swap_places_between_seeds_are_a_tie():
    c = comparison({TANH_ON: [("trained", 805.0), ("trained", 790.0)], LSTM_ON: [("trained", 795.0), ("trained", 800.0)]})
    text = answer(c).text
    assert "` are tied on validation perplexity: 797.5 vs 797.5, ×1.0000 (no difference), and the first was lower " \
           "in 1 of 2 paired seeds." in text


def test_a_difference_under_one_percent_is_a_tie_even_when_consistent():
    c = comparison({TANH_ON: [("trained", 801.0), ("trained", 802.0)], LSTM_ON: [("trained", 800.0), ("trained", 800.5)]})
    assert "are tied" in answer(c).text


def test_bleu_is_maximised_and_compared_in_points():
    c = comparison({LSTM_OFF: [("trained", 30.0), ("trained", 31.0)], LSTM_ON: [("trained", 33.0), ("trained", 33.5)]},
                   metric="valid_bleu_greedy", goal="max")
    text = answer(c).text
    assert text.startswith("`cell=lstm,clip_norm=0.25` is best: validation BLEU (greedy) 33.25 (95% CI ")
    assert "+2.75 points against `cell=lstm,clip_norm=null` (30.50), higher in 2 of 2 paired seeds." in text


def test_a_single_trained_variant_is_reported_alone():
    c = comparison({TANH_OFF: [("diverged", math.inf)] * 2, LSTM_ON: [("trained", 510.0), ("trained", 520.0)]})
    assert answer(c).text.startswith("Only `cell=lstm,clip_norm=0.25` trained (2/2 seeds): validation perplexity 515.0")
