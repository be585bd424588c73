"""What a run's result means. Every run ends as one of three outcomes, and only `trained` runs enter statistics:

- trained: it finished its budget and does better than a trivial predictor;
- diverged: its training loss became NaN/inf, or it blew up (the blow-up rule of `train.blowup_*` stopped it);
- failed_to_learn: it finished, but is no better than a trivial predictor: a language model whose perplexity is at
  or above the vocabulary size (a uniform guess over the vocabulary has exactly that perplexity), a translation
  model whose token perplexity is at or above the target vocabulary size or whose BLEU is below `eval.min_bleu`.

The outcome is tagged on the run (`rnnlab.outcome`, with `rnnlab.outcome_reason` in words).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from rnnlab.config import RunConfig

TRAINED, DIVERGED, FAILED_TO_LEARN = "trained", "diverged", "failed_to_learn"
OUTCOMES = (TRAINED, DIVERGED, FAILED_TO_LEARN)
WORDS = {TRAINED: "trained", DIVERGED: "diverged", FAILED_TO_LEARN: "failed to learn"}


@dataclass(frozen=True)
class Outcome:
    kind: str
    reason: str

    def tags(self) -> dict[str, str]:
        return {"rnnlab.outcome": self.kind, "rnnlab.outcome_reason": self.reason,
                "rnnlab.diverged": str(self.kind == DIVERGED).lower()}


def uniform_loss(vocab_size: int) -> float:
    """The cross entropy (nats per token) of a uniform guess over the vocabulary."""
    return math.log(vocab_size)


def first(metrics: Mapping[str, float], *names: str) -> tuple[str, float] | None:
    return next(((n, float(metrics[n])) for n in names if n in metrics), None)


def judge(cfg: RunConfig, vocab_size: int, metrics: Mapping[str, float], stopped: str | None) -> Outcome:
    """The outcome of a run from its final metrics; `stopped` is why training stopped early (NaN, blow-up), if it did;
    `vocab_size` is the vocabulary its model predicts over."""
    if stopped:
        return Outcome(DIVERGED, stopped)
    found = first(metrics, "valid_ppl", "test_ppl")
    if found and not found[1] < vocab_size:
        name, ppl = found
        return Outcome(FAILED_TO_LEARN, f"{name} {ppl:.4g} is at or above {vocab_size:,}, the perplexity of a uniform "
                                        f"guess over the vocabulary")
    if cfg.task == "nmt":
        bleu = first(metrics, "valid_bleu_greedy", "valid_bleu", "test_bleu_greedy", "test_bleu")
        if bleu and bleu[1] < cfg.eval.min_bleu:
            return Outcome(FAILED_TO_LEARN, f"{bleu[0]} {bleu[1]:.2f} is below {cfg.eval.min_bleu:g} "
                                            "(eval.min_bleu), the level of a trivial translation")
    shown = f"{found[0]} {found[1]:.4g} < {vocab_size:,} (uniform guess)" if found else "no perplexity was measured"
    return Outcome(TRAINED, shown)
