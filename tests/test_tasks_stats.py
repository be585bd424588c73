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


def test_a_factor_effect_pairs_cells_on_the_other_factors_and_the_seed():
    runs = pd.DataFrame([
        {"factor.a": a, "factor.b": b, "seed": s, "diverged": False, "m": 10 + (2 if a == "y" else 0) + s * 0.1 + (b == "q")}
        for a in ("x", "y") for b in ("p", "q") for s in (1, 2, 3)])
    effects = stats.factor_effects(runs, {"a": ["x", "y"], "b": ["p", "q"]}, "m").set_index("factor")
    assert effects.loc["a", "pairs"] == 6 and effects.loc["a", "mean_difference"] == pytest.approx(2.0)
    assert effects.loc["b", "mean_difference"] == pytest.approx(1.0)
    assert effects.loc["a", "ci_low"] == pytest.approx(2.0) == effects.loc["a", "ci_high"]  # the same gap every pair


def test_pairs_with_a_diverged_run_are_counted_not_averaged():
    runs = pd.DataFrame([{"factor.a": a, "seed": s, "diverged": a == "y" and s == 1, "m": 5.0 if a == "x" else 4.0}
                         for a in ("x", "y") for s in (1, 2, 3)])
    effect = stats.factor_effects(runs, {"a": ["x", "y"]}, "m").iloc[0]
    assert (effect["pairs"], effect["diverged_pairs"], effect["mean_difference"]) == (2, 1, -1.0)
