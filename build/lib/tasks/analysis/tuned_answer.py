"""What a tuned study's trials say: the expected best score against the number of trials per arm (Dodge et al. 2019,
"Show Your Work"), how each arm's trials ended, and the tuned answer beside the base recipe's. Pure: pandas, numpy and
the answers' own contrasts, no training library (a report reads it).

The expected-best curve is written here: a closed form of a few lines that no maintained library exposes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.analysis.answer import contrast

PRUNED = "pruned"  # a trial's outcome beside trained, diverged and failed_to_learn (tasks/record/outcome.py)


@dataclass(frozen=True)
class Curve:
    """Expected best score of the best of n trials, n = 1..N, with a bootstrap band (over the trials)."""

    n: np.ndarray
    expected: np.ndarray
    low: np.ndarray
    high: np.ndarray


def expected_best(values: list[float] | np.ndarray, goal: str, n_max: int | None = None) -> np.ndarray:
    """E[best of n trials drawn with replacement from these N] for n = 1..n_max (Dodge et al. 2019, eq. 1): with the
    values sorted from worst to best, v(1..N), E = Σ_i v(i) · [(i/N)^n − ((i−1)/N)^n]. A trial that diverged counts
    with its value (±inf for the worst): it is a draw the search can make."""
    v = np.asarray(values, dtype=float)
    v = np.sort(v)[::-1] if goal == "min" else np.sort(v)  # worst first
    total = len(v)
    i = np.arange(1, total + 1)
    out = []
    for n in range(1, (n_max or total) + 1):
        weights = (i / total) ** n - ((i - 1) / total) ** n
        finite = weights > 0
        with np.errstate(invalid="ignore"):
            out.append(
                float(np.sum(v[finite] * weights[finite]))
                if np.all(np.isfinite(v[finite]))
                else (math.inf if goal == "min" else -math.inf)
            )
    return np.array(out)


def expected_best_curve(values: list[float], goal: str, resamples: int = 1000, seed: int = 0) -> Curve:
    values = np.asarray(values, dtype=float)
    n = np.arange(1, len(values) + 1)
    expected = expected_best(values, goal)
    rng = np.random.default_rng(seed)
    draws = np.array(
        [expected_best(rng.choice(values, size=len(values), replace=True), goal) for _ in range(resamples)]
    )
    with np.errstate(invalid="ignore"):
        low, high = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    return Curve(n, expected, low, high)


def leader_by_budget(curves: dict[str, Curve], goal: str) -> list[str]:
    """The arm with the better expected best score at each number of trials 1..N."""
    arms = list(curves)
    best = min if goal == "min" else max
    length = min(len(c.expected) for c in curves.values())
    return [best(arms, key=lambda a: curves[a].expected[k]) for k in range(length)]


def band_words(curves: dict[str, Curve], leaders: list[str], goal: str) -> str:
    """How far the leader at each budget is established: at how many budgets its 95% band is clear of every other
    arm's (the leader's worse bound better than each other arm's better bound)."""
    clear = 0
    for k, leader in enumerate(leaders):
        mine = curves[leader]
        others = [c for arm, c in curves.items() if arm != leader]
        if goal == "min":
            clear += all(mine.high[k] < c.low[k] for c in others)
        else:
            clear += all(mine.low[k] > c.high[k] for c in others)
    if clear == len(leaders):
        return f"the leader's 95% band is clear of every other arm's at all {len(leaders)} budgets"
    return (
        f"these are point estimates: the leader's 95% band is clear of every other arm's at {clear} of "
        f"{len(leaders)} budgets; where it is not, these trials do not establish the ranking"
    )


def ranking_words(leaders: list[str], labels: dict[str, str]) -> str:
    """ "with at most 3 trials per arm X looks better; from 4 on, Y" (or: X at every budget from 1 to N)."""
    if not leaders:
        return "no trials to compare"
    parts, start = [], 1
    for k in range(1, len(leaders) + 1):
        if k == len(leaders) or leaders[k] != leaders[k - 1]:
            parts.append((start, k, leaders[k - 1]))
            start = k + 1
    if len(parts) == 1:
        return (
            f"`{labels.get(parts[0][2], parts[0][2])}` has the better expected best score at every budget from "
            f"1 to {len(leaders)} trials per arm"
        )
    first = parts[0]
    words = [
        f"with at most {first[1]} trial{'s' if first[1] > 1 else ''} per arm `{labels.get(first[2], first[2])}` "
        "looks better"
    ]
    words += [
        f"from {p[0]} on, `{labels.get(p[2], p[2])}`"
        if p is parts[-1]
        else f"from {p[0]} to {p[1]}, `{labels.get(p[2], p[2])}`"
        for p in parts[1:]
    ]
    return "; ".join(words)


