"""Claim kind `effective_context`: how much context a cell uses, against another cell. The context probe
(tasks/claims/probes.py) gives each trained run's effective context, the k at which a model truncated to k tokens
comes within 1% or 5% of its full-context perplexity; the claim compares the medians over seeds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rnnlab.schemas.config import Section
from tasks.claim_kinds.base import (
    CONTEXT,
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    ClaimKind,
    Evidence,
    KindMeasure,
    Measurement,
    Range,
    Verdict,
    context_figure,
    context_figures,
    context_text,
    finished,
    fmt,
    select,
    shown_interval,
    training_level,
)


class EffectiveContext(KindMeasure):
    """The context probe's effective context (the k at which a model truncated to k tokens comes within 1% or 5% of
    its full-context perplexity) of one cell against another, median over the seeds that trained."""

    kind: Literal["effective_context"]
    study: str = Field(min_length=1, description="the study (by name) whose trained runs are probed")
    factor: str = "model.cell"
    subject: str = Field("rnn_tanh", description="the cell the claim is about")
    reference: str = Field("lstm", description="the cell it is compared with")
    level: Literal["k_1pct", "k_5pct"] = "k_5pct"


class ContextCriterion(Section):
    supported_range: Range = Field(description="supported: the subject's median k lies within")
    refuted_outside: Range = Field(description="not supported: the subject's median k lies outside this wider range")
    max_ratio: float = Field(gt=0, description="supported: subject's k ≤ max_ratio × reference's")
    refuted_ratio: float = Field(1.0, gt=0, description="not supported: subject's k ≥ refuted_ratio × reference's")
    min_seeds: int = Field(2, ge=1)


def measure(ev: Evidence, m: EffectiveContext) -> Measurement:
    subject, reference = (select(ev, m.study, {m.factor: cell}) for cell in (m.subject, m.reference))
    numbers = context_figures(ev, subject, reference, m.level)
    s, r = numbers["subject_seeds"], numbers["reference_seeds"]
    missing = (
        None
        if s and r
        else (f"no context probe of a trained {m.subject if not s else m.reference} run in study {m.study}")
    )
    level, untestable = training_level(
        {m.subject: finished(ev, m.study, {m.factor: m.subject})},
        {m.reference: finished(ev, m.study, {m.factor: m.reference})},
    )
    return Measurement(
        numbers,
        [x["run_id"] for x in subject + reference],
        context_text(numbers, m.level, m.subject, m.reference),
        missing,
        level,
        untestable,
    )


def apply_criterion(n: dict[str, Any], c: ContextCriterion) -> Verdict:
    s, r, seeds = n["subject"], n["reference"], len(n["subject_seeds"])
    if seeds < c.min_seeds or math.isnan(r):
        return Verdict(
            INCONCLUSIVE,
            f"the subject was probed in {seeds} seed(s) (at least {c.min_seeds} needed) and "
            f"the reference's k is {fmt(r)}.",
        )
    ratio_ = s / r if r > 0 else math.inf
    said = (
        f"median k {fmt(s)}{shown_interval(n.get('subject_interval', (math.nan,) * 2))} against the reference's "
        f"{fmt(r)} (ratio {fmt(ratio_)}{shown_interval(n.get('ratio_interval', (math.nan,) * 2))})"
    )
    if c.supported_range.low <= s <= c.supported_range.high and ratio_ <= c.max_ratio:
        return Verdict(
            SUPPORTED,
            f"{said}: within [{c.supported_range.low:g}, {c.supported_range.high:g}] and at "
            f"most {c.max_ratio:g} × the reference.",
        )
    if not c.refuted_outside.low <= s <= c.refuted_outside.high or ratio_ >= c.refuted_ratio:
        return Verdict(
            NOT_SUPPORTED,
            f"{said}: outside [{c.refuted_outside.low:g}, {c.refuted_outside.high:g}] or "
            f"not below {c.refuted_ratio:g} × the reference.",
        )
    return Verdict(INCONCLUSIVE, f"{said}: between the supported and the refuted zones.")


def figures(claim_id: str, m: EffectiveContext, numbers: dict[str, Any], ev: Evidence, out: Path) -> list:
    return context_figure(claim_id, m, ev, out)


KIND = ClaimKind("effective_context", EffectiveContext, ContextCriterion, measure, apply_criterion, figures, (CONTEXT,))
