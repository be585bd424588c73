"""Claim kind `residual_depth`: residual connections let deep stacks train. At each deep setting, the
valid-perplexity ratio without / with residual connections (paired by seed) and the lowest layer's share of the
per-layer gradient norms (grad_norm_layer<i>_mean, logged by tasks/training/fitting.py) without / with."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rnnlab.schemas.config import Section
from tasks.claim_kinds.base import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    ClaimKind,
    Evidence,
    KindMeasure,
    Measurement,
    Verdict,
    combine,
    finished,
    fmt,
    median,
    select,
    setting,
    training_level,
)
from tasks.record.outcome import TRAINED


class ResidualDepth(KindMeasure):
    """At each deep setting: the valid-perplexity ratio without / with residual connections (paired by seed, over
    pairs that both trained, geometric mean) and the lowest layer's share of the per-layer gradient norms
    (grad_norm_layer<i>_mean, logged by tasks/training/fitting.py) without / with."""

    kind: Literal["residual_depth"]
    study: str = Field(min_length=1)
    factor: str = "model.residual"
    depth: str = "model.layers"
    deep: list[int] = Field([4, 8], min_length=1)
    metric: str = "valid_ppl"


class ResidualCriterion(Section):
    min_ppl_ratio: float = Field(
        gt=1, description="supported: ppl without / with residual ≥ this at every deep setting"
    )
    refuted_ppl_ratio: float = Field(1.0, gt=0, description="not supported: ≤ this at every deep setting")
    max_share_ratio: float = Field(
        gt=0, lt=1, description="supported: lowest layer's gradient share without / with ≤ this at every deep setting"
    )
    refuted_share_ratio: float = Field(1.0, gt=0, description="not supported: ≥ this at every deep setting")


def lowest_share(record: dict[str, Any]) -> float:
    """The lowest layer's share of the layers' mean gradient norms (1/L when every layer gets as much)."""
    means = {k: v for k, v in record["metrics"].items() if k.startswith("grad_norm_layer") and k.endswith("_mean")}
    total = sum(means.values())
    return means.get("grad_norm_layer0_mean", math.nan) / total if means and total > 0 else math.nan


def paired_ratio(without: list[dict[str, Any]], with_: list[dict[str, Any]], metric: str) -> tuple[float, int]:
    a = {r["seed"]: r["metrics"].get(metric, math.nan) for r in without}
    b = {r["seed"]: r["metrics"].get(metric, math.nan) for r in with_}
    logs = [math.log(a[s] / b[s]) for s in a if s in b and a[s] > 0 and b.get(s, 0) > 0]
    return (math.exp(sum(logs) / len(logs)) if logs else math.nan), len(logs)


def measure(ev: Evidence, m: ResidualDepth) -> Measurement:
    rows, runs, residual = {}, [], {}
    for depth in m.deep:
        without = select(ev, m.study, {m.depth: depth, m.factor: False})
        with_ = select(ev, m.study, {m.depth: depth, m.factor: True})
        runs += [r["run_id"] for r in without + with_]
        ratio_, pairs = paired_ratio(without, with_, m.metric)
        share_without = median([s for s in map(lowest_share, without) if not math.isnan(s)])
        share_with = median([s for s in map(lowest_share, with_) if not math.isnan(s)])
        rows[str(depth)] = {
            "ppl_ratio": ratio_,
            "pairs": pairs,
            "share_without": share_without,
            "share_with": share_with,
            "share_ratio": share_without / share_with if share_with and not math.isnan(share_with) else math.nan,
        }
        # the residual stack is the model the claim says trains: it must have learned (the plain one failing is
        # the effect, so it is not held to the floor)
        residual[f"{depth} layers, residual"] = finished(ev, m.study, {m.depth: depth, m.factor: True})
    text = "; ".join(
        f"{d} layers: {m.metric} without/with residual ×{fmt(v['ppl_ratio'])} ({v['pairs']} paired seeds), "
        f"lowest layer's share of the gradient norm {fmt(v['share_without'])} without vs "
        f"{fmt(v['share_with'])} with"
        for d, v in rows.items()
    )
    missing = (
        None
        if any(v["pairs"] for v in rows.values())
        else f"no seed in which both the plain and the residual deep stack trained in study {m.study}"
    )
    level, untestable = training_level({k: v for k, v in residual.items() if v})
    return Measurement({"depths": rows}, runs, text, missing, level, untestable)


def apply_criterion(n: dict[str, Any], c: ResidualCriterion) -> Verdict:
    rows = {d: v for d, v in n["depths"].items() if v["pairs"]}
    if not rows:
        return Verdict(INCONCLUSIVE, "no deep setting had a seed in which both stacks trained.")
    ratios = {d: v["ppl_ratio"] for d, v in rows.items()}
    shares = {d: v["share_ratio"] for d, v in rows.items()}
    said = "perplexity without/with " + ", ".join(f"×{fmt(v)} at {d} layers" for d, v in ratios.items())
    if all(v >= c.min_ppl_ratio for v in ratios.values()):
        ppl = ("perplexity", SUPPORTED, f"{said} (≥ ×{c.min_ppl_ratio:g})")
    elif all(v <= c.refuted_ppl_ratio for v in ratios.values()):
        ppl = ("perplexity", NOT_SUPPORTED, f"{said}: residual connections did not help")
    else:
        ppl = ("perplexity", INCONCLUSIVE, f"{said}: not ≥ ×{c.min_ppl_ratio:g} at every depth")
    if any(math.isnan(v) for v in shares.values()):
        grad = (
            "gradient_share",
            INCONCLUSIVE,
            "the per-layer gradient norms are missing (runs that predate per-layer logging)",
        )
    else:
        said = "lowest layer's gradient share without/with " + ", ".join(f"×{fmt(v)} at {d}" for d, v in shares.items())
        if all(v <= c.max_share_ratio for v in shares.values()):
            grad = (
                "gradient_share",
                SUPPORTED,
                f"{said} (≤ ×{c.max_share_ratio:g}: the lower layers get less without)",
            )
        elif all(v >= c.refuted_share_ratio for v in shares.values()):
            grad = ("gradient_share", NOT_SUPPORTED, f"{said}: the lower layers do not get less without")
        else:
            grad = ("gradient_share", INCONCLUSIVE, f"{said}: not ≤ ×{c.max_share_ratio:g} at every depth")
    return combine([ppl, grad])


def figures(claim_id: str, m: ResidualDepth, numbers: dict[str, Any], ev: Evidence, out: Path) -> list:
    """The median gradient norm per layer of the trained runs, by depth and residual."""
    import numpy as np  # lazy: numpy and matplotlib, which validating a claims file never needs

    from tasks.reporting import plots

    lines = {}
    for record in ev.runs.get(m.study, []):
        means = [record["metrics"].get(f"grad_norm_layer{i}_mean") for i in range(64)]
        means = means[: means.index(None)] if None in means else means
        if record["outcome"] == TRAINED and means:
            name = f"layers={setting(record, m.depth)},residual={setting(record, m.factor)}"
            lines.setdefault(name, []).append(means)
    if not lines:
        return []
    medians = {
        k: list(np.median(np.array(v), axis=0))
        for k, v in sorted(lines.items(), key=lambda kv: (int(kv[0].split(",")[0].split("=")[1]), kv[0]))
    }
    return [(plots.layer_norms(medians, out / f"{claim_id}_layers.png").name, "gradient norm per layer")]


KIND = ClaimKind("residual_depth", ResidualDepth, ResidualCriterion, measure, apply_criterion, figures)