def trial_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: how its trials ended, its pruned share and the optimizer steps pruning saved."""
    outcomes: dict[str, int] = {}
    for t in trials:
        outcomes[t["outcome"]] = outcomes.get(t["outcome"], 0) + 1
    budget = sum(t["budget_steps"] for t in trials)
    saved = sum(t["budget_steps"] - t["steps"] for t in trials if t["outcome"] == PRUNED)
    return {
        "trials": len(trials),
        "outcomes": outcomes,
        "pruned_share": outcomes.get(PRUNED, 0) / len(trials) if trials else 0.0,
        "steps_saved_share": saved / budget if budget else 0.0,
    }


def leader(c: Any) -> str | None:
    """The variant ahead of every other that trained, each paired 95% interval excluding no effect; else None."""
    best = c.table.loc[c.table["best"], "variant"]
    if best.empty:
        return None
    first = best.iloc[0]
    for row in c.table.itertuples(index=False):
        if row.variant != first and row.trained and contrast(c, first, row.variant).direction != "better":
            return None
    return first


def recipe_sentence(tuned: Any, base: Any, seeds: int) -> str:
    """Whether the base recipe's answer holds, reverses or becomes not distinguishable once each arm is tuned."""
    label = dict(zip(tuned.table["variant"], tuned.table["variant"]))
    was, now = leader(base), leader(tuned)
    if was and now and was == now:
        return f"The base-recipe answer holds once each arm is tuned: `{label[now]}` leads at both."
    if was and now:
        return (
            f"The base-recipe answer reverses once each arm is tuned: `{label[was]}` led at the base recipe, "
            f"`{label[now]}` leads tuned."
        )
    if was:
        return (
            f"The base-recipe answer (`{label[was]}` leads) becomes not distinguishable with {seeds} seeds once "
            "each arm is tuned."
        )
    if now:
        return f"At the base recipe the arms were not distinguishable with {seeds} seeds; tuned, `{label[now]}` leads."
    return f"The arms are not distinguishable with {seeds} seeds at either recipe."


def tuned_answer(tuned: Any, tuned_words: Any, base: Any, base_words: Any) -> Any:
    """The tuned comparison's answer, with the base recipe's beside it and whether it held."""
    seeds = int(tuned.table["seeds"].max()) if len(tuned.table) else 0
    text = (
        f"Each arm at its own tuned setting: {tuned_words.text} At the base recipe (the base config's values): "
        f"{base_words.text} {recipe_sentence(tuned, base, seeds)}"
    )
    return dataclasses.replace(
        tuned_words,
        text=text,
        factors=[*tuned_words.factors, *(f"(base recipe) {line}" for line in base_words.factors)],
    )


def worst_score(metric: str, goal: str, vocab: int | None) -> float:
    """What a diverged trial scores as a draw of the search: a uniform guess over the output vocabulary (perplexity
    = the vocabulary's size, NLL = its log), or 0 BLEU/chrF. Finite, so that the expected best score of an arm with
    diverged trials is a number (with ±inf, the chance that n draws are all diverged makes it infinite at every n,
    and the arm's curve could not be drawn); a diverged model scores no better than that guess. Without a vocabulary
    size, the worst value there is."""
    if goal == "max":
        return 0.0
    if vocab and metric.endswith("_ppl"):
        return float(vocab)
    if vocab and metric.endswith("_nll"):
        return math.log(vocab)
    return math.inf


def draw_value(outcome: str, value: float | None, worst: float) -> float:
    """One trial as a draw of the search: its deciding metric (a pruned trial: what its best checkpoint scored within
    its cut budget); a diverged trial, or one without a finite score, `worst` (see worst_score)."""
    if outcome == "diverged" or value is None or not math.isfinite(value):
        return worst
    return float(value)


def trial_values(trials: Any, metric: str, goal: str) -> list[float]:
    """An arm's trials (rows of tracking.trial_runs) as draws of the search."""
    column = f"metrics.{metric}"
    return [
        draw_value(
            row["outcome"],
            row.get(column),
            worst_score(metric, goal, int(row["vocab"]) if str(row.get("vocab") or "").isdigit() else None),
        )
        for row in trials.to_dict("records")
    ]


def arms_table(trials: Any, metric: str, goal: str, labels: dict[str, str]) -> Any:
    """Per arm: trials, how they ended, the pruned share and the optimizer steps pruning saved, the best score and
    the values that gave it."""
    import pandas as pd

    rows = []
    for arm, mine in trials.groupby("arm", sort=False):
        steps = mine.get("metrics.train_steps", pd.Series(0, index=mine.index)).fillna(0)
        budget = pd.to_numeric(mine.get("params.train.max_steps"), errors="coerce").fillna(0)
        pruned = mine["outcome"] == PRUNED
        values = trial_values(mine, metric, goal)
        best = int(np.argmin(values) if goal == "min" else np.argmax(values))
        tuned = {
            k.removeprefix("params.tuned."): mine.iloc[best][k] for k in mine.columns if k.startswith("params.tuned.")
        }
        rows.append(
            {
                "arm": labels.get(arm, arm),
                "trials": len(mine),
                "outcomes": ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in mine["outcome"].value_counts().items()),
                "pruned": f"{pruned.mean():.0%}",
                "steps saved": f"{((budget - steps)[pruned]).sum() / budget.sum():.0%}" if budget.sum() else "–",
                f"best {metric}": f"{values[best]:,.2f}" if np.isfinite(values[best]) else "–",
                "at": ", ".join(f"{k}={float(v):.4g}" for k, v in tuned.items()),
            }
        )
    return pd.DataFrame(rows)
