"""A study's answer in words, computed from its comparison: which variant wins, by how much and in how many seeds,
what did not train, and what each factor changed. One to three sentences, then the numbers behind them.

Written for every mix of outcomes: all trained, some failed, all failed, a tie. A variant that did not train is
never ranked by a number; a comparison is only made between runs that both trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks import stats
from tasks.compare import Comparison, outcome_words
from tasks.outcome import DIVERGED, FAILED_TO_LEARN, TRAINED

NOUNS = {"valid_ppl": "validation perplexity", "test_ppl": "test perplexity", "valid_bleu_greedy": "validation BLEU "
         "(greedy)", "valid_bleu": "validation BLEU", "test_bleu": "test BLEU", "test_bleu_greedy": "test BLEU (greedy)"}
TIE_RATIO = 0.01  # perplexities within 1% of each other (mean paired log ratio) are a tie
TIE_POINTS = 0.1  # BLEU within 0.1 points


@dataclass(frozen=True)
class Answer:
    text: str  # one to three plain sentences
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
    return f"×{ratio:.3g}" if abs(ratio - 1) >= 0.01 else f"×{ratio:.4f}"


def change(c: Comparison, mean_difference: float, *more: str) -> str:
    """A paired difference in words: '×0.878 (12% lower)', '+1.23 points', with `more` in the parentheses."""
    if c.log_scale:
        ratio = math.exp(mean_difference)
        percent = abs(ratio - 1) * 100
        notes = [f"{percent:.0f}% {'lower' if ratio < 1 else 'higher'}" if percent >= 1 else
                 "no difference" if percent < 0.05 else f"{percent:.1f}% {'lower' if ratio < 1 else 'higher'}", *more]
        return f"{factor(c, mean_difference)} ({'; '.join(notes)})"
    return f"{factor(c, mean_difference)} points" + (f" ({'; '.join(more)})" if more else "")


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


def winner_sentence(c: Comparison, trained: pd.DataFrame) -> str:
    best = trained[trained["best"]].iloc[0]
    best_words = f"{noun(c.metric)} {value(c, best[f'{c.metric}_mean'])}{interval(c, best)}"
    caveat = "" if best["trained"] == best["seeds"] else f"; but it trained in only {best['trained']} of its {best['seeds']} seeds"
    others = trained[~trained["best"]].sort_values(f"{c.metric}_mean", ascending=c.goal == "min")
    if others.empty:
        return f"Only `{best['variant']}` trained ({best['trained']}/{best['seeds']} seeds): {best_words}{caveat}."
    runner = others.iloc[0]
    differences = paired(c, best["variant"], runner["variant"])
    if len(differences):
        mean = float(differences.mean())
        wins = better_count(c, differences)
        close = abs(mean) < (TIE_RATIO if c.log_scale else TIE_POINTS)
        if close or wins < len(differences):
            return (f"`{best['variant']}` and `{runner['variant']}` are tied on {noun(c.metric)}: "
                    f"{value(c, best[f'{c.metric}_mean'])} vs {value(c, runner[f'{c.metric}_mean'])}, "
                    f"{change(c, mean)}, and the first was {c.better} in {wins} of {len(differences)} paired seeds"
                    f"{caveat}.")
        how = f"{change(c, mean)} against `{runner['variant']}` ({value(c, runner[f'{c.metric}_mean'])}), " \
              f"{c.better} in {wins} of {len(differences)} paired seeds"
    else:
        how = f"against `{runner['variant']}` ({value(c, runner[f'{c.metric}_mean'])}), which trained in no seed " \
              f"in which it did: the two cannot be paired"
    return f"`{best['variant']}` is best: {best_words}, {how}{caveat}."


def how_it_ended(row) -> str:
    """'diverged in 2 of 2 seeds', '1 diverged and 1 failed to learn, of 3 seeds'."""
    ended = [(getattr(row, o), w) for o, w in ((DIVERGED, "diverged"), (FAILED_TO_LEARN, "failed to learn"),
                                               ("missing", "without a result")) if getattr(row, o)]
    if len(ended) == 1:
        return f"{ended[0][1]} in {ended[0][0]} of {row.seeds} seeds"
    return " and ".join(f"{n} {w}" for n, w in ended) + f", of {row.seeds} seeds"


def failures_sentence(c: Comparison) -> str:
    table = c.table
    failed = table[table["trained"] < table["seeds"]]
    if failed.empty:
        return f"Every run trained ({int(table['trained'].sum())} of {int(table['seeds'].sum())})."
    return "Did not train: " + "; ".join(f"`{row.variant}` ({how_it_ended(row)})"
                                         for row in failed.itertuples(index=False)) + "."


def setting(stratum: str) -> str:
    return "" if stratum == stats.ALL else f" with {stratum}"


def factor_bullet(c: Comparison, effects: pd.DataFrame) -> str:
    """What one factor's change did, setting by setting (each combination of the other factors' values): where it
    changed how many runs trained, and what it did to the metric where both runs of a pair trained."""
    first = effects.iloc[0]
    strata = effects[effects["stratum"] != stats.ALL] if len(effects) > 1 else effects
    parts = []
    for _, e in strata.iterrows():
        counts = f"{e['trained_from']}/{e['runs_from']} → {e['trained_to']}/{e['runs_to']}"
        test = "" if math.isnan(e["outcome_p"]) or e["trained_from"] == e["trained_to"] else \
            f", Fisher's exact p = {e['outcome_p']:.2g}"
        if e["trained_to"] > e["trained_from"]:
            parts.append(f"more runs trained{setting(e['stratum'])} ({counts}{test})")
        elif e["trained_to"] < e["trained_from"]:
            parts.append(f"fewer runs trained{setting(e['stratum'])} ({counts}{test})")
        elif e["trained_to"] == 0:
            parts.append(f"no run trained either way{setting(e['stratum'])}")
        if e["pairs"]:
            moved = e["down"] if e["mean_difference"] < 0 else e["up"]
            direction = "lower" if e["mean_difference"] < 0 else "higher"
            parts.append(f"{'perplexity' if c.log_scale else noun(c.metric)} "
                         + change(c, e["mean_difference"], f"{direction} in {moved} of {e['pairs']} pairs")
                         + setting(e["stratum"]))
    return f"`{first['factor']}` {first['from']} → {first['to']}: " + "; ".join(parts) + "."


def decided_sentence(effects: pd.DataFrame) -> str | None:
    """Which factors changed whether runs trained, and in how many settings; None when no factor did."""
    strata = effects[effects["stratum"] != stats.ALL] if (effects["stratum"] != stats.ALL).any() else effects
    parts = []
    for name, group in strata.groupby("factor", sort=False):
        moved = int((group["trained_from"] != group["trained_to"]).sum())
        if moved:
            parts.append(f"{name.rpartition('.')[2]} (in {moved} of {len(group)} settings)")
    if not parts:
        return None
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Whether a run trained depended on {listed}."


def answer(c: Comparison) -> Answer:
    table = c.table
    if c.runs.empty:
        return Answer("No cell of this execution has a result yet.", [], [], pd.DataFrame())
    effects = stats.factor_effects(c.runs, c.factors, c.metric)
    trained = table[table["trained"] > 0]
    if trained.empty:
        counts = {o: int(table[o].sum()) for o in (DIVERGED, FAILED_TO_LEARN)}
        first = (f"No variant trained: all {int(table['seeds'].sum())} runs ended without a usable model "
                 f"({counts[DIVERGED]} diverged, {counts[FAILED_TO_LEARN]} failed to learn), so the study cannot "
                 f"rank the variants by {noun(c.metric)}.")
        sentences = [first, failures_sentence(c).replace("Did not train: ", "By variant: ")]
    else:
        sentences = [winner_sentence(c, trained), failures_sentence(c)]
    bullets = []
    if not effects.empty:
        decided = decided_sentence(effects)
        if decided and not trained.empty:
            sentences.append(decided)
        bullets = [factor_bullet(c, group) for _, group in effects.groupby(["factor", "to"], sort=False)]
    return Answer(" ".join(sentences), bullets, basis(c), effects)


def basis(c: Comparison) -> list[str]:
    lines = []
    for row in c.table.itertuples(index=False):
        mine = c.runs[c.runs["variant"] == row.variant]
        line = f"`{row.variant}`: {outcome_words(row)}"
        if row.trained:
            mean = getattr(row, f"{c.metric}_mean")
            low, high = getattr(row, f"{c.metric}_low"), getattr(row, f"{c.metric}_high")
            line += (f"; {noun(c.metric)} {value(c, mean)} ({'geometric mean' if c.log_scale else 'mean'} over "
                     f"{row.trained} seed{'s' if row.trained > 1 else ''}"
                     + ("" if math.isnan(low) else f", 95% CI {value(c, low)}–{value(c, high)}") + ")")
        stopped = mine[mine["outcome"] == DIVERGED]["diverged_step"].dropna()
        if len(stopped):
            line += f"; diverged runs stopped at step {', '.join(str(int(s)) for s in stopped)}"
        failed = mine[mine["outcome"] == FAILED_TO_LEARN]["reason"]
        if len(failed):
            line += f"; failed to learn: {failed.iloc[0]}"
        lines.append(line)
    seeds = int(c.table["seeds"].max()) if not c.table.empty else 0
    if seeds < 6:
        lines.append(f"With {seeds} seed{'s' if seeds != 1 else ''} per variant the evidence is thin: a 95% interval "
                     f"over {seeds} values is a Student-t interval with {max(seeds - 1, 0)} degree(s) of freedom, "
                     f"wide by construction, and a sign test over {seeds} pairs cannot go below p = "
                     f"{stats.smallest_sign_p(seeds):.2g}. Consistency across seeds is reported instead of significance.")
    return lines
