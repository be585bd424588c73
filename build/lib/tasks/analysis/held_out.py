"""The test split, held out: a study decides on validation data (the checkpoint of each run and the winner are both
chosen there), then scores the test split once, for the variants its answer names and no others, and reports it
apart. A split that chose something gives optimistic estimates and p-values; one that chose nothing does not.

Where a corpus has no test split (PTB here), nothing is scored after the decision and the report says that the tests
on the evaluation data ran on the selection split.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from tasks.analysis import stats
from tasks.analysis.compare import Comparison, md_table, number
from tasks.record.outcome import TRAINED

NAMED_TAG = "rnnlab.test.variants"  # on the parent run: the variants scored on test, as JSON
SPLIT_TAG = "rnnlab.test.split"  # on the parent run: "test", or "none: why"
SCORED_TAG = "rnnlab.test_scored"  # on a cell run: set when its test split was scored after a decision


def named_variants(c: Comparison) -> list[str]:
    """The variants the answer names: the best by the deciding metric over the seeds that trained, and the runner-up
    it is compared with (fewer when fewer trained)."""
    column = f"{c.metric}_mean"
    if column not in c.table:
        return []
    trained = c.table[(c.table["trained"] > 0) & c.table[column].notna()]
    return list(trained.sort_values(column, ascending=c.goal == "min", kind="stable")["variant"][:2])


def runs_to_score(c: Comparison, variants: list[str]) -> pd.DataFrame:
    """The trained runs of `variants`: each is scored on test once (a run scored by an earlier execution is not
    scored again)."""
    return c.runs[c.runs["variant"].isin(variants) & (c.runs["outcome"] == TRAINED)]


def test_twin(metric: str) -> str:
    """The test split's name for the deciding metric: valid_ppl → test_ppl, valid_bleu_greedy → test_bleu_greedy."""
    return "test_" + metric.removeprefix("valid_")


def test_scores(runs: pd.DataFrame, variant: str, column: str) -> pd.Series:
    """A variant's test scores by seed (its runs scored after the decision)."""
    if column not in runs or "tags.rnnlab.cell" not in runs:
        return pd.Series(dtype=float)
    mine = runs[runs["tags.rnnlab.cell"] == variant]
    return pd.Series(mine[column].to_numpy(dtype=float), index=mine["params.seed"].astype(int)).dropna()


def section(c: Comparison, parent: Any, runs: pd.DataFrame) -> str:
    """The report's "Held-out test" section: what was scored on test, when, and the named variants' test scores
    with their paired difference over seeds."""
    tags = parent.data.tags
    split = tags.get(SPLIT_TAG)
    if split is None:
        return (
            "This execution was recorded before rnnlab held the test split out: its runs were scored on every "
            "split they had, and any test score was not taken after the decision. Rerun the study to score the "
            "test split once, after the decision.\n"
        )
    if split.startswith("none"):
        return (
            f"There is no held-out test here: {split.removeprefix('none: ')}. The study decided on the "
            "validation split, which also chose each run's checkpoint, so the tests on the evaluation data "
            "below ran on the selection split: their p-values are optimistic.\n"
        )
    named = json.loads(tags.get(NAMED_TAG, "[]"))
    if not named:
        return "No variant trained, so nothing was scored on the test split.\n"
    metric = test_twin(c.metric)
    column = f"metrics.{metric}"
    values = {v: test_scores(runs, v, column) for v in named}
    log = stats.on_log_scale(metric)
    rows = []
    for variant in named:
        interval = stats.mean_interval(values[variant].to_numpy(dtype=float), log=log) if len(values[variant]) else None
        rows.append(
            {
                "variant": variant,
                "runs scored": len(values[variant]),
                f"{metric} ({'geometric ' if log else ''}mean [95% CI])": "–"
                if interval is None
                else number(interval.mean, 1 if log else 2)
                + (
                    ""
                    if math.isnan(interval.low)
                    else f" [{number(interval.low, 1 if log else 2)}, {number(interval.high, 1 if log else 2)}]"
                ),
            }
        )
    text = (
        f"The test split was scored once, after the decision on `{c.metric}`, for the "
        f"{'variant' if len(named) == 1 else f'{len(named)} variants'} the answer names and no others: "
        + ", ".join(f"`{v}`" for v in named)
        + f" ({sum(len(v) for v in values.values())} runs). "
        "No checkpoint, setting or winner was chosen on it.\n\n" + md_table(pd.DataFrame(rows))
    )
    if len(named) == 2:
        both = pd.concat([values[named[0]], values[named[1]]], axis=1, join="inner").dropna()
        if len(both) >= 2:
            a, b = both.iloc[:, 0].to_numpy(dtype=float), both.iloc[:, 1].to_numpy(dtype=float)
            differences = np.log(a) - np.log(b) if log else a - b
            interval = stats.mean_interval(differences)
            shown = (lambda v: f"×{math.exp(v):.3f}") if log else (lambda v: f"{v:+.2f}")
            text += (
                f"\n`{named[0]}` against `{named[1]}` on test, paired over {len(both)} seeds: "
                f"{shown(interval.mean)} (95% CI {shown(interval.low)} to {shown(interval.high)}, Student-t, "
                f"two-sided{', on log perplexity' if log else ''}).\n"
            )
    return text
