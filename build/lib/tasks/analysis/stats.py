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
- Outcomes (trained or not) between two levels of a factor: Fisher's exact test on the 2×2 counts (two-sided).
- Power (Cohen 1988): of the two-sided paired t-test, from the noncentral t, taking the observed standard deviation
  of the paired differences as the true one: the smallest effect the seeds could detect at 80% power, the power
  they had for a declared effect, and the seeds that effect would need.
- Equivalence within a declared margin: two one-sided t-tests (TOST, Schuirmann 1987) on the paired differences.
- One seed, on the evaluation data: a paired bootstrap over sentences (Koehn 2004; sacrebleu's for BLEU), two-sided
  and null-centred, which says whether a difference is larger than the test set's sampling noise, not whether it
  holds across seeds. The best variant's tests against each other variant are one family: Holm's correction.
- Over the training budget: Kendall's tau between the variants' ranking at each validation step and the final one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from models.metrics import perplexity
from tasks.record.outcome import TRAINED

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
    return min(1.0, 2 * 0.5**pairs) if pairs else 1.0


POWER = 0.8  # the power a study should have for the smallest effect it cares about (Cohen's convention)
MOST_SEEDS = 10_000  # seeds_needed looks no further


def paired_sd(differences: np.ndarray) -> float:
    """The standard deviation of paired differences (n − 1 in the denominator); NaN from fewer than two."""
    return float(np.std(differences, ddof=1)) if len(differences) > 1 else math.nan


def power(effect: float, sd: float, pairs: int, alpha: float = ALPHA) -> float:
    """The power of the two-sided paired t-test at level `alpha` to detect a true mean difference `effect`, with
    `pairs` pairs whose differences have standard deviation `sd` (taken as the true one): exact, from the
    noncentral t distribution. NaN where it cannot be estimated (fewer than two pairs, no spread)."""
    if pairs < 2 or not sd > 0 or not math.isfinite(sd):
        return math.nan
    df = pairs - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) * math.sqrt(pairs) / sd
    upper, lower = stats.nct.sf(critical, df, shift), stats.nct.cdf(-critical, df, shift)
    # SciPy's noncentral t gives NaN far out in its tails (e.g. cdf(-12.7, 1, 40)): there the lower tail is
    # negligible, and the upper one is the normal approximation's
    upper = stats.norm.sf(critical - shift) if math.isnan(upper) else upper
    return float(upper + (0.0 if math.isnan(lower) else lower))


def detectable_effect(sd: float, pairs: int, alpha: float = ALPHA, wanted: float = POWER) -> float:
    """The smallest true mean difference (either way) that `pairs` pairs with spread `sd` detect with power
    `wanted` (two-sided paired t-test, noncentral t); NaN where power cannot be estimated."""
    if math.isnan(power(1.0, sd, pairs, alpha)):
        return math.nan
    # power grows with the effect; in units of sd, 10^4 is past 80% power for every n >= 2 (n = 2: ~22)
    return float(optimize.brentq(lambda e: power(e * sd, sd, pairs, alpha) - wanted, 1e-9, 1e4, xtol=1e-10)) * sd


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, wanted: float = POWER) -> int | None:
    """The fewest pairs that detect a true mean difference `effect` with power `wanted`, given spread `sd`;
    None where more than MOST_SEEDS would be needed, or where it cannot be estimated (no spread)."""
    if not sd > 0 or not math.isfinite(sd) or effect == 0:
        return None
    if power(effect, sd, MOST_SEEDS, alpha) < wanted:
        return None
    low, high = 2, MOST_SEEDS  # power rises with the pairs: bisect for the first that reaches `wanted`
    while low < high:
        middle = (low + high) // 2
        if power(effect, sd, middle, alpha) >= wanted:
            high = middle
        else:
            low = middle + 1
    return low


def equivalence_p(differences: np.ndarray, margin: float) -> float:
    """Two one-sided tests (TOST, Schuirmann 1987) that the true mean of paired differences lies within
    (−margin, margin): the larger of the two one-sided t-test p-values; below alpha, the difference is smaller than
    the margin (equivalent). Equivalently: the 90% t interval lies inside the margin. NaN from fewer than two pairs."""
    n = len(differences)
    if n < 2:
        return math.nan
    mean, sd = float(np.mean(differences)), paired_sd(differences)
    if sd <= 1e-12 * max(1.0, abs(mean)):  # the same difference every time: inside the margin or not
        return 0.0 if abs(mean) < margin else 1.0
    error = sd / math.sqrt(n)
    above = stats.t.sf((mean + margin) / error, n - 1)  # H0: mean <= -margin
    below = stats.t.cdf((mean - margin) / error, n - 1)  # H0: mean >= margin
    return float(max(above, below))


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: reject those below alpha, and the family-wise error rate (any false
    rejection among all the tests) stays at most alpha, whatever the tests' dependence. Written out because SciPy
    has only false-discovery-rate control and statsmodels (which has Holm) is not a dependency: sort ascending,
    multiply the k-th smallest by (m − k + 1), carry the running maximum, cap at 1. NaNs stay NaN, uncounted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted


