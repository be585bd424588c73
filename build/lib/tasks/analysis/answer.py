"""A study's answer in words, computed from its comparison: which variant the evidence puts first, by how much and
in how many seeds, what did not train, what each factor changed and whether the ranking holds over the budget. A few
plain sentences, then the numbers behind them.

The words claim no more than the paired seeds support:
- A direction ("best", "lower", "higher") only where the paired 95% interval of the effect (Student-t over the seeds
  in which both variants trained; in log space for a perplexity) excludes no effect. Otherwise the two are "not
  distinguishable with n seeds", with the smallest effect those seeds could have detected at 80% power.
- "Equivalent" only within the margin the study file declared (`effect.margin`), by two one-sided tests at 5%.
- A variant that did not train in some of its seeds is never put first without saying so in the same sentence; it
  is never ranked by a number from a run that did not train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.analysis import stats
from tasks.analysis.compare import Comparison, outcome_words
from tasks.record.outcome import DIVERGED, FAILED_TO_LEARN, TRAINED

NOUNS = {
    "valid_ppl": "validation perplexity",
    "test_ppl": "test perplexity",
    "valid_bleu_greedy": "validation BLEU (greedy)",
    "valid_bleu": "validation BLEU",
    "test_bleu": "test BLEU",
    "test_bleu_greedy": "test BLEU (greedy)",
}
POWER_WORDS = (
    f"paired t-test, two-sided α = {stats.ALPHA}, power from the noncentral t with the observed standard "
    "deviation of the paired differences taken as the true one"
)


@dataclass(frozen=True)
class Answer:
    text: str  # a few plain sentences
    factors: list[str]  # what each factor's change did, setting by setting, one line each (Markdown)
    basis: list[str]  # the numbers behind them, per variant, one line each (Markdown)
    effects: pd.DataFrame  # each factor's effect (stats.factor_effects)


def noun(metric: str) -> str:
    return NOUNS.get(metric, metric)


def value(c: Comparison, v: float) -> str:
    return f"{v:,.1f}" if c.log_scale else f"{v:.2f}"


def interval(c: Comparison, row: pd.Series) -> str:
    low, high = row[f"{c.metric}_low"], row[f"{c.metric}_high"]
    return "" if math.isnan(low) else f" (95% CI {value(c, low)}–{value(c, high)})"


def factor(c: Comparison, mean_difference: float) -> str:
    """A paired difference as a number: a perplexity ratio ('×0.878'), or points ('+1.23')."""
    if not c.log_scale:
        return f"{mean_difference:+.2f}"
    ratio = math.exp(mean_difference)
    return f"×{ratio:#.3g}" if abs(ratio - 1) >= 0.01 else f"×{ratio:.4f}"  # '#': ×0.800, not ×0.8


def span(c: Comparison, low: float, high: float) -> str:
    """A paired 95% interval: '95% CI ×0.85–×0.91', '95% CI -0.40 to +2.10'."""
    return (
        f"95% CI {factor(c, low)}–{factor(c, high)}" if c.log_scale else f"95% CI {factor(c, low)} to {factor(c, high)}"
    )


def change(c: Comparison, mean_difference: float, *more: str, direction: bool = True) -> str:
    """A paired difference in words: '×0.878 (12% lower)', '+1.23 points', with `more` in the parentheses; without
    `direction` (a difference its interval does not separate from none) no 'lower'/'higher'."""
    if c.log_scale:
        ratio = math.exp(mean_difference)
        percent = abs(ratio - 1) * 100
        way = "lower" if ratio < 1 else "higher"
        notes = (
            [
                f"{percent:.0f}% {way}"
                if percent >= 1
                else "no difference"
                if percent < 0.05
                else f"{percent:.1f}% {way}"
            ]
            if direction
            else []
        ) + list(more)
        return factor(c, mean_difference) + (f" ({'; '.join(notes)})" if notes else "")
    return f"{factor(c, mean_difference)} points" + (f" ({'; '.join(more)})" if more else "")


def effect_size(c: Comparison, effect: float) -> str:
    """An effect on the comparison scale (a log ratio, or points) as people read it, either way: '×1.31', '2.10
    points'."""
    return factor(c, abs(effect)) if c.log_scale else f"{abs(effect):.2f} points"


