"""The report's statistics give the known answer on constructed cases."""

import numpy as np
import pandas as pd
import pytest

from tasks.analysis import stats


def sentences(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, 30, n)
    return pd.DataFrame({"nll": tokens * rng.uniform(4.0, 6.0, n), "tokens": tokens})


def test_identical_language_models_are_not_significantly_different():
    base = sentences()
    result = stats.perplexity_bootstrap(base.copy(), base)
    assert result.difference == 0 and not result.significant


def test_a_clearly_better_language_model_is_significant_and_its_interval_excludes_zero():
    base = sentences()
    better = base.assign(nll=base["nll"] - 0.3 * base["tokens"])  # 0.3 nats per token better everywhere
    result = stats.perplexity_bootstrap(better, base)
    assert result.difference < 0 and result.significant and result.ci_high < 0
    assert result.system == pytest.approx(np.exp(better["nll"].sum() / base["tokens"].sum()))


def test_systems_that_disagree_sentence_by_sentence_but_not_overall_are_not_significantly_different():
    base = sentences()
    noise = np.random.default_rng(1).normal(0, 3.0, len(base))
    noisy = base.assign(nll=base["nll"] + noise - noise.mean())  # each sentence differs; the corpus total does not
    result = stats.perplexity_bootstrap(noisy, base)
    assert result.difference == pytest.approx(0, abs=1e-9) and not result.significant
    assert result.ci_low < 0 < result.ci_high


def test_systems_scored_on_different_sentences_cannot_be_paired():
    with pytest.raises(ValueError, match="different sentences"):
        stats.perplexity_bootstrap(sentences(10), sentences(11))


REFS = [f"a man in a {c} shirt is riding a bike number {i} today" for i, c in enumerate(["red", "blue", "green"] * 40)]


def test_identical_translations_are_not_significantly_different_in_bleu():
    hyps = [r.replace("riding", "on") for r in REFS]
    result = stats.bleu_bootstrap(hyps, list(hyps), REFS)
    assert result.difference == 0 and not result.significant


def test_clearly_better_translations_are_significant_in_bleu():
    bad = [" ".join(reversed(r.split())) for r in REFS]
    result = stats.bleu_bootstrap(REFS, bad, REFS)
    assert result.system == pytest.approx(100) and result.difference > 50 and result.significant


def test_a_factor_effect_pairs_cells_on_the_other_factors_and_the_seed_within_and_across_strata():
    runs = pd.DataFrame(
        [
            {
                "factor.a": a,
                "factor.b": b,
                "seed": s,
                "outcome": "trained",
                "m": 10 + (2 if a == "y" else 0) + s * 0.1 + (b == "q"),
            }
            for a in ("x", "y")
            for b in ("p", "q")
            for s in (1, 2, 3)
        ]
    )
    effects = stats.factor_effects(runs, {"a": ["x", "y"], "b": ["p", "q"]}, "m")
    pooled = effects[effects["stratum"] == "all"].set_index("factor")
    assert pooled.loc["a", "pairs"] == 6 and pooled.loc["a", "mean_difference"] == pytest.approx(2.0)
    assert pooled.loc["b", "mean_difference"] == pytest.approx(1.0)
    assert pooled.loc["a", "ci_low"] == pytest.approx(2.0) == pooled.loc["a", "ci_high"]  # the same gap every pair
    within = effects[(effects["factor"] == "a") & (effects["stratum"] != "all")].set_index("stratum")
    assert set(within.index) == {"b=p", "b=q"} and (within["pairs"] == 3).all()
    assert list(within["up"]) == [3, 3] and list(within["down"]) == [0, 0]


def test_perplexities_are_compared_as_ratios_in_log_space():
    runs = pd.DataFrame(
        [
            {"factor.a": a, "seed": s, "outcome": "trained", "valid_ppl": (100.0 if a == "x" else 50.0) * s}
            for a in ("x", "y")
            for s in (1, 2, 3)
        ]
    )
    effect = stats.factor_effects(runs, {"a": ["x", "y"]}, "valid_ppl").iloc[0]
    assert effect["mean_difference"] == pytest.approx(np.log(0.5))  # half the perplexity in every pair
    assert (effect["down"], effect["up"], effect["sign_p"]) == (3, 0, pytest.approx(0.25))


