"""Claim kind `bidirectional`: a bidirectional encoder helps translation and cannot be used for language modelling.
The BLEU difference bidirectional − unidirectional encoder, paired by seed, within each setting of `within`; and
whether a language-model config with model.bidirectional=true is refused (`refusal`, which the claims flow runs),
a part that holds by construction."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rnnlab.schemas.config import ConfigError, Section, load
from tasks.claim_kinds.base import (
    INCONCLUSIVE,
    LM_REFUSAL,
    NOT_SUPPORTED,
    SUPPORTED,
    ClaimKind,
    Evidence,
    KindMeasure,
    Measurement,
    Verdict,
    combine,
    select,
    setting,
    settings_of,
    training_level,
)
from tasks.record.outcome import DIVERGED


class Bidirectional(KindMeasure):
    """Translation: the BLEU difference bidirectional − unidirectional encoder, paired by seed, within each setting
    of `within`; language modelling: whether `lm_config` with model.bidirectional=true is refused."""

    kind: Literal["bidirectional"]
    study: str = Field(min_length=1)
    factor: str = "model.bidirectional"
    within: str = "model.attention"
    metric: str = "valid_bleu_greedy"
    lm_config: str = Field(min_length=1, description="a language-model run config, relative to the claims file")

    def files_read(self) -> dict[str, str]:
        return {"lm_config": self.lm_config}


class BidirectionalCriterion(Section):
    min_gain: float = Field(gt=0, description="BLEU points: a setting helps at ≥ +min_gain, hurts at ≤ −min_gain")
    require: Literal["any", "all"] = "any"
    min_pairs: int = Field(2, ge=1)
    by_construction: list[Literal["lm_refusal"]] = Field(
        default_factory=list, description="parts that hold by construction: shown, never counted as support"
    )


def refusal(config_file: str | Path) -> str | None:
    """Try a language model with a bidirectional RNN: the config's refusal in words, or None if it was accepted."""
    try:
        load(config_file, ["model.bidirectional=true"])
    except ConfigError as err:
        return str(err)
    return None


def measure(ev: Evidence, m: Bidirectional) -> Measurement:
    lm_config = m.lm_config  # the refusals are keyed by the config as the claims file names it
    records = select(ev, m.study, {})
    rows, encoders = {}, {}
    for name, group in settings_of(records, m.factor).items():
        on = {r["seed"]: r["metrics"].get(m.metric, math.nan) for r in group if setting(r, m.factor) == "true"}
        off = {r["seed"]: r["metrics"].get(m.metric, math.nan) for r in group if setting(r, m.factor) == "false"}
        diffs = {s: on[s] - off[s] for s in on if s in off and not math.isnan(on[s] - off[s])}
        rows[name] = {
            "mean": sum(diffs.values()) / len(diffs) if diffs else math.nan,
            "pairs": len(diffs),
            "up": sum(d > 0 for d in diffs.values()),
            "diffs": diffs,
        }
    for name, group in settings_of(
        [r for r in select(ev, m.study, {}, outcome=None) if r["outcome"] != DIVERGED], m.factor
    ).items():
        found = [r for r in group if setting(r, m.factor) == "true"]
        if found:
            encoders[f"bidirectional, {name}"] = found
    refused = ev.refusals.get(lm_config)
    text = (
        (
            "; ".join(
                f"{s}: bidirectional − unidirectional {m.metric} {v['mean']:+.2f} (mean over {v['pairs']} "
                f"paired seeds, higher in {v['up']})"
                for s, v in rows.items()
                if v["pairs"]
            )
            or "no seed in which both encoders trained"
        )
        + "; a bidirectional language model: "
        + ("refused" if refused else "accepted" if lm_config in ev.refusals else "not tried")
    )
    missing = (
        None
        if any(v["pairs"] for v in rows.values()) and lm_config in ev.refusals
        else (
            f"no seed in which both encoders trained in study {m.study}"
            if lm_config in ev.refusals
            else "the bidirectional language model was not tried"
        )
    )
    level, untestable = training_level(encoders)
    return Measurement(
        {"settings": rows, "refused": refused, "tried": lm_config in ev.refusals},
        [r["run_id"] for r in records],
        text,
        missing,
        level,
        untestable,
    )


def apply_criterion(n: dict[str, Any], c: BidirectionalCriterion) -> Verdict:
    if not n["tried"]:
        lm = ("lm_refusal", INCONCLUSIVE, "the bidirectional language model was not tried")
    elif n["refused"]:
        lm = (
            "lm_refusal",
            SUPPORTED,
            "a bidirectional language model is refused before training (the config's own "
            "rule: it would see the future)",
        )
    else:
        lm = ("lm_refusal", NOT_SUPPORTED, "a bidirectional language model was accepted")
    rows = {s: v for s, v in n["settings"].items() if v["pairs"] >= c.min_pairs}
    if not rows:
        return combine(
            [("translation", INCONCLUSIVE, f"no setting had {c.min_pairs} seeds in which both encoders trained"), lm],
            c.by_construction,
        )
    helps = [s for s, v in rows.items() if v["mean"] >= c.min_gain]
    hurts = [s for s, v in rows.items() if v["mean"] <= -c.min_gain]
    said = "BLEU bidirectional − unidirectional " + ", ".join(f"{v['mean']:+.2f} with {s}" for s, v in rows.items())
    if hurts or all(v["mean"] <= 0 for v in rows.values()):
        mt = ("translation", NOT_SUPPORTED, f"{said}: no gain, or a loss of at least {c.min_gain:g}")
    elif (helps and c.require == "any") or len(helps) == len(rows):
        mt = ("translation", SUPPORTED, f"{said} (+{c.min_gain:g} needed in {c.require} setting(s))")
    else:
        mt = (
            "translation",
            INCONCLUSIVE,
            f"{said}: below +{c.min_gain:g} in {'every' if c.require == 'any' else 'some'} setting",
        )
    return combine([mt, lm], c.by_construction)


def figures(claim_id: str, m: Bidirectional, numbers: dict[str, Any], ev: Evidence, out: Path) -> list:
    """The metric of each variant by seed, within each setting of `within`."""
    groups: dict[str, dict[str, dict[int, float]]] = {}
    for record in select(ev, m.study, {}):
        group = f"{m.within.rpartition('.')[2]}={setting(record, m.within)}"
        variant = f"{m.factor.rpartition('.')[2]}={setting(record, m.factor)}"
        value = record["metrics"].get(m.metric)
        if value is not None:
            groups.setdefault(group, {}).setdefault(variant, {})[record["seed"]] = value
    if not groups:
        return []
    from tasks.reporting import plots  # lazy: matplotlib, which validating a claims file never needs

    return [(plots.paired_metric(groups, m.metric, out / f"{claim_id}_bleu.png").name, f"{m.metric} by variant")]


KIND = ClaimKind(
    "bidirectional", Bidirectional, BidirectionalCriterion, measure, apply_criterion, figures, (LM_REFUSAL,)
)
