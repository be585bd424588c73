"""What a run's result means. Every run ends as one of three outcomes, and only `trained` runs enter statistics:

- trained: it finished its budget and does better than a trivial predictor;
- diverged: its training loss became NaN/inf, or it blew up (the blow-up rule of `train.blowup_*` stopped it);
- failed_to_learn: it finished, but is no better than a trivial predictor: its perplexity is at or above that of
  the training split's unigram model on the same split (word frequencies and no context: tasks/data/unigram.py; for
  translation, on target tokens), or, for translation, its BLEU is below `eval.min_bleu`. (Where a corpus has no
  floor recorded, the uniform guess over the vocabulary stands in: its perplexity is the vocabulary size.)

The outcome is tagged on the run (`rnnlab.outcome`, with `rnnlab.outcome_reason` in words).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rnnlab.schemas.config import RunConfig

TRAINED, DIVERGED, FAILED_TO_LEARN = "trained", "diverged", "failed_to_learn"
OUTCOMES = (TRAINED, DIVERGED, FAILED_TO_LEARN)
WORDS = {TRAINED: "trained", DIVERGED: "diverged", FAILED_TO_LEARN: "failed to learn"}


class StudyFailed(RuntimeError):
    """Some of a study's cells failed (not diverged: crashed); every other cell was trained and recorded."""


@dataclass(frozen=True)
class Outcome:
    kind: str
    reason: str

    def tags(self) -> dict[str, str]:
        return {
            "rnnlab.outcome": self.kind,
            "rnnlab.outcome_reason": self.reason,
            "rnnlab.diverged": str(self.kind == DIVERGED).lower(),
        }


def uniform_loss(vocab_size: int) -> float:
    """The cross entropy (nats per token) of a uniform guess over the vocabulary."""
    return math.log(vocab_size)


def first(metrics: Mapping[str, float], *names: str) -> tuple[str, float] | None:
    return next(((n, float(metrics[n])) for n in names if n in metrics), None)


def floor_of(metric: str, floor: Mapping[str, float], vocab_size: int) -> tuple[float, str]:
    """The perplexity a model must get below on `metric`'s split (valid_ppl → valid), and what it is."""
    split = metric.partition("_")[0]
    if split in floor:
        return float(floor[split]), f"{float(floor[split]):,.1f}, the perplexity of the training split's unigram model"
    return float(vocab_size), f"{vocab_size:,}, the perplexity of a uniform guess over the vocabulary"


def judge(
    cfg: RunConfig,
    vocab_size: int,
    metrics: Mapping[str, float],
    stopped: str | None,
    floor: Mapping[str, float] | None = None,
) -> Outcome:
    """The outcome of a run from its final metrics; `stopped` is why training stopped early (NaN, blow-up), if it did;
    `vocab_size` is the vocabulary its model predicts over; `floor` the unigram model's perplexity per split."""
    if stopped:
        return Outcome(DIVERGED, stopped)
    found = first(metrics, "valid_ppl", "test_ppl")
    if found:
        name, ppl = found
        limit, what = floor_of(name, floor or {}, vocab_size)
        if not ppl < limit:
            learned = " (it learned no more than word frequencies)" if "unigram" in what else ""
            return Outcome(FAILED_TO_LEARN, f"{name} {ppl:,.1f} is at or above {what} on the same split{learned}")
    for names, least, why in cfg.score_minimums():  # a task kind's own mark of a trivial model (translation: BLEU)
        score = first(metrics, *names)
        if score and score[1] < least:
            return Outcome(FAILED_TO_LEARN, f"{score[0]} {score[1]:.2f} is below {least:g} {why}")
    if not found:
        return Outcome(TRAINED, "no perplexity was measured")
    limit, what = floor_of(found[0], floor or {}, vocab_size)
    return Outcome(TRAINED, f"{found[0]} {found[1]:,.1f} is ×{found[1] / limit:.2f} of {what}")
