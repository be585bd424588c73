"""The statistics of a comparison. Only runs that trained enter them: a diverged run, or one that failed to learn,
is counted (and its counts compared), never averaged. Deterministic: fixed seeds.

Which tests, and why (the literature on comparing training runs across seeds):
- One variant over its seeds: Reimers & Gurevych (2017) show that one run per variant says little, and report the
  distribution over seeds. Perplexities are aggregated in log space (the mean NLL per token): the geometric mean,
  with a Student-t 95% interval on log perplexity, turned back into perplexity. BLEU is aggregated as it is.
- One factor (other factors and the seed held fixed): the paired difference of log perplexity (a perplexity ratio)
  or of BLEU, with a Student-t 95% interval, and the exact two-sided sign test (binomial): Dror et al. (2018) advise
  a test that does not assume normality where it cannot be checked, as with 2-5 seeds. Agarwal et al.'s (2021)
  stratified bootstrap needs more runs than a study usually has: a percentile interval of two values is just their
  range, falsely narrow, so it is not used here.
- Outcomes (trained or not) between two levels of a factor: Fisher's exact test on the 2×2 counts.
- One seed, on the evaluation data: a paired bootstrap over sentences (Koehn 2004; sacrebleu's for BLEU), which
  says whether a difference is larger than the test set's sampling noise, not whether it holds across seeds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from models.metrics import perplexity
from tasks.outcome import TRAINED

SEED = 12345
RESAMPLES = 1000
ALPHA = 0.05
CONFIDENCE = 0.95


def on_log_scale(metric: str) -> bool:
    """Perplexities are compared as ratios and aggregated in log space; BLEU, chrF and the like as they are."""
    return "ppl" in metric


@dataclass(frozen=True)
class Interval:
    """A mean (on the metric's own scale: a geometric mean for perplexities) and its 95% interval; no interval
    from fewer than two values."""

    mean: float
    low: float
    high: float
    n: int


def mean_interval(values: list[float] | np.ndarray, log: bool = False) -> Interval:
    """Mean of finite values with a Student-t interval; `log`: in log space, turned back (a geometric mean)."""
    x = np.asarray(values, dtype=float)
    if not np.isfinite(x).all() or (log and (x <= 0).any()):
        raise ValueError(f"statistics over non-finite or non-positive values: {x.tolist()}")
    if log:
        x = np.log(x)
    n = len(x)
    back = np.exp if log else (lambda v: v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(float(back(mean)), math.nan, math.nan, 1)
    if float(np.ptp(x)) <= 1e-12 * max(1.0, abs(mean)):  # the same value every time (up to rounding): no spread
        return Interval(float(back(mean)), float(back(mean)), float(back(mean)), n)
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return Interval(float(back(mean)), float(back(low)), float(back(high)), n)


def sign_test(differences: np.ndarray) -> float:
    """Exact two-sided sign test of paired differences (zeros dropped); 1 when nothing is left to test."""
    nonzero = differences[differences != 0]
    if len(nonzero) == 0:
        return 1.0
    return float(stats.binomtest(int((nonzero > 0).sum()), len(nonzero), 0.5).pvalue)


def smallest_sign_p(pairs: int) -> float:
    """The smallest two-sided p-value a sign test over `pairs` pairs can give: all of them one way."""
    return min(1.0, 2 * 0.5 ** pairs) if pairs else 1.0


ALL = "all"  # the stratum of a factor's effect pooled over the other factors' values


def factor_effects(runs: pd.DataFrame, factors: dict[str, list[str]], metric: str) -> pd.DataFrame:
    """For each factor and each value after its first: the change from the first value, paired on the other factors
    and the seed; within each combination of the other factors' values (`stratum`, e.g. "cell=lstm": a factor may
    matter for one cell and not another) and, when there are several, pooled over them (stratum "all").
    `runs` has one row per cell × seed: factor.<key>, seed, outcome and the metric.

    Outcomes are compared as counts (trained / runs at each value, Fisher's exact test); the metric only over pairs
    in which both runs trained: the mean paired difference (of log perplexity for perplexities: its exp is the
    geometric mean of the ratios) with a t interval, and how many pairs moved each way (sign test)."""
    rows = []
    for factor, values in factors.items():
        others = [k for k in factors if k != factor]
        strata = [()] if not others else list(runs[[f"factor.{k}" for k in others]].drop_duplicates()
                                              .itertuples(index=False, name=None))
        for value in values[1:]:
            for stratum in strata:
                mine = runs
                for key, level in zip(others, stratum):
                    mine = mine[mine[f"factor.{key}"] == level]
                name = ",".join(f"{k.rpartition('.')[2]}={v}" for k, v in zip(others, stratum)) or ALL
                rows.append(effect(mine, factor, values[0], value, others, metric, name))
            if len(strata) > 1:
                rows.append(effect(runs, factor, values[0], value, others, metric, ALL))
    return pd.DataFrame(rows)


def effect(runs: pd.DataFrame, factor: str, original: str, value: str, others: list[str], metric: str,
           stratum: str) -> dict:
    log = on_log_scale(metric)
    keys = [f"factor.{k}" for k in others] + ["seed"]
    base = runs[runs[f"factor.{factor}"] == original].set_index(keys)
    changed = runs[runs[f"factor.{factor}"] == value].set_index(keys)
    paired = changed.join(base, lsuffix="", rsuffix="_base", how="inner")
    both = paired[(paired["outcome"] == TRAINED) & (paired["outcome_base"] == TRAINED)]
    a, b = both[metric].to_numpy(dtype=float), both[f"{metric}_base"].to_numpy(dtype=float)
    differences = np.log(a) - np.log(b) if log else a - b
    interval = mean_interval(differences)
    trained = (int((changed["outcome"] == TRAINED).sum()), len(changed))
    trained_base = (int((base["outcome"] == TRAINED).sum()), len(base))
    counts = [[trained_base[0], trained_base[1] - trained_base[0]], [trained[0], trained[1] - trained[0]]]
    return {"factor": factor, "from": original, "to": value, "stratum": stratum,
            "runs_from": trained_base[1], "runs_to": trained[1], "trained_from": trained_base[0], "trained_to": trained[0],
            "outcome_p": float(stats.fisher_exact(counts)[1]) if trained[1] and trained_base[1] else math.nan,
            "pairs": interval.n, "pairs_not_trained": len(paired) - interval.n,
            "mean_difference": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
            "up": int((differences > 0).sum()), "down": int((differences < 0).sum()),
            "sign_p": sign_test(differences), "log": log}


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
    from sacrebleu.metrics import BLEU  # lazy: sacrebleu, for translation studies only
    from sacrebleu.significance import PairedTest

    os.environ.setdefault("SACREBLEU_SEED", str(SEED))
    test = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": BLEU()}, [references],
                      test_type="bs", n_samples=resamples)
    _, scores = test()
    base, sys_ = scores["BLEU"]
    difference = sys_.score - base.score
    p_value = 1.0 if difference == 0 else float(sys_.p_value)
    return PairedResult(base.score, sys_.score, difference, math.nan, math.nan, p_value)
