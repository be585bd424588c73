"""A study's answer in words is right for every mix of outcomes: all trained, some failed, all failed, variants the
seeds cannot tell apart; it claims a direction only where the paired interval shows one, equivalence only within a
declared margin, and says whether its ranking held over the training budget; and the comparison never averages a
run that did not train."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tasks.analysis import stats
from tasks.analysis.answer import answer
from tasks.analysis.compare import compare, formatted

TANH_OFF, TANH_ON, LSTM_OFF, LSTM_ON = ("rnn_tanh", "null"), ("rnn_tanh", "0.25"), ("lstm", "null"), ("lstm", "0.25")


def comparison(
    cells: dict[tuple[str, str], list[tuple[str, float]]],
    metric: str = "valid_ppl",
    goal: str = "min",
    effect: dict | None = None,
    curves: dict[str, list[tuple[int, float]]] | None = None,
):
    """A recorded study as MLflow would return it: cells (cell, clip) → (outcome, metric value) per seed; the study
    file's `effect` as the flow logs it (param study.effect), and validation curves by run id."""
    grid, rows = [], []
    for (cell, clip), seeds in cells.items():
        variant = f"cell={cell},clip_norm={clip}"
        for seed, (outcome, value) in enumerate(seeds, start=1):
            grid.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "cell_key": f"{variant}/{seed}",
                    "factors": {"model.cell": cell, "train.clip_norm": clip},
                }
            )
            rows.append(
                {
                    "run_id": f"run-{variant}-{seed}",
                    "tags.rnnlab.cell": variant,
                    "params.seed": str(seed),
                    "tags.rnnlab.outcome": outcome,
                    "tags.rnnlab.outcome_reason": f"{outcome} for a reason",
                    f"metrics.{metric}": value,
                    "metrics.diverged_step": 50.0 if outcome == "diverged" else math.nan,
                    "tags.factor.model.cell": cell,
                    "tags.factor.train.clip_norm": clip,
                }
            )
    params = {"study.effect": json.dumps(effect)} if effect is not None else {}
    parent = SimpleNamespace(
        info=SimpleNamespace(run_id="parent"),
        data=SimpleNamespace(
            tags={"rnnlab.metric": metric, "rnnlab.goal": goal, "rnnlab.question": "Does clipping matter?"},
            params=params,
        ),
    )
    return compare("study", parent, grid, pd.DataFrame(rows), points=lambda run_id, key: (curves or {}).get(run_id, []))


def no_number_from_a_failed_run(text: str) -> None:
    for word in ("inf", "nan", "1.8e+308", "e+30"):
        assert word not in text.lower()


def test_all_trained_the_winner_is_named_with_its_margin_interval_and_seed_count():
    c = comparison(
        {
            TANH_OFF: [("trained", 900.0), ("trained", 910.0)],
            TANH_ON: [("trained", 850.0), ("trained", 860.0)],
            LSTM_OFF: [("trained", 700.0), ("trained", 720.0)],
            LSTM_ON: [("trained", 800.0), ("trained", 810.0)],
        }
    )
    text = answer(c).text
    assert text.startswith("`cell=lstm,clip_norm=null` is best: validation perplexity 709.9 (95% CI ")
    assert (
        "×0.882 (12% lower; 95% CI ×0.798–×0.975) against `cell=lstm,clip_norm=0.25` (805.0), lower in 2 of "
        "2 paired seeds; and lower than `cell=rnn_tanh,clip_norm=0.25` and `cell=rnn_tanh,clip_norm=null` (each "
        "paired 95% interval excludes no effect)." in text
    )
    assert "Every run trained (8 of 8)." in text
    assert text.count(". ") + 1 <= 3  # a few sentences


