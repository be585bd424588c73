"""Claim kind `lstm_memory`: the LSTM keeps information longer than the tanh RNN. Its gradient-flow rate and
norm(k_far)/norm(k=1) of the trained models (the gradient-flow probe), and the effective context (the context probe),
medians over seeds, against the reference cell's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rnnlab.schemas.config import Section
from tasks.claim_kinds.base import (
    CONTEXT,
    GRADIENT_FLOW,
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    ClaimKind,
    Evidence,
    KindMeasure,
    Measurement,
    Verdict,
    context_figure,
    context_figures,
    context_text,
    finished,
    fmt,
    gradient_flow_figure,
    median,
    probe_values,
    scalar,
    seeds_of,
    select,
    shown_interval,
    training_level,
)


class LSTMMemory(KindMeasure):
    """The LSTM against the tanh RNN: gradient-flow rate, norm(k_far)/norm(k=1) of the trained models, and the
    effective context, medians over seeds."""

    kind: Literal["lstm_memory"]
    study: str = Field(min_length=1)
    factor: str = "model.cell"
    subject: str = "lstm"
    reference: str = "rnn_tanh"
    far_k: int = Field(100, ge=2, description="the distance of the far gradient norm (the nearest k probed)")
    level: Literal["k_1pct", "k_5pct"] = "k_5pct"


class MemoryCriterion(Section):
    min_far_gain: float = Field(gt=1, description="supported: subject's norm(k_far)/norm(1) ≥ this × reference's")
    min_context_ratio: float = Field(gt=1, description="supported: subject's k ≥ this × reference's")
    min_seeds: int = Field(2, ge=1)


def far_ratio(probe: dict[str, Any], far_k: int) -> float:
    """norm(k_far) / norm(k=1) of the trained model's gradient-flow curve, k_far the probed k nearest far_k."""
    ks, norms = probe.get("ks") or [], probe.get("norm_trained") or []
    if not ks or len(norms) != len(ks):
        return math.nan
    near = min(range(len(ks)), key=lambda i: abs(ks[i] - far_k))
    first = min(range(len(ks)), key=lambda i: abs(ks[i] - 1))  # k = 1: the probe's curve starts at k = 0
    norms = [scalar(n) for n in norms]
    return norms[near] / norms[first] if norms[first] > 0 else math.nan


def measure(ev: Evidence, m: LSTMMemory) -> Measurement:
    numbers: dict[str, Any] = {}
    runs, parts, records = [], [], {}
    for role, cell in (("subject", m.subject), ("reference", m.reference)):
        records[role] = select(ev, m.study, {m.factor: cell})
        runs += [r["run_id"] for r in records[role]]
        far = probe_values(records[role], ev.gradflow, lambda p: far_ratio(p, m.far_k))
        rate = probe_values(records[role], ev.gradflow, lambda p: scalar(p.get("rate_trained")))
        numbers.update(
            {
                f"{role}_far": median(list(far.values())),
                f"{role}_rate": median(list(rate.values())),
                f"{role}_seeds": len(far),
            }
        )
        parts.append(
            f"{cell}: rate {fmt(numbers[f'{role}_rate'])}, norm(k={m.far_k})/norm(k=1) "
            f"{fmt(numbers[f'{role}_far'])} ({seeds_of(far) or 'no seed'})"
        )
    context = context_figures(ev, records["subject"], records["reference"], m.level)
    numbers.update({"subject_k": context["subject"], "reference_k": context["reference"], "context": context})
    missing = next(
        (
            f"no gradient-flow and context probes of a trained {cell} run in study {m.study}"
            for role, cell in (("subject", m.subject), ("reference", m.reference))
            if math.isnan(numbers[f"{role}_far"]) or math.isnan(numbers[f"{role}_k"])
        ),
        None,
    )
    level, untestable = training_level(
        {m.subject: finished(ev, m.study, {m.factor: m.subject})},
        {m.reference: finished(ev, m.study, {m.factor: m.reference})},
    )
    text = "; ".join(parts) + " (medians over seeds); " + context_text(context, m.level, m.subject, m.reference)
    return Measurement(numbers, runs, text, missing, level, untestable)


def apply_criterion(n: dict[str, Any], c: MemoryCriterion) -> Verdict:
    if min(n["subject_seeds"], n["reference_seeds"]) < c.min_seeds:
        return Verdict(
            INCONCLUSIVE,
            f"probed in {n['subject_seeds']} and {n['reference_seeds']} seed(s); {c.min_seeds} needed for each.",
        )
    gain = n["subject_far"] / n["reference_far"] if n["reference_far"] > 0 else math.inf
    ratio_ = n["subject_k"] / n["reference_k"] if n["reference_k"] > 0 else math.inf
    interval = shown_interval(n.get("context", {}).get("ratio_interval", (math.nan, math.nan)))
    said = (
        f"the far gradient kept ×{fmt(gain)} as much as the reference's and the effective context is "
        f"×{fmt(ratio_)}{interval} the reference's"
    )
    if gain >= c.min_far_gain and ratio_ >= c.min_context_ratio:
        return Verdict(SUPPORTED, f"{said} (thresholds ×{c.min_far_gain:g} and ×{c.min_context_ratio:g}).")
    if gain <= 1 or ratio_ <= 1:
        return Verdict(NOT_SUPPORTED, f"{said}: no better than the reference on at least one.")
    return Verdict(
        INCONCLUSIVE, f"{said}: better, but below the thresholds ×{c.min_far_gain:g} and ×{c.min_context_ratio:g}."
    )


def figures(claim_id: str, m: LSTMMemory, numbers: dict[str, Any], ev: Evidence, out: Path) -> list:
    return context_figure(claim_id, m, ev, out) + gradient_flow_figure(claim_id, m, ev, out)


KIND = ClaimKind(
    "lstm_memory", LSTMMemory, MemoryCriterion, measure, apply_criterion, figures, (CONTEXT, GRADIENT_FLOW)
)