def declared(c: Comparison, amount: float | None) -> float | None:
    """A declared effect (a perplexity ratio, or points) on the comparison scale (a log ratio, or points)."""
    if amount is None:
        return None
    return math.log(amount) if c.log_scale else float(amount)


def paired(c: Comparison, a: str, b: str) -> np.ndarray:
    """Differences a − b (of log perplexity, or of the metric) over the seeds in which both variants trained."""
    runs = c.runs[c.runs["outcome"] == TRAINED]
    values = runs.pivot_table(index="seed", columns="variant", values=c.metric, aggfunc="first")
    if a not in values or b not in values:
        return np.array([])
    both = values[[a, b]].dropna()
    x, y = both[a].to_numpy(dtype=float), both[b].to_numpy(dtype=float)
    return np.log(x) - np.log(y) if c.log_scale else x - y


def better_count(c: Comparison, differences: np.ndarray) -> int:
    return int((differences < 0).sum() if c.goal == "min" else (differences > 0).sum())


@dataclass(frozen=True)
class Contrast:
    """The first-placed variant against one other, over the seeds in which both trained (differences first − other,
    on the comparison scale)."""

    other: str
    differences: np.ndarray
    mean: float
    low: float  # the paired Student-t 95% interval; NaN from fewer than two pairs
    high: float
    sd: float
    direction: str | None  # "better" / "worse" (for the first) where the interval excludes no effect, else None
    equivalence_p: float  # two one-sided tests within the declared margin; NaN without one (or two pairs)

    @property
    def pairs(self) -> int:
        return len(self.differences)

    @property
    def equivalent(self) -> bool:
        return self.equivalence_p < stats.ALPHA


def contrast(c: Comparison, first: str, other: str) -> Contrast:
    differences = paired(c, first, other)
    found = stats.mean_interval(differences) if len(differences) else stats.Interval(math.nan, math.nan, math.nan, 0)
    direction = None
    if found.low > 0 or found.high < 0:  # NaN compares False: no interval, no direction
        lower = found.high < 0
        direction = "better" if lower == (c.goal == "min") else "worse"
    margin = declared(c, c.margin)
    return Contrast(
        other,
        differences,
        found.mean,
        found.low,
        found.high,
        stats.paired_sd(differences),
        direction,
        math.nan if margin is None else stats.equivalence_p(differences, margin),
    )


def detectable_words(c: Comparison, k: Contrast) -> str:
    """What the seeds could have seen: 'these 3 seeds could have detected ×1.31 either way at 80% power'."""
    if k.pairs < 2:
        return "one pair gives no interval and no power estimate"
    smallest = stats.detectable_effect(k.sd, k.pairs)
    if math.isnan(smallest):
        return "the paired differences did not vary, so power cannot be estimated"
    return f"these {k.pairs} seeds could have detected {effect_size(c, smallest)} either way at {stats.POWER:.0%} power"


def mean_of(c: Comparison, row: pd.Series) -> str:
    return value(c, row[f"{c.metric}_mean"])