def test_failed_variants_are_named_in_words_and_never_averaged():
    c = comparison(
        {
            TANH_OFF: [("diverged", math.inf), ("diverged", 1.7976931348623157e308)],
            TANH_ON: [("trained", 850.0), ("trained", 860.0)],
            LSTM_OFF: [("trained", 700.0), ("failed_to_learn", 12000.0)],
            LSTM_ON: [("trained", 800.0), ("trained", 810.0)],
        }
    )
    result = answer(c)
    first = result.text.split(". ")[0]
    assert first.startswith(
        "`cell=lstm,clip_norm=null` and `cell=lstm,clip_norm=0.25` are not distinguishable with 1 "
        "paired seed on validation perplexity: 700.0 vs 805.0, ×0.875 in the one seed in which "
        "both trained"
    )
    assert first.endswith("but `cell=lstm,clip_norm=null` trained in only 1 of its 2 seeds")  # the same sentence
    assert "best" not in result.text
    assert (
        "Did not train: `cell=rnn_tanh,clip_norm=null` (diverged in 2 of 2 seeds); `cell=lstm,clip_norm=null` "
        "(failed to learn in 1 of 2 seeds)." in result.text
    )
    assert result.text.endswith(
        "How many runs trained differed with cell (in 1 of 2 settings) and clip_norm (in 2 of "
        "2 settings), smallest Fisher's exact p = 0.33."
    )
    clipping = next(line for line in result.factors if line.startswith("`train.clip_norm` null → 0.25: "))
    assert "more runs trained with cell=rnn_tanh (0/2 → 2/2, Fisher's exact p = 0.33)" in clipping
    assert "more runs trained with cell=lstm (1/2 → 2/2, Fisher's exact p = 1)" in clipping
    assert "perplexity ×1.14 in the one pair that both trained with cell=lstm" in clipping
    no_number_from_a_failed_run(result.text + "\n".join(result.basis) + formatted(c).to_string())
    row = c.table.set_index("variant").loc["cell=lstm,clip_norm=null"]
    assert (row["trained"], row["failed_to_learn"]) == (1, 1) and row["valid_ppl_mean"] == pytest.approx(700.0)
    assert math.isnan(row["valid_ppl_low"])  # one trained seed: no interval
    assert math.isnan(c.table.set_index("variant").loc["cell=rnn_tanh,clip_norm=null", "valid_ppl_mean"])


def test_a_variant_that_did_not_train_in_every_seed_is_called_best_only_with_that_in_the_same_sentence():
    c = comparison(
        {
            LSTM_OFF: [("trained", 700.0), ("trained", 705.0), ("diverged", math.inf)],
            LSTM_ON: [("trained", 800.0), ("trained", 810.0), ("trained", 805.0)],
        }
    )
    best = next(s for s in answer(c).text.split(". ") if "is best" in s)
    assert best.startswith("`cell=lstm,clip_norm=null` is best: validation perplexity 702.5")
    assert best.endswith(
        "lower in 2 of 2 paired seeds; but `cell=lstm,clip_norm=null` trained in only 2 of its 3 seeds"
    )


def test_all_failed_the_answer_says_so_and_ranks_nothing():
    c = comparison(
        {
            TANH_OFF: [("diverged", math.inf), ("diverged", 1e40)],
            TANH_ON: [("failed_to_learn", 2e5)] * 2,
            LSTM_OFF: [("diverged", 1e31), ("diverged", math.inf)],
            LSTM_ON: [("diverged", 3e4)] * 2,
        }
    )
    result = answer(c)
    assert result.text.startswith(
        "No variant trained: all 8 runs ended without a usable model (6 diverged, 2 failed "
        "to learn), so the study cannot rank the variants by validation perplexity."
    )
    assert "best" not in result.text and not c.table["best"].any()
    no_number_from_a_failed_run(result.text + "\n".join(result.basis) + formatted(c).to_string())


