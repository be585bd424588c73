"""Claim kind `vanishing_gradient`: the gradient reaching earlier hidden states vanishes in a tanh RNN. The
gradient-flow probe's per-step decay rate of the trained subject (< 1: the gradient reaching h_{t-k} shrinks
exponentially in k); the controlled spectral and non-normal checks (tasks/claims/probes.py: spectral_check), which
hold by construction; and the exploding side, the share of the unclipped runs that diverged."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rnnlab.schemas.config import Section
from rnnlab.schemas.study import show
from tasks.claim_kinds.base import (
    GRADIENT_FLOW,
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SPECTRAL,
    SUPPORTED,
    ClaimKind,
    Evidence,
    KindMeasure,
    Measurement,
    Part,
    Verdict,
    combine,
    finished,
    fmt,
    gradient_flow_figure,
    median,
    probe_values,
    scalar,
    seeds_of,
    select,
    training_level,
)
from tasks.record.outcome import DIVERGED


class VanishingGradient(KindMeasure):
    """The gradient-flow probe's per-step decay rate of the trained subject (< 1: the gradient reaching h_{t-k}
    shrinks exponentially in k), the controlled spectral check (decay below radius 1), and the exploding side: the
    share of the unclipped subject's runs that diverged, with their largest gradient norms."""

    kind: Literal["vanishing_gradient"]
    study: str = Field(min_length=1)
    factor: str = "model.cell"
    subject: str = "rnn_tanh"
    radii: list[float] = Field([0.9, 1.0, 1.1], min_length=1)
    explode_study: str = Field(min_length=1, description="the study whose unclipped runs show the exploding side")
    explode_where: dict[str, Any] = Field(default_factory=dict, description="factor → value selecting those runs")

    def studies_read(self) -> list[str]:
        return [self.study, self.explode_study]


class VanishingCriterion(Section):
    max_rate: float = Field(gt=0, description="supported: the subject's trained per-step rate ≤ this")
    refuted_rate: float = Field(1.0, gt=0, description="not supported: rate ≥ this (no decay)")
    min_diverged_share: float = Field(
        0.5, ge=0, le=1, description="exploding side supported: unclipped runs that diverged, at least this share"
    )
    min_seeds: int = Field(2, ge=1)
    by_construction: list[Literal["spectral_check", "non_normal_check"]] = Field(
        default_factory=list, description="parts that hold by construction: shown, never counted as support"
    )


def spectral_rates(spectral: dict[str, Any] | None) -> dict[float, float]:
    """radius → per-step rate of the spectral check (its rates given per radius, as a list or a mapping)."""
    if not spectral:
        return {}
    rates = spectral.get("rates", {})
    if isinstance(rates, dict):
        return {float(r): scalar(v) for r, v in rates.items()}
    return {float(r): scalar(v) for r, v in zip(spectral.get("radii", []), rates)}


def non_normal_text(n: dict[str, Any]) -> str:
    nn, contracted = n.get("non_normal"), n.get("contracted")
    if not nn or not contracted:
        return "non-normal check: not run"
    return (
        f"non-normal check: every eigenvalue {fmt(nn['eigenvalue'])}, σ₁ {fmt(nn['sigma'])}: ×{fmt(nn['peak'])} "
        f"at k = {nn['peak_k']}, ×{fmt(nn['last'])} at k = {nn['ks'][-1]}; scaled to σ₁ "
        f"{fmt(contracted['sigma'])}: at most ×{fmt(contracted['largest_step'])} per step"
    )


def measure(ev: Evidence, m: VanishingGradient) -> Measurement:
    subject = select(ev, m.study, {m.factor: m.subject})
    rates = probe_values(subject, ev.gradflow, lambda p: scalar(p.get("rate_trained")))
    found = spectral_rates(ev.spectral)
    spectral = {r: found[r] for r in m.radii if r in found}
    unclipped = select(ev, m.explode_study, m.explode_where, outcome=None)
    diverged = [r for r in unclipped if r["outcome"] == DIVERGED]
    norms = [r["metrics"].get("max_grad_norm", math.nan) for r in diverged]
    numbers = {
        "rate": median(list(rates.values())),
        "rate_seeds": rates,
        "spectral": spectral,
        "non_normal": (ev.spectral or {}).get("non_normal"),
        "contracted": (ev.spectral or {}).get("contracted"),
        "diverged": len(diverged),
        "unclipped": len(unclipped),
        "diverged_share": len(diverged) / len(unclipped) if unclipped else math.nan,
        "max_grad_norm": max(norms) if norms else math.nan,
    }
    where = ",".join(f"{k.rpartition('.')[2]}={show(v)}" for k, v in m.explode_where.items())
    text = (
        f"trained {m.subject}'s per-step gradient rate: {fmt(numbers['rate'])} (median; "
        f"{seeds_of(rates) or 'no seed'}); spectral check (orthogonal W scaled to radius r), rate by radius: "
        + (", ".join(f"{r:g} → {fmt(v)}" for r, v in spectral.items()) or "not run")
        + f"; {non_normal_text(numbers)}; {m.explode_study} {where}: {len(diverged)}/{len(unclipped)} diverged"
        + (f", largest pre-clip norm {fmt(numbers['max_grad_norm'])}" if norms else "")
    )
    missing = None if rates else f"no gradient-flow probe of a trained {m.subject} run in study {m.study}"
    level, untestable = training_level({m.subject: finished(ev, m.study, {m.factor: m.subject})})
    return Measurement(numbers, [r["run_id"] for r in subject + unclipped], text, missing, level, untestable)