def winner_sentence(c: Comparison, trained: pd.DataFrame) -> str:
    best = trained[trained["best"]].iloc[0]
    name = best["variant"]
    best_words = f"{noun(c.metric)} {mean_of(c, best)}{interval(c, best)}"
    caveat = (
        ""
        if best["trained"] == best["seeds"]
        else f"; but `{name}` trained in only {best['trained']} of its {best['seeds']} seeds"
    )
    others = trained[~trained["best"]].sort_values(f"{c.metric}_mean", ascending=c.goal == "min")
    if others.empty:
        return f"Only `{name}` trained ({best['trained']}/{best['seeds']} seeds): {best_words}{caveat}."
    means = others.set_index("variant")
    contrasts = [contrast(c, name, other) for other in others["variant"]]
    beaten = [k for k in contrasts if k.direction == "better"]

    def listed(ks: list[Contrast]) -> str:
        names = [f"`{k.other}`" for k in ks]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    if len(beaten) == len(contrasts):  # the intersection of one-to-one tests: no multiplicity to correct
        runner = contrasts[0]
        within = (
            f"; the difference lies within the declared margin {effect_size(c, declared(c, c.margin))} (two "
            f"one-sided tests p = {runner.equivalence_p:.2g}), too small to matter"
            if runner.equivalent
            else ""
        )
        rest = (
            f"; and {c.better} than {listed(contrasts[1:])} (each paired 95% interval excludes no effect)"
            if len(contrasts) > 1
            else ""
        )
        return (
            f"`{name}` is best: {best_words}, {change(c, runner.mean, span(c, runner.low, runner.high))} against "
            f"`{runner.other}` ({value(c, means.loc[runner.other, f'{c.metric}_mean'])}), {c.better} in "
            f"{better_count(c, runner.differences)} of {runner.pairs} paired seeds{within}{rest}{caveat}."
        )
    open_ = [k for k in contrasts if k.direction is None]
    worse = [k for k in contrasts if k.direction == "worse"]
    if open_:
        k = open_[0]
        theirs = value(c, means.loc[k.other, f"{c.metric}_mean"])
        if k.equivalent:
            main = (
                f"`{name}` and `{k.other}` are equivalent on {noun(c.metric)} within the declared margin "
                f"{effect_size(c, declared(c, c.margin))}: {mean_of(c, best)} vs {theirs}, "
                f"{change(c, k.mean, span(c, k.low, k.high), direction=False)} over {k.pairs} paired seeds "
                f"(two one-sided tests p = {k.equivalence_p:.2g})"
            )
        elif k.pairs == 0:
            main = (
                f"`{name}` ({noun(c.metric)} {mean_of(c, best)}) and `{k.other}` ({theirs}) cannot be compared: "
                "they trained in no common seed"
            )
        else:
            seeds = f"{k.pairs} paired seed{'s' if k.pairs > 1 else ''}"
            numbers = (
                change(c, k.mean, span(c, k.low, k.high), direction=False)
                if k.pairs > 1
                else f"{change(c, k.mean, direction=False)} in the one seed in which both trained"
            )
            main = (
                f"`{name}` and `{k.other}` are not distinguishable with {seeds} on {noun(c.metric)}: "
                f"{mean_of(c, best)} vs {theirs}, {numbers}, {c.better} for `{name}` in "
                f"{better_count(c, k.differences)} of {k.pairs}; {detectable_words(c, k)}"
            )
        more = f"; nor is `{name}` distinguished from {listed(open_[1:])}" if len(open_) > 1 else ""
    else:  # every other variant is either behind the first or ahead of it over the seeds they share
        k = worse[0]
        main = (
            f"`{name}` has the {'lowest' if c.goal == 'min' else 'highest'} mean {noun(c.metric)} over its own "
            f"trained seeds ({mean_of(c, best)}), but over the {k.pairs} seeds in which both trained `{k.other}` "
            f"is {c.better}: {change(c, -k.mean, span(c, -k.high, -k.low))}"
        )
        more = ""
    more += (
        f"; `{name}` is {c.better} than {listed(beaten)} (each paired 95% interval excludes no effect)"
        if beaten
        else ""
    )
    reversed_ = [w for w in worse if w is not k]
    more += (
        f"; over the seeds both trained, {listed(reversed_)} {'is' if len(reversed_) == 1 else 'are'} "
        f"{c.better} than `{name}` (each paired 95% interval excludes no effect)"
        if reversed_
        else ""
    )
    return f"{main}{more}{caveat}."