def test_variants_that_swap_places_between_seeds_are_not_distinguishable_and_the_seeds_power_is_stated():
    c = comparison(
        {TANH_ON: [("trained", 805.0), ("trained", 790.0)], LSTM_ON: [("trained", 795.0), ("trained", 800.0)]}
    )
    text = answer(c).text
    assert (
        "` are not distinguishable with 2 paired seeds on validation perplexity: 797.5 vs 797.5, ×1.0000 (95% CI "
        "×0.853–×1.17), lower for `cell=rnn_tanh,clip_norm=0.25` in 1 of 2; these 2 seeds could have detected "
        "×1.23 either way at 80% power." in text
    )
    assert "tied" not in text and "best" not in text and "equivalent" not in text


def test_a_large_difference_in_one_seed_and_a_small_one_the_other_way_is_neither_a_tie_nor_a_win():
    c = comparison(
        {TANH_ON: [("trained", 600.0), ("trained", 808.0)], LSTM_ON: [("trained", 720.0), ("trained", 800.0)]}
    )
    text = answer(c).text  # +20% in seed 1, −1% in seed 2: the old wording called this "tied"
    assert "are not distinguishable with 2 paired seeds" in text
    assert not any(word in text for word in ("tied", "best", "equivalent", "% lower", "% higher"))


def test_a_difference_under_one_percent_is_equivalent_only_within_a_declared_margin():
    cells = {TANH_ON: [("trained", 801.0), ("trained", 802.0)], LSTM_ON: [("trained", 800.0), ("trained", 800.5)]}
    undeclared = answer(comparison(cells)).text
    assert "not distinguishable with 2 paired seeds" in undeclared and "equivalent" not in undeclared
    declared = answer(comparison(cells, effect={"smallest": None, "margin": 1.02})).text
    assert declared.startswith(
        "`cell=lstm,clip_norm=0.25` and `cell=rnn_tanh,clip_norm=0.25` are equivalent on "
        "validation perplexity within the declared margin ×1.02: 800.2 vs 801.5, ×0.9984 (95% "
        "CI ×0.9945–×1.0024) over 2 paired seeds (two one-sided tests p = 0.0054)."
    )
    too_narrow = answer(comparison(cells, effect={"smallest": None, "margin": 1.001})).text
    assert "equivalent" not in too_narrow and "not distinguishable" in too_narrow


def test_the_basis_states_the_power_for_the_declared_smallest_effect_and_the_seeds_it_would_need():
    cells = {
        TANH_ON: [("trained", 805.0), ("trained", 790.0), ("trained", 812.0)],
        LSTM_ON: [("trained", 795.0), ("trained", 800.0), ("trained", 770.0)],
    }
    c = comparison(cells, effect={"smallest": 1.05, "margin": None})
    assert (c.smallest_effect, c.margin) == (1.05, None)
    line = next(b for b in answer(c).basis if b.startswith("`cell=lstm,clip_norm=0.25` against"))
    differences = np.log([795 / 805, 800 / 790, 770 / 812])
    sd = np.std(differences, ddof=1)
    assert f"sd of the paired log ratios {sd:.3g}" in line
    assert (
        f"for the declared smallest effect ×1.05: power {stats.power(np.log(1.05), sd, 3):.0%}, and "
        f"{stats.seeds_needed(np.log(1.05), sd)} seeds would give 80%"
    ) in line
    assert f"these 3 seeds could have detected ×{np.exp(stats.detectable_effect(sd, 3)):.3g} either way" in line
    assert comparison(cells).smallest_effect is None  # an older store: nothing declared, nothing made up


def test_bleu_is_maximised_and_compared_in_points():
    c = comparison(
        {
            LSTM_OFF: [("trained", 30.0), ("trained", 31.0), ("trained", 30.5)],
            LSTM_ON: [("trained", 33.0), ("trained", 34.0), ("trained", 33.4)],
        },
        metric="valid_bleu_greedy",
        goal="max",
    )
    text = answer(c).text
    assert text.startswith("`cell=lstm,clip_norm=0.25` is best: validation BLEU (greedy) 33.47 (95% CI ")
    assert (
        "+2.97 points (95% CI +2.82 to +3.11) against `cell=lstm,clip_norm=null` (30.50), higher in 3 of 3 "
        "paired seeds." in text
    )


