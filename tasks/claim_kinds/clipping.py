"""Claim kind `clipping`: gradient clipping rescues training that explodes. Within each setting of the study's other
factors, the share of runs that diverged unclipped against clipped (no probe: the runs' outcomes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rnnlab.schemas.config import Section
from rnnlab.schemas.study import show
from tasks.claim_kinds.base import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    ClaimKind,
    Evidence,
    KindMeasure,
    Measurement,
    Verdict,
    select,
    setting,
    settings_of,
    training_level,
)
from tasks.record.outcome import DIVERGED


class Clipping(KindMeasure):
    """Within each setting of the study's other factors (restricted by `where`): the share of runs that diverged
    unclipped against clipped."""

    kind: Literal["clipping"]
    study: str = Field(min_length=1)
    factor: str = "train.clip_norm"
    unclipped: Any = Field(None, description="the factor's value without clipping")
    clipped: Any = Field(0.25, description="its value with clipping")
    where: dict[str, Any] = Field(default_factory=dict)


class ClippingCriterion(Section):
    exploded_share: float = Field(
        0.5, gt=0, le=1, description="a setting explodes when at least this share of its unclipped runs diverged"
    )
    min_drop: float = Field(0.5, gt=0, le=1, description="rescued: clipping lowers the diverged share by at least this")
    require: Literal["any", "all"] = Field("any", description="how many exploding settings must be rescued")


def measure(ev: Evidence, m: Clipping) -> Measurement:
    records = select(ev, m.study, m.where, outcome=None)
    rows, clipped_finished = {}, {}
    for name, group in settings_of(records, m.factor).items():
        off = [r for r in group if setting(r, m.factor) == show(m.unclipped).lower()]
        on = [r for r in group if setting(r, m.factor) == show(m.clipped).lower()]
        rows[name] = {
            "off": sum(r["outcome"] == DIVERGED for r in off),
            "off_runs": len(off),
            "on": sum(r["outcome"] == DIVERGED for r in on),
            "on_runs": len(on),
        }
        if off and [r for r in on if r["outcome"] != DIVERGED]:
            clipped_finished[f"clipped, {name}"] = [r for r in on if r["outcome"] != DIVERGED]
    text = "; ".join(
        f"{s}: diverged unclipped {v['off']}/{v['off_runs']}, clipped at {show(m.clipped)} {v['on']}/{v['on_runs']}"
        for s, v in rows.items()
    )
    missing = (
        None
        if any(v["off_runs"] and v["on_runs"] for v in rows.values())
        else f"study {m.study} has no setting with both unclipped and clipped runs"
    )
    level, untestable = training_level(clipped_finished)
    return Measurement({"settings": rows}, [r["run_id"] for r in records], text, missing, level, untestable)


def apply_criterion(n: dict[str, Any], c: ClippingCriterion) -> Verdict:
    exploding, rescued, unrescued = [], [], []
    for name, v in n["settings"].items():
        if not (v["off_runs"] and v["on_runs"]) or v["off"] / v["off_runs"] < c.exploded_share:
            continue
        exploding.append(name)
        drop = v["off"] / v["off_runs"] - v["on"] / v["on_runs"]
        (rescued if drop >= c.min_drop else unrescued if drop <= 0 else []).append(
            f"{name} ({v['off']}/{v['off_runs']} → {v['on']}/{v['on_runs']} diverged)"
        )
    if not exploding:
        return Verdict(
            INCONCLUSIVE,
            f"in no setting did at least {c.exploded_share:.0%} of the unclipped runs "
            "diverge: there was no explosion to fix.",
        )
    said = (
        f"rescued: {', '.join(rescued) or 'none'}; not rescued: {', '.join(unrescued) or 'none'} "
        f"(of {len(exploding)} setting(s) that exploded unclipped)"
    )
    if (rescued and c.require == "any") or len(rescued) == len(exploding):
        return Verdict(SUPPORTED, f"{said}.")
    if (c.require == "all" and unrescued) or len(unrescued) == len(exploding):
        return Verdict(NOT_SUPPORTED, f"{said}.")
    return Verdict(INCONCLUSIVE, f"{said}: clipping lowered the divergence by less than {c.min_drop:.0%}.")


def figures(claim_id: str, m: Clipping, numbers: dict[str, Any], ev: Evidence, out: Path) -> list:
    if not numbers["settings"]:
        return []
    from tasks.reporting import plots  # lazy: matplotlib, which validating a claims file never needs

    return [
        (
            plots.diverged_shares(numbers["settings"], str(m.clipped), out / f"{claim_id}_diverged.png").name,
            "runs that diverged, by setting",
        )
    ]


KIND = ClaimKind("clipping", Clipping, ClippingCriterion, measure, apply_criterion, figures)