def budget_sentence(c: Comparison) -> str | None:
    """Whether the final ranking of the trained variants (by the table's mean) already held during training:
    Kendall's tau at each validation step that every trained run logged. None where fewer than two variants have
    curves."""
    final = c.table[c.table["trained"] > 0].set_index("variant")[f"{c.metric}_mean"].dropna()
    taus = stats.ranking_over_steps(c.curves, final, c.log_scale).dropna()
    if taus.empty:
        return None
    ranked = len(set(c.curves["variant"]) & set(final.index))
    steps = taus["step"].astype(int)
    points = (
        f"{len(taus)} validation points, steps {steps.iloc[0]}–{steps.iloc[-1]}"
        if len(taus) > 1
        else f"one validation point, step {steps.iloc[0]}"
    )
    held = np.isclose(taus["tau"].to_numpy(), 1.0)
    what = f"the ranking of the {ranked} trained variants' means"
    if held.all():
        return (
            f"Over the budget, {what} holds at every validation point that every trained run logged ({points}: "
            f"Kendall's τ = 1 against the final ranking)."
        )

    last_off = int(np.flatnonzero(~held)[-1])
    step, tau = int(taus["step"].iloc[last_off]), float(taus["tau"].iloc[last_off])
    how = "was reversed" if np.isclose(tau, -1.0) else f"differed (Kendall's τ = {tau:.2f})"
    if held[-1]:
        return (
            f"Over the budget, {what} holds from step {int(taus['step'].iloc[last_off + 1])} on "
            f"({len(held) - last_off - 1} of {points}); at step {step} it {how}."
        )
    return (
        f"Over the budget, {what} does not hold at the last validation point every trained run logged: at step "
        f"{step} it {how} against the final ranking, which is each run's selected checkpoint ({points})."
    )


def how_it_ended(row) -> str:
    """'diverged in 2 of 2 seeds', '1 diverged and 1 failed to learn, of 3 seeds'."""
    ended = [
        (getattr(row, o), w)
        for o, w in ((DIVERGED, "diverged"), (FAILED_TO_LEARN, "failed to learn"), ("missing", "without a result"))
        if getattr(row, o)
    ]
    if len(ended) == 1:
        return f"{ended[0][1]} in {ended[0][0]} of {row.seeds} seeds"
    return " and ".join(f"{n} {w}" for n, w in ended) + f", of {row.seeds} seeds"


def failures_sentence(c: Comparison) -> str:
    table = c.table
    failed = table[table["trained"] < table["seeds"]]
    if failed.empty:
        return f"Every run trained ({int(table['trained'].sum())} of {int(table['seeds'].sum())})."
    return (
        "Did not train: "
        + "; ".join(f"`{row.variant}` ({how_it_ended(row)})" for row in failed.itertuples(index=False))
        + "."
    )


def setting(stratum: str) -> str:
    return "" if stratum == stats.ALL else f" with {stratum}"


def metric_change(c: Comparison, e: pd.Series) -> str:
    """A factor's effect on the metric in one setting, with a direction only where its interval excludes none."""
    what = "perplexity" if c.log_scale else noun(c.metric)
    pairs = int(e["pairs"])
    if pairs == 1:
        return f"{what} {change(c, e['mean_difference'], direction=False)} in the one pair that both trained"
    moved = f"lower in {e['down']}, higher in {e['up']} of {pairs} pairs"
    within = span(c, e["ci_low"], e["ci_high"])
    if e["ci_low"] > 0 or e["ci_high"] < 0:
        return f"{what} {change(c, e['mean_difference'], within, moved)}"
    unclear = f"not distinguishable with {pairs} pairs"
    return f"{what} {change(c, e['mean_difference'], within, unclear, direction=False)}"