def test_a_variant_ahead_over_its_own_seeds_but_behind_over_the_shared_ones_says_which_way_it_goes():
    c = comparison(
        {
            LSTM_OFF: [("trained", 600.0), ("trained", 610.0), ("trained", 400.0)],
            LSTM_ON: [("trained", 590.0), ("trained", 600.0), ("diverged", math.inf)],
        }
    )
    text = answer(c).text
    assert "best" not in text
    assert text.startswith(
        "`cell=lstm,clip_norm=null` has the lowest mean validation perplexity over its own trained "
        "seeds (527.0), but over the 2 seeds in which both trained `cell=lstm,clip_norm=0.25` is "
        "lower: ×0.983 (2% lower; 95% CI ×0.982–×0.985)."
    )


def test_a_single_trained_variant_is_reported_alone():
    c = comparison({TANH_OFF: [("diverged", math.inf)] * 2, LSTM_ON: [("trained", 510.0), ("trained", 520.0)]})
    assert answer(c).text.startswith("Only `cell=lstm,clip_norm=0.25` trained (2/2 seeds): validation perplexity 515.0")


BUDGET_CELLS = {
    TANH_ON: [("trained", 850.0), ("trained", 860.0)],
    LSTM_ON: [("trained", 800.0), ("trained", 810.0)],
    LSTM_OFF: [("trained", 700.0), ("trained", 720.0)],
}


def budget_answer(shapes: dict[tuple[str, str], list[float]]) -> str:
    """The answer with validation curves: each run's final value times `shapes[cell]` at steps 100, 200, ..."""
    curves = {}
    for (cell, clip), seeds in BUDGET_CELLS.items():
        variant = f"cell={cell},clip_norm={clip}"
        for seed, (_, final) in enumerate(seeds, start=1):
            curves[f"run-{variant}-{seed}"] = [(100 * (i + 1), final * f) for i, f in enumerate(shapes[cell, clip])]
    return answer(comparison(BUDGET_CELLS, curves=curves)).text


def test_the_answer_says_whether_its_ranking_held_at_every_validation_point_of_the_budget():
    same = [2.0, 1.5, 1.1, 1.0]
    text = budget_answer({TANH_ON: same, LSTM_ON: same, LSTM_OFF: same})
    assert (
        "Over the budget, the ranking of the 3 trained variants' means holds at every validation point that "
        "every trained run logged (4 validation points, steps 100–400: Kendall's τ = 1 against the final "
        "ranking)." in text
    )
    late = budget_answer({TANH_ON: same, LSTM_ON: same, LSTM_OFF: [3.0, 1.5, 1.1, 1.0]})
    assert (
        "holds from step 200 on (3 of 4 validation points, steps 100–400); at step 100 it differed (Kendall's "
        "τ = -0.33)." in late
    )
    flipped = budget_answer({TANH_ON: same, LSTM_ON: same, LSTM_OFF: [2.0, 1.5, 1.1, 1.3]})
    assert "does not hold at the last validation point every trained run logged: at step 400 it differed" in flipped
    two = {TANH_ON: [("trained", 850.0), ("trained", 860.0)], LSTM_OFF: [("trained", 700.0), ("trained", 720.0)]}
    curves = {
        f"run-cell={cell},clip_norm={clip}-{seed}": [
            (100, 500.0 if cell == "rnn_tanh" else 900.0),
            (200, 800.0 if cell == "rnn_tanh" else 750.0),
        ]
        for (cell, clip) in two
        for seed in (1, 2)
    }
    assert (
        "holds from step 200 on (1 of 2 validation points, steps 100–200); at step 100 it was reversed."
        in answer(comparison(two, curves=curves)).text
    )
    assert "Over the budget" not in answer(comparison(BUDGET_CELLS)).text  # no curves: nothing claimed
