"""The report's statistics give the known answer on constructed cases."""

import numpy as np
import pandas as pd
import pytest

from tasks import stats


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
    runs = pd.DataFrame([
        {"factor.a": a, "factor.b": b, "seed": s, "outcome": "trained", "m": 10 + (2 if a == "y" else 0) + s * 0.1 + (b == "q")}
        for a in ("x", "y") for b in ("p", "q") for s in (1, 2, 3)])
    effects = stats.factor_effects(runs, {"a": ["x", "y"], "b": ["p", "q"]}, "m")
    pooled = effects[effects["stratum"] == "all"].set_index("factor")
    assert pooled.loc["a", "pairs"] == 6 and pooled.loc["a", "mean_difference"] == pytest.approx(2.0)
    assert pooled.loc["b", "mean_difference"] == pytest.approx(1.0)
    assert pooled.loc["a", "ci_low"] == pytest.approx(2.0) == pooled.loc["a", "ci_high"]  # the same gap every pair
    within = effects[(effects["factor"] == "a") & (effects["stratum"] != "all")].set_index("stratum")
    assert set(within.index) == {"b=p", "b=q"} and (within["pairs"] == 3).all()
    assert list(within["up"]) == [3, 3] and list(within["down"]) == [0, 0]


def test_perplexities_are_compared_as_ratios_in_log_space():
    runs = pd.DataFrame([{"factor.a": a, "seed": s, "outcome": "trained", "valid_ppl": (100.0 if a == "x" else 50.0) * s}
                         for a in ("x", "y") for s in (1, 2, 3)])
    effect = stats.factor_effects(runs, {"a": ["x", "y"]}, "valid_ppl").iloc[0]
    assert effect["mean_difference"] == pytest.approx(np.log(0.5))  # half the perplexity in every pair
    assert (effect["down"], effect["up"], effect["sign_p"]) == (3, 0, pytest.approx(0.25))


def test_runs_that_did_not_train_are_counted_never_averaged():
    outcomes = {("x", 1): "trained", ("x", 2): "trained", ("x", 3): "trained",
                ("y", 1): "diverged", ("y", 2): "trained", ("y", 3): "failed_to_learn"}
    runs = pd.DataFrame([{"factor.a": a, "seed": s, "outcome": outcomes[a, s],
                          "m": 5.0 if a == "x" else (4.0 if outcomes[a, s] == "trained" else np.inf)}
                         for a in ("x", "y") for s in (1, 2, 3)])
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
    assert interval.low * interval.high == pytest.approx(500.0 ** 2)  # symmetric in log space, not in perplexity
    half = stats.stats.t.ppf(0.975, 2) * np.std(np.log(values), ddof=1) / np.sqrt(3)
    assert interval.high == pytest.approx(500.0 * np.exp(half))


def test_with_few_pairs_a_sign_test_cannot_be_significant_and_says_how_far_it_can_go():
    assert stats.sign_test(np.array([-1.0, -2.0])) == pytest.approx(0.5)
    assert stats.smallest_sign_p(2) == 0.5 and stats.smallest_sign_p(5) == 0.0625 and stats.smallest_sign_p(6) < 0.05
    assert stats.sign_test(np.array([0.0, 0.0])) == 1.0
