"""The statistics of a report: paired factor effects with confidence intervals, and paired significance tests
(a bootstrap over test sentences for perplexity, sacrebleu's paired bootstrap for BLEU). Deterministic: fixed seeds."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from models.metrics import perplexity

SEED = 12345
RESAMPLES = 1000
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def mean_interval(differences: list[float], confidence: float = 0.95) -> Interval:
    """Mean of paired differences with a Student-t interval (none from a single pair)."""
    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    with np.errstate(over="ignore", invalid="ignore"):  # differences between blown-up models: inf
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def factor_effects(runs: pd.DataFrame, factors: dict[str, list[str]], metric: str) -> pd.DataFrame:
    """For each factor and each non-baseline value: metric(value) − metric(first value), paired on the other factors
    and the seed. `runs` has one row per cell × seed: columns factor.<key>, seed, diverged, and the metric."""
    rows = []
    for factor, values in factors.items():
        others = [f"factor.{k}" for k in factors if k != factor] + ["seed"]
        base = runs[runs[f"factor.{factor}"] == values[0]].set_index(others)
        for value in values[1:]:
            changed = runs[runs[f"factor.{factor}"] == value].set_index(others)
            paired = changed.join(base, lsuffix="", rsuffix="_base", how="inner")
            broken = int((paired["diverged"] | paired["diverged_base"]).sum())
            ok = paired[~(paired["diverged"] | paired["diverged_base"])]
            interval = mean_interval(list(ok[metric] - ok[f"{metric}_base"]))
            rows.append({"factor": factor, "from": values[0], "to": value, "pairs": interval.n, "diverged_pairs": broken,
                         "mean_difference": interval.mean, "ci_low": interval.low, "ci_high": interval.high})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PairedResult:
    baseline: float
    system: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def perplexity_bootstrap(system: pd.DataFrame, baseline: pd.DataFrame, resamples: int = RESAMPLES,
                         seed: int = SEED) -> PairedResult:
    """Paired bootstrap over sentences of the corpus perplexity difference (system − baseline).

    Each frame has one row per test sentence: summed `nll` and `tokens`. The p-value is the share of resamples in
    which the difference does not keep the observed sign (as in Koehn 2004 and sacrebleu's paired bootstrap)."""
    if len(system) != len(baseline) or not (system["tokens"].to_numpy() == baseline["tokens"].to_numpy()).all():
        raise ValueError("the two systems were scored on different sentences: cannot pair them")
    rng = np.random.default_rng(seed)
    tokens, a, b = (frame.to_numpy(dtype=float) for frame in (system["tokens"], system["nll"], baseline["nll"]))
    idx = rng.integers(0, len(tokens), size=(resamples, len(tokens)))
    sampled_tokens = tokens[idx].sum(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):  # a blown-up model's perplexity is inf, not an error
        deltas = np.exp(a[idx].sum(axis=1) / sampled_tokens) - np.exp(b[idx].sum(axis=1) / sampled_tokens)
    ppl_a, ppl_b = perplexity(a.sum() / tokens.sum()), perplexity(b.sum() / tokens.sum())
    observed = ppl_a - ppl_b
    flipped = int((deltas >= 0).sum()) if observed < 0 else int((deltas <= 0).sum())
    low, high = np.percentile(deltas, [2.5, 97.5])
    return PairedResult(ppl_b, ppl_a, observed, float(low), float(high), (flipped + 1) / (resamples + 1))


def bleu_bootstrap(system: list[str], baseline: list[str], references: list[str],
                   resamples: int = RESAMPLES) -> PairedResult:
    """sacrebleu's paired bootstrap resampling (its own implementation and seed) of system vs baseline BLEU.

    sacrebleu (after multeval) deliberately gives p = 1/(n+1) when the two scores are identical ("a zero
    difference should not be attributed to chance"); a report must not call identical systems different, so an
    observed difference of exactly zero is reported as p = 1. sacrebleu gives an interval for each system's
    score, not for the difference: the interval here is left empty."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    os.environ.setdefault("SACREBLEU_SEED", str(SEED))
    test = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": BLEU()}, [references],
                      test_type="bs", n_samples=resamples)
    _, scores = test()
    base, sys_ = scores["BLEU"]
    difference = sys_.score - base.score
    p_value = 1.0 if difference == 0 else float(sys_.p_value)
    return PairedResult(base.score, sys_.score, difference, math.nan, math.nan, p_value)