def spectral_part(rates: dict[float, float]) -> Part:
    """The orthogonal matrices scaled to radius r: the gradient is exactly r^k, so each fitted rate must be r."""
    below = {float(r): v for r, v in rates.items() if float(r) < 1}
    if not below:
        return "spectral_check", INCONCLUSIVE, "the spectral check at a radius below 1 was not run"
    shown = ", ".join(f"×{fmt(v)} per step at radius {r:g}" for r, v in rates.items())
    if all(abs(v - float(r)) <= 0.01 * float(r) for r, v in rates.items()):
        return (
            "spectral_check",
            SUPPORTED,
            (f"an orthogonal recurrent matrix scaled to radius r gives a gradient of exactly r^k ({shown})"),
        )
    return "spectral_check", NOT_SUPPORTED, f"the spectral check's rates are not its radii ({shown})"


def non_normal_part(n: dict[str, Any]) -> Part:
    """Eigenvalues below 1 with σ₁ above 1: the gradient grows before it decays; scaled to σ₁ < 1: it shrinks at
    every step (‖(Wᵀ)^k g‖ ≤ σ₁^k ‖g‖)."""
    nn, contracted = n.get("non_normal"), n.get("contracted")
    if not nn or not contracted:
        return "non_normal_check", INCONCLUSIVE, "the non-normal check was not run"
    grows = nn["eigenvalue"] < 1 < nn["sigma"] and nn["peak"] > 1
    shrinks = contracted["sigma"] < 1 and contracted["largest_step"] < 1
    said = (
        f"with every eigenvalue {fmt(nn['eigenvalue'])} and σ₁ {fmt(nn['sigma'])} (a non-normal matrix) the "
        f"gradient grew ×{fmt(nn['peak'])} by k = {nn['peak_k']} before it decayed (×{fmt(nn['last'])} at "
        f"k = {nn['ks'][-1]}); scaled to σ₁ {fmt(contracted['sigma'])} it shrank at every step (at most "
        f"×{fmt(contracted['largest_step'])})"
    )
    if grows and shrinks:
        return (
            "non_normal_check",
            SUPPORTED,
            ("eigenvalues below 1 do not make the gradient shrink, σ₁ < 1 does: " + said),
        )
    return "non_normal_check", NOT_SUPPORTED, f"the non-normal check did not behave as its construction says: {said}"


def apply_criterion(n: dict[str, Any], c: VanishingCriterion) -> Verdict:
    parts: list[Part] = []
    rate, seeds = n["rate"], len(n["rate_seeds"])
    if seeds < c.min_seeds:
        parts.append(
            ("trained_rate", INCONCLUSIVE, f"the trained rate was probed in {seeds} seed(s), {c.min_seeds} needed")
        )
    elif rate <= c.max_rate:
        parts.append(
            (
                "trained_rate",
                SUPPORTED,
                f"the trained per-step rate {fmt(rate)} ≤ {c.max_rate:g}: the "
                f"gradient shrinks exponentially with distance",
            )
        )
    elif rate >= c.refuted_rate:
        parts.append(
            ("trained_rate", NOT_SUPPORTED, f"the trained per-step rate {fmt(rate)} ≥ {c.refuted_rate:g}: no decay")
        )
    else:
        parts.append(
            (
                "trained_rate",
                INCONCLUSIVE,
                f"the trained per-step rate {fmt(rate)} is between {c.max_rate:g} and {c.refuted_rate:g}",
            )
        )
    parts += [spectral_part(n["spectral"]), non_normal_part(n)]
    share = n["diverged_share"]
    if math.isnan(share) or share < c.min_diverged_share:
        parts.append(
            (
                "exploding",
                INCONCLUSIVE,
                f"the exploding side was not observed: {n['diverged']}/{n['unclipped']} unclipped runs diverged",
            )
        )
    else:
        parts.append(
            (
                "exploding",
                SUPPORTED,
                f"unclipped, {n['diverged']}/{n['unclipped']} runs diverged (largest "
                f"pre-clip gradient norm {fmt(n['max_grad_norm'])})",
            )
        )
    return combine(parts, c.by_construction)


def figures(claim_id: str, m: VanishingGradient, numbers: dict[str, Any], ev: Evidence, out: Path) -> list:
    shown = gradient_flow_figure(claim_id, m, ev, out)
    if ev.spectral:
        from tasks.reporting import plots  # lazy: matplotlib, which validating a claims file never needs

        shown.append((plots.spectral(ev.spectral, out / f"{claim_id}_spectral.png").name, "the spectral check"))
    return shown


KIND = ClaimKind(
    "vanishing_gradient",
    VanishingGradient,
    VanishingCriterion,
    measure,
    apply_criterion,
    figures,
    (GRADIENT_FLOW, SPECTRAL),
)