def test_runs_that_did_not_train_are_counted_never_averaged():
    outcomes = {
        ("x", 1): "trained",
        ("x", 2): "trained",
        ("x", 3): "trained",
        ("y", 1): "diverged",
        ("y", 2): "trained",
        ("y", 3): "failed_to_learn",
    }
    runs = pd.DataFrame(
        [
            {
                "factor.a": a,
                "seed": s,
                "outcome": outcomes[a, s],
                "m": 5.0 if a == "x" else (4.0 if outcomes[a, s] == "trained" else np.inf),
            }
            for a in ("x", "y")
            for s in (1, 2, 3)
        ]
    )
    effect = stats.factor_effects(runs, {"a": ["x", "y"]}, "m").iloc[0]
    assert (effect["pairs"], effect["pairs_not_trained"], effect["mean_difference"]) == (1, 2, -1.0)
    assert (effect["trained_from"], effect["trained_to"], effect["runs_to"]) == (3, 1, 3)
    assert effect["outcome_p"] == pytest.approx(0.4)  # Fisher's exact test on 3/3 vs 1/3 trained
    assert np.isnan(effect["ci_low"])  # one pair: no interval, rather than a made-up one


def test_statistics_refuse_infinite_values_and_give_no_interval_from_one_value():
    with pytest.raises(ValueError, match="non-finite"):
        stats.mean_interval([500.0, np.inf], log=True)
    with pytest.raises(ValueError, match="non-finite"):
        stats.mean_interval([1.7976931348623157e308, 500.0, np.nan])
    one = stats.mean_interval([515.0], log=True)
    assert one.mean == pytest.approx(515.0) and np.isnan(one.low) and np.isnan(one.high)


def test_a_geometric_mean_and_its_interval_come_from_log_perplexity():
    values = [400.0, 500.0, 625.0]  # log-symmetric around 500
    interval = stats.mean_interval(values, log=True)
    assert interval.mean == pytest.approx(500.0)
    assert interval.low * interval.high == pytest.approx(500.0**2)  # symmetric in log space, not in perplexity
    half = stats.stats.t.ppf(0.975, 2) * np.std(np.log(values), ddof=1) / np.sqrt(3)
    assert interval.high == pytest.approx(500.0 * np.exp(half))


def test_with_few_pairs_a_sign_test_cannot_be_significant_and_says_how_far_it_can_go():
    assert stats.sign_test(np.array([-1.0, -2.0])) == pytest.approx(0.5)
    assert stats.smallest_sign_p(2) == 0.5 and stats.smallest_sign_p(5) == 0.0625 and stats.smallest_sign_p(6) < 0.05
    assert stats.sign_test(np.array([0.0, 0.0])) == 1.0