def factor_bullet(c: Comparison, effects: pd.DataFrame) -> str:
    """What one factor's change did, setting by setting (each combination of the other factors' values): where it
    changed how many runs trained, and what it did to the metric where both runs of a pair trained."""
    first = effects.iloc[0]
    strata = effects[effects["stratum"] != stats.ALL] if len(effects) > 1 else effects
    parts = []
    for _, e in strata.iterrows():
        if not (e["runs_from"] and e["runs_to"]):  # a setting the grid excludes on one side: nothing to compare
            continue
        counts = f"{e['trained_from']}/{e['runs_from']} → {e['trained_to']}/{e['runs_to']}"
        test = (
            ""
            if math.isnan(e["outcome_p"]) or e["trained_from"] == e["trained_to"]
            else f", Fisher's exact p = {e['outcome_p']:.2g}"
        )
        if e["trained_to"] > e["trained_from"]:
            parts.append(f"more runs trained{setting(e['stratum'])} ({counts}{test})")
        elif e["trained_to"] < e["trained_from"]:
            parts.append(f"fewer runs trained{setting(e['stratum'])} ({counts}{test})")
        elif e["trained_to"] == 0:
            parts.append(f"no run trained either way{setting(e['stratum'])}")
        if e["pairs"]:
            parts.append(metric_change(c, e) + setting(e["stratum"]))
    return (
        f"`{first['factor']}` {first['from']} → {first['to']}: "
        + ("; ".join(parts) or "no setting has runs at both values")
        + "."
    )


def decided_sentence(effects: pd.DataFrame) -> str | None:
    """Which factors went with a different count of trained runs, in how many settings, and the smallest Fisher p
    among them; None when no factor did."""
    strata = effects[effects["stratum"] != stats.ALL] if (effects["stratum"] != stats.ALL).any() else effects
    parts, moved_p = [], []
    for name, group in strata.groupby("factor", sort=False):
        moved = group[
            (group["trained_from"] != group["trained_to"]) & (group["runs_from"] > 0) & (group["runs_to"] > 0)
        ]
        if len(moved) and len(group) == 1:  # one setting: say the counts themselves
            e = moved.iloc[0]
            test = "" if math.isnan(e["outcome_p"]) else f" (Fisher's exact test, two-sided p = {e['outcome_p']:.2g})"
            parts.append(
                f"{name.rpartition('.')[2]} {e['from']} → {e['to']}: {e['trained_from']}/{e['runs_from']} → "
                f"{e['trained_to']}/{e['runs_to']}{test}"
            )
        elif len(moved):
            parts.append(f"{name.rpartition('.')[2]} (in {len(moved)} of {len(group)} settings)")
            moved_p += list(moved["outcome_p"].dropna())
    if not parts:
        return None
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    smallest = f", smallest Fisher's exact p = {min(moved_p):.2g}" if moved_p else ""
    return f"How many runs trained differed with {listed}{smallest}."


def answer(c: Comparison) -> Answer:
    table = c.table
    if c.runs.empty:
        return Answer("No cell of this execution has a result yet.", [], [], pd.DataFrame())
    effects = stats.factor_effects(c.runs, c.factors, c.metric)
    trained = table[table["trained"] > 0]
    if trained.empty:
        counts = {o: int(table[o].sum()) for o in (DIVERGED, FAILED_TO_LEARN)}
        first = (
            f"No variant trained: all {int(table['seeds'].sum())} runs ended without a usable model "
            f"({counts[DIVERGED]} diverged, {counts[FAILED_TO_LEARN]} failed to learn), so the study cannot "
            f"rank the variants by {noun(c.metric)}."
        )
        sentences = [first, failures_sentence(c).replace("Did not train: ", "By variant: ")]
    else:
        sentences = [winner_sentence(c, trained), failures_sentence(c)]
        budget = budget_sentence(c)
        if budget:
            sentences.append(budget)
    bullets = []
    if not effects.empty:
        decided = decided_sentence(effects)
        if decided and not trained.empty:
            sentences.append(decided)
        bullets = [factor_bullet(c, group) for _, group in effects.groupby(["factor", "to"], sort=False)]
    return Answer(" ".join(sentences), bullets, basis(c), effects)