def ranking_over_steps(curves: pd.DataFrame, final: pd.Series, log: bool) -> pd.DataFrame:
    """At each validation step that every run in `curves` logged (columns variant, seed, step, value): Kendall's tau
    between the variants' mean there (geometric for a perplexity) and `final` (variant → the final value, e.g. the
    table's mean), over the variants in both. One row per step: step, tau; NaN where a ranking has ties only."""
    variants = [v for v in final.index if v in set(curves["variant"])]
    mine = curves[curves["variant"].isin(variants)]
    if len(variants) < 2 or mine.empty:
        return pd.DataFrame(columns=["step", "tau"])
    runs = mine[["variant", "seed"]].drop_duplicates()
    logged = mine.groupby("step")[["variant", "seed"]].apply(lambda g: len(g.drop_duplicates()))
    steps = sorted(logged.index[logged == len(runs)])
    values = mine[mine["step"].isin(steps)].assign(value=lambda f: np.log(f["value"]) if log else f["value"])
    means = values.pivot_table(index="step", columns="variant", values="value", aggfunc="mean")[variants]
    taus = [float(stats.kendalltau(means.loc[step].to_numpy(), final[variants].to_numpy()).statistic) for step in steps]
    return pd.DataFrame({"step": steps, "tau": taus})


ALL = "all"  # the stratum of a factor's effect pooled over the other factors' values


def factor_effects(runs: pd.DataFrame, factors: dict[str, list[str]], metric: str) -> pd.DataFrame:
    """For each factor and each value after its first: the change from the first value, paired on the other factors
    and the seed; within each combination of the other factors' values (`stratum`, e.g. "cell=lstm": a factor may
    matter for one cell and not another) and, when there are several, pooled over them (stratum "all").
    `runs` has one row per cell × seed: factor.<key>, seed, outcome and the metric.

    Outcomes are compared as counts (trained / runs at each value, Fisher's exact test); the metric only over pairs
    in which both runs trained: the mean paired difference (of log perplexity for perplexities: its exp is the
    geometric mean of the ratios) with a t interval, the differences' standard deviation (`sd`, for power), and how
    many pairs moved each way (sign test)."""
    rows = []
    for factor, values in factors.items():
        others = [k for k in factors if k != factor]
        strata = (
            [()]
            if not others
            else list(runs[[f"factor.{k}" for k in others]].drop_duplicates().itertuples(index=False, name=None))
        )
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


def effect(
    runs: pd.DataFrame, factor: str, original: str, value: str, others: list[str], metric: str, stratum: str
) -> dict:
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
    return {
        "factor": factor,
        "from": original,
        "to": value,
        "stratum": stratum,
        "runs_from": trained_base[1],
        "runs_to": trained[1],
        "trained_from": trained_base[0],
        "trained_to": trained[0],
        "outcome_p": float(stats.fisher_exact(counts)[1]) if trained[1] and trained_base[1] else math.nan,
        "pairs": interval.n,
        "pairs_not_trained": len(paired) - interval.n,
        "mean_difference": interval.mean,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "sd": paired_sd(differences),
        "up": int((differences > 0).sum()),
        "down": int((differences < 0).sum()),
        "sign_p": sign_test(differences),
        "log": log,
    }


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


def perplexity_bootstrap(
    system: pd.DataFrame, baseline: pd.DataFrame, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedResult:
    """Paired bootstrap over sentences of the corpus perplexity difference (system − baseline), two-sided.

    Each frame has one row per test sentence: summed `nll` and `tokens`. The p-value is null-centred: the resampled
    differences, shifted by the observed one so that they spread around no difference (the null), count where they
    land at least as far from zero as the observed difference, either way: (count + 1) / (resamples + 1)
    (Efron & Tibshirani 1993, ch. 16; sacrebleu's paired bootstrap centres its resamples too). The share of
    resamples whose sign flips (Koehn 2004) is a one-sided p: compared with 0.05 it rejects two identical systems
    about twice as often as it should (tests/test_tasks_stats.py simulates it)."""
    if len(system) != len(baseline) or not (system["tokens"].to_numpy() == baseline["tokens"].to_numpy()).all():
        raise ValueError("the two systems were scored on different sentences: cannot pair them")
    rng = np.random.default_rng(seed)
    tokens, a, b = (frame.to_numpy(dtype=float) for frame in (system["tokens"], system["nll"], baseline["nll"]))
    idx = rng.integers(0, len(tokens), size=(resamples, len(tokens)))
    sampled_tokens = tokens[idx].sum(axis=1)
    deltas = np.exp(a[idx].sum(axis=1) / sampled_tokens) - np.exp(b[idx].sum(axis=1) / sampled_tokens)
    ppl_a, ppl_b = perplexity(a.sum() / tokens.sum()), perplexity(b.sum() / tokens.sum())
    observed = ppl_a - ppl_b
    as_far = int((np.abs(deltas - observed) >= abs(observed)).sum())
    low, high = np.percentile(deltas, [2.5, 97.5])
    return PairedResult(ppl_b, ppl_a, observed, float(low), float(high), (as_far + 1) / (resamples + 1))


def bleu_bootstrap(
    system: list[str], baseline: list[str], references: list[str], resamples: int = RESAMPLES
) -> PairedResult:
    """sacrebleu's paired bootstrap resampling (its own implementation and seed) of system vs baseline BLEU.

    sacrebleu (after multeval) deliberately gives p = 1/(n+1) when the two scores are identical ("a zero
    difference should not be attributed to chance"); a report must not call identical systems different, so an
    observed difference of exactly zero is reported as p = 1. sacrebleu gives an interval for each system's
    score, not for the difference: the interval here is left empty."""
    from sacrebleu.metrics import BLEU  # lazy: sacrebleu, for translation studies only
    from sacrebleu.significance import PairedTest

    os.environ.setdefault("SACREBLEU_SEED", str(SEED))
    test = PairedTest(
        [("baseline", baseline), ("system", system)],
        {"BLEU": BLEU()},
        [references],
        test_type="bs",
        n_samples=resamples,
    )
    _, scores = test()
    base, sys_ = scores["BLEU"]
    difference = sys_.score - base.score
    p_value = 1.0 if difference == 0 else float(sys_.p_value)
    return PairedResult(base.score, sys_.score, difference, math.nan, math.nan, p_value)