def simulated_pair(rng: np.random.Generator, n: int = 3000, worse_by: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two systems scored on the same `n` sentences: each sentence has a difficulty both share (per-token NLL around 5
    nats, as a word-level LM's), plus each system's own noise; the baseline is `worse_by` nats per token worse."""
    tokens = rng.integers(5, 40, n)
    difficulty = rng.normal(5.0, 0.6, n)
    system = tokens * (difficulty + rng.normal(0, 0.4, n))
    baseline = tokens * (difficulty + worse_by + rng.normal(0, 0.4, n))
    return pd.DataFrame({"nll": system, "tokens": tokens}), pd.DataFrame({"nll": baseline, "tokens": tokens})


def test_the_perplexity_bootstrap_rejects_two_identical_systems_at_its_nominal_rate():
    """400 true-null pairs (both systems draw their sentences' NLL from one distribution): a two-sided test at 5%
    rejects about 5% of them. The one-sided share of flipped signs, read as two-sided, rejected about twice that."""
    rng = np.random.default_rng(2025)
    p = np.array([stats.perplexity_bootstrap(*simulated_pair(rng), resamples=199, seed=i).p_value for i in range(400)])
    assert 0.025 <= (p < 0.05).mean() <= 0.075
    assert 0.3 < np.median(p) < 0.7  # under the null, p spreads over (0, 1], not piled near 0 or 1


def test_the_perplexity_bootstrap_detects_a_true_five_percent_difference_and_its_direction():
    rng = np.random.default_rng(7)
    results = [
        stats.perplexity_bootstrap(*simulated_pair(rng, worse_by=np.log(1.05)), resamples=199, seed=i)
        for i in range(100)
    ]
    assert np.mean([r.significant for r in results]) >= 0.95
    assert all(r.difference < 0 and r.ci_high < 0 for r in results if r.significant)  # the system is the better one


def test_holm_adjusts_the_smallest_p_by_the_family_size_and_keeps_the_order():
    adjusted = stats.holm([0.01, 0.04, 0.03, np.nan, 0.5])
    assert adjusted[:3] == pytest.approx([0.04, 0.09, 0.09])  # 0.01×4; 0.03×3; 0.04×2 = 0.08, raised to 0.09
    assert np.isnan(adjusted[3]) and adjusted[4] == pytest.approx(0.5)
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == pytest.approx([0.02])  # one test: nothing to correct


def test_power_of_the_paired_t_test_matches_the_textbook_values():
    """G*Power (paired t-test, two-sided α = 0.05): effect size d = 1 with 10 pairs has power 0.803; d = 0.5 needs
    34 pairs, d = 1 needs 10 for 80%."""
    assert stats.power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=1e-3)
    assert stats.power(-2.0, 2.0, 10) == pytest.approx(0.8031, abs=1e-3)  # either way, in any unit
    assert (stats.seeds_needed(0.5, 1.0), stats.seeds_needed(1.0, 1.0)) == (34, 10)
    assert stats.detectable_effect(1.0, 10) == pytest.approx(1.0, abs=0.01)
    assert stats.detectable_effect(1.0, 2) > stats.detectable_effect(1.0, 3) > 3  # two seeds see only huge effects


def test_power_is_not_made_up_where_the_seeds_cannot_estimate_it():
    assert np.isnan(stats.power(0.05, 0.02, 1)) and np.isnan(stats.detectable_effect(stats.paired_sd(np.ones(1)), 1))
    assert np.isnan(stats.power(0.05, 0.0, 3))  # no spread: power is not estimable, not 100%
    assert stats.seeds_needed(0.05, 0.0) is None
    assert stats.seeds_needed(1e-4, 1.0) is None  # beyond MOST_SEEDS


def test_two_one_sided_tests_call_equivalent_only_what_lies_within_the_margin():
    tight = np.log(np.array([0.998, 1.001, 0.999, 1.000]))  # within ×1.002 every time
    assert stats.equivalence_p(tight, np.log(1.02)) < 0.05
    assert stats.equivalence_p(tight, np.log(1.0005)) > 0.05  # a margin narrower than the spread: not shown
    wide = np.log(np.array([0.90, 1.10]))  # centred on no difference, but the seeds disagree by ±10%
    assert stats.equivalence_p(wide, np.log(1.02)) > 0.05
    assert np.isnan(stats.equivalence_p(np.array([0.0]), 0.1))


def test_a_factor_effect_reports_the_spread_of_its_paired_differences():
    runs = pd.DataFrame(
        [
            {"factor.a": a, "seed": s, "outcome": "trained", "m": 10.0 + (s * 0.5 if a == "y" else 0)}
            for a in ("x", "y")
            for s in (1, 2, 3)
        ]
    )
    effect = stats.factor_effects(runs, {"a": ["x", "y"]}, "m").iloc[0]
    assert effect["sd"] == pytest.approx(0.5)  # differences 0.5, 1.0, 1.5


def curves(shapes: dict[str, list[float]], seeds: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"variant": v, "seed": s, "step": 100 * (i + 1), "value": value * (1 + 0.01 * s)}
            for v, values in shapes.items()
            for s in range(1, seeds + 1)
            for i, value in enumerate(values)
        ]
    )


def test_the_ranking_over_steps_is_kendalls_tau_against_the_final_one_at_steps_every_run_logged():
    final = pd.Series({"a": 100.0, "b": 200.0, "c": 300.0})
    found = stats.ranking_over_steps(
        curves({"a": [900, 500, 150], "b": [800, 450, 210], "c": [700, 600, 310]}), final, log=True
    )
    assert list(found["step"]) == [100, 200, 300]
    assert found["tau"].tolist() == pytest.approx([-1.0, 1 / 3, 1.0])
    short = curves({"a": [900, 500, 150], "b": [800, 450], "c": [700, 600, 310]})
    assert list(stats.ranking_over_steps(short, final, log=True)["step"]) == [100, 200]  # b stopped logging
    assert stats.ranking_over_steps(curves({"a": [1, 2]}), final, log=True).empty  # one variant: nothing to rank