def contrast_line(c: Comparison, first: str, k: Contrast) -> str:
    """One comparison of the answer with its evidence: interval, spread, power, equivalence."""
    line = f"`{first}` against `{k.other}`: "
    if k.pairs == 0:
        return line + "no seed in which both trained: no paired comparison"
    scale = "log ratios" if c.log_scale else "differences"
    if k.pairs == 1:
        line += f"{factor(c, k.mean)} in the one seed in which both trained; {detectable_words(c, k)}"
    else:
        verdict = {
            "better": f"{c.better} for `{first}`",
            "worse": f"{c.better} for `{k.other}`",
            None: f"not distinguishable with {k.pairs} seeds",
        }[k.direction]
        line += (
            f"{factor(c, k.mean)} ({span(c, k.low, k.high)}, Student-t over {k.pairs} paired seeds; sd of the "
            f"paired {scale} {k.sd:.3g}): {verdict}; {detectable_words(c, k)}"
        )
    smallest = declared(c, c.smallest_effect)
    if smallest is not None:
        had = stats.power(smallest, k.sd, k.pairs)
        needed = stats.seeds_needed(smallest, k.sd)
        line += f"; for the declared smallest effect {effect_size(c, smallest)}: " + (
            "power cannot be estimated (it needs two paired seeds that differ)"
            if math.isnan(had)
            else f"power {had:.0%}, and {f'{needed} seeds' if needed else f'more than {stats.MOST_SEEDS:,} seeds'} "
            f"would give {stats.POWER:.0%}"
        )
    if c.margin is not None and k.pairs > 1:
        line += (
            f"; within the declared margin {effect_size(c, declared(c, c.margin))}: two one-sided tests "
            f"p = {k.equivalence_p:.2g} ({'equivalent' if k.equivalent else 'equivalence not shown'})"
        )
    return line


def basis(c: Comparison) -> list[str]:
    lines = []
    for row in c.table.itertuples(index=False):
        mine = c.runs[c.runs["variant"] == row.variant]
        line = f"`{row.variant}`: {outcome_words(row)}"
        if row.trained:
            mean = getattr(row, f"{c.metric}_mean")
            low, high = getattr(row, f"{c.metric}_low"), getattr(row, f"{c.metric}_high")
            line += (
                f"; {noun(c.metric)} {value(c, mean)} ({'geometric mean' if c.log_scale else 'mean'} over "
                f"{row.trained} seed{'s' if row.trained > 1 else ''}"
                + ("" if math.isnan(low) else f", 95% CI {value(c, low)}–{value(c, high)}")
                + ")"
            )
        stopped = mine[mine["outcome"] == DIVERGED]["diverged_step"].dropna()
        if len(stopped):
            line += f"; diverged runs stopped at step {', '.join(str(int(s)) for s in stopped)}"
        failed = mine[mine["outcome"] == FAILED_TO_LEARN]["reason"]
        if len(failed):
            line += f"; failed to learn: {failed.iloc[0]}"
        lines.append(line)
    trained = c.table[c.table["trained"] > 0]
    if len(trained) > 1 and trained["best"].any():
        first = trained[trained["best"]].iloc[0]["variant"]
        others = trained[~trained["best"]].sort_values(f"{c.metric}_mean", ascending=c.goal == "min")["variant"]
        lines += [contrast_line(c, first, contrast(c, first, other)) for other in others]
        lines.append(
            f"How these were judged: a direction only where the paired 95% interval excludes no effect, and "
            f"'best' only where every such interval against the others does (an intersection-union test, "
            f"which needs no multiplicity correction); "
            f"power: {POWER_WORDS}"
            + (
                ""
                if c.margin is not None
                else "; no equivalence margin was declared (`effect.margin` in the "
                "study file), so no two variants are called equivalent"
            )
            + (
                ""
                if c.smallest_effect is not None
                else "; no smallest effect of interest was declared (`effect.smallest`)"
            )
            + "."
        )
    seeds = int(c.table["seeds"].max()) if not c.table.empty else 0
    if seeds < 6:
        lines.append(
            f"With {seeds} seed{'s' if seeds != 1 else ''} per variant the evidence is thin: a 95% interval "
            f"over {seeds} values is a Student-t interval with {max(seeds - 1, 0)} degree(s) of freedom, "
            f"wide by construction, and a sign test over {seeds} pairs cannot go below p = "
            f"{stats.smallest_sign_p(seeds):.2g}."
        )
    return lines
