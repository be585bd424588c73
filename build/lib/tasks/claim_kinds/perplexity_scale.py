"""Claim kind `perplexity_scale`: a perplexity the literature reports for an LSTM. The best validation perplexity of
a trained LSTM in the named studies, and the corpus it was measured on; on a corpus the claim is not about, the
criterion says "not testable here" (so it judges even without data). No figure: the report quotes the literature."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from rnnlab.schemas.config import Section
from tasks.claim_kinds.base import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    NOT_TESTABLE,
    SUPPORTED,
    ClaimKind,
    Evidence,
    KindMeasure,
    Measurement,
    Range,
    Verdict,
    fmt,
    select,
)


class PerplexityScale(KindMeasure):
    """The best validation perplexity of a trained LSTM in the named studies, and the corpus it was measured on."""

    kind: Literal["perplexity_scale"]
    studies: list[str] = Field(min_length=1)
    factor: str = "model.cell"
    subject: str = "lstm"
    literature: list[str] = Field(default_factory=list, description="published figures, quoted in the report")


class ScaleCriterion(Section):
    claimed: Range
    testable_on: list[str] = Field(min_length=1, description="corpora on which the claim applies")
    tolerance: float = Field(
        0.1, ge=0, description="relative: supported within the range widened by this; not supported beyond twice that"
    )
    why_not_here: str = Field(min_length=1, description="why the claim cannot be checked on the corpora measured")


def measure(ev: Evidence, m: PerplexityScale) -> Measurement:
    records = [
        dict(r, study=s) for s in m.studies for r in select(ev, s, {m.factor: m.subject}) if "valid_ppl" in r["metrics"]
    ]
    best = min(records, key=lambda r: r["metrics"]["valid_ppl"]) if records else None
    numbers = {
        "best": best["metrics"]["valid_ppl"] if best else math.nan,
        "corpus": best["corpus"] if best else None,
        "study": best["study"] if best else None,
        "run_id": best["run_id"] if best else None,
        "by_corpus": {
            c: min(r["metrics"]["valid_ppl"] for r in records if r["corpus"] == c)
            for c in sorted({r["corpus"] for r in records})
        },
    }
    text = (
        f"best trained {m.subject} valid perplexity measured here: {fmt(numbers['best'])} on {best['corpus']} "
        f"(study {best['study']}, {best['variant']}, seed {best['seed']})"
        if best
        else f"no trained {m.subject} in {', '.join(m.studies)}"
    )
    return Measurement(numbers, [best["run_id"]] if best else [], text, None)


def apply_criterion(n: dict[str, Any], c: ScaleCriterion) -> Verdict:
    claimed = f"{c.claimed.low:g}–{c.claimed.high:g}"
    testable = {k: v for k, v in n["by_corpus"].items() if k in c.testable_on}
    if not testable:
        nearest = (
            f"the nearest measured figure is {fmt(n['best'])} on {n['corpus']}"
            if n["corpus"]
            else "no trained LSTM was measured"
        )
        return Verdict(
            NOT_TESTABLE, f"{c.why_not_here} The claimed {claimed} applies to {', '.join(c.testable_on)}; {nearest}."
        )
    best = min(testable.values())
    inside, near = (
        (c.claimed.low * (1 - c.tolerance), c.claimed.high * (1 + c.tolerance)),
        (c.claimed.low * (1 - 2 * c.tolerance), c.claimed.high * (1 + 2 * c.tolerance)),
    )
    if inside[0] <= best <= inside[1]:
        return Verdict(SUPPORTED, f"best valid perplexity {fmt(best)}, within {claimed} (±{c.tolerance:.0%}).")
    if not near[0] <= best <= near[1]:
        return Verdict(
            NOT_SUPPORTED, f"best valid perplexity {fmt(best)}, outside {claimed} by more than {2 * c.tolerance:.0%}."
        )
    return Verdict(
        INCONCLUSIVE, f"best valid perplexity {fmt(best)}, near but not within {claimed} (±{c.tolerance:.0%})."
    )


KIND = ClaimKind("perplexity_scale", PerplexityScale, ScaleCriterion, measure, apply_criterion, missing_decides=False)
