"""The course's claims, measured: one function per measurement kind turning the studies' runs and the probes' results
into numbers (with the seeds and runs behind them), and one criterion evaluation per kind that returns the verdict
and one sentence with the numbers. The thresholds come from the claims file (rnnlab/claims.py), written before the
runs; nothing here is decided by hand.

Everything works on `Evidence`: plain records (JSON), gathered from MLflow and the probes by the claims flow and
logged with the claims study, so the report recomputes every verdict from what was recorded. Missing data (a probe
not run, runs that predate per-layer gradient logging, a study whose runs all diverged) gives "inconclusive" with
the reason, never an error.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rnnlab import claims as schema
from rnnlab.config import ConfigError, load
from rnnlab.study import show
from tasks.compare import cell_results
from tasks.outcome import DIVERGED, TRAINED

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE = schema.VERDICTS


@dataclass
class Evidence:
    """What the measurements read: per study, one record per finished cell run; the probes' results by run id."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # study → records (see run_records)
    context: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id → tasks.probes.context_probe(...)
    gradflow: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id → gradient_flow_probe(...)
    spectral: dict[str, Any] | None = None  # tasks.probes.spectral_check()
    refusals: dict[str, str | None] = field(default_factory=dict)  # config file → the refusal, None if accepted

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Evidence":
        return cls(**data)


@dataclass(frozen=True)
class Measurement:
    numbers: dict[str, Any]  # the named figures the criterion reads
    runs: list[str]  # the run ids behind them
    text: str  # one line: what was measured, with its numbers and seeds
    missing: str | None = None  # why the data cannot decide (→ inconclusive)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str  # one sentence with the numbers


# ---- reading runs ----

def run_records(study: str, parent_run_id: str | None) -> list[dict[str, Any]]:
    """One record per finished cell run of a study execution: run id, variant, seed, outcome, factor values (as
    shown in tags), corpus, and its summary metrics."""
    _, grid, runs = cell_results(study, parent_run_id)
    factors = list(grid[0]["factors"]) if grid else []
    records = []
    for _, run in runs.iterrows():
        metrics = {c.removeprefix("metrics."): float(v) for c, v in run.items()
                   if c.startswith("metrics.") and isinstance(v, (int, float)) and not math.isnan(v)}
        records.append({"run_id": run["run_id"], "variant": run["tags.rnnlab.cell"], "seed": int(run["params.seed"]),
                        "outcome": run.get("tags.rnnlab.outcome") or TRAINED,
                        "factors": {f: run[f"tags.factor.{f}"] for f in factors},
                        "params": {c.removeprefix("params."): str(v) for c, v in run.items()
                                   if c.startswith("params.") and isinstance(v, str)},
                        "corpus": Path(str(run.get("params.data.corpus", ""))).name, "metrics": metrics})
    return sorted(records, key=lambda r: (r["variant"], r["seed"]))


def refusal(config_file: str | Path) -> str | None:
    """Try a language model with a bidirectional RNN: the config's refusal in words, or None if it was accepted."""
    try:
        load(config_file, ["model.bidirectional=true"])
    except ConfigError as err:
        return str(err)
    return None


def setting(record: dict[str, Any], key: str) -> str | None:
    """A run's value of a config key, as shown in tags: its factor's value, else its param (lower case: `True` and
    `None` as params are `true` and `null` as factors)."""
    value = record["factors"].get(key)
    if value is None:
        value = record.get("params", {}).get(key)
        value = "null" if value == "None" else value  # a param of None is logged as "None"; the string "none" stays
    return None if value is None else str(value).lower()


def select(ev: Evidence, study: str, where: dict[str, Any], outcome: str | None = TRAINED) -> list[dict[str, Any]]:
    wanted = {k: show(v).lower() for k, v in where.items()}
    return [r for r in ev.runs.get(study, []) if all(setting(r, k) == v for k, v in wanted.items())
            and (outcome is None or r["outcome"] == outcome)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def scalar(value: Any) -> float:
    """A probe figure that may be one number or one per layer (their median)."""
    if isinstance(value, (list, tuple)):
        found = [float(v) for v in value if v is not None]
        return median(found)
    return math.inf if value is None else float(value)


def seeds_of(pairs: dict[int, float]) -> str:
    return ", ".join(f"seed {s}: {fmt(v)}" for s, v in sorted(pairs.items()))


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "beyond the probed range" if value > 0 else "-inf"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def context_k(probe: dict[str, Any], level: str) -> float:
    """An effective context (`k_5pct`, `order_k_1pct`, ...) of a context probe; inf where no k tried reached the
    tolerance (the probe then gives the largest k tried and marks it `<level>_reached: False`)."""
    if probe.get(f"{level}_reached") is False:
        return math.inf
    return scalar(probe.get(level))


def probe_values(records: list[dict[str, Any]], probes: dict[str, dict], pick: Callable) -> dict[int, float]:
    return {r["seed"]: pick(probes[r["run_id"]]) for r in records if r["run_id"] in probes}


# ---- the measurements, one per kind ----

def measure_effective_context(ev: Evidence, m: schema.EffectiveContext) -> Measurement:
    subject, reference = (select(ev, m.study, {m.factor: cell}) for cell in (m.subject, m.reference))
    s = probe_values(subject, ev.context, lambda p: context_k(p, m.level))
    r = probe_values(reference, ev.context, lambda p: context_k(p, m.level))
    numbers = {"subject": median(list(s.values())), "reference": median(list(r.values())), "subject_seeds": s,
               "reference_seeds": r}
    text = (f"{m.level} of {m.subject}: {fmt(numbers['subject'])} (median; {seeds_of(s) or 'no seed'}); "
            f"of {m.reference}: {fmt(numbers['reference'])} ({seeds_of(r) or 'no seed'})")
    missing = None if s and r else (f"no context probe of a trained {m.subject if not s else m.reference} run in "
                                    f"study {m.study}")
    return Measurement(numbers, [x["run_id"] for x in subject + reference], text, missing)


def far_ratio(probe: dict[str, Any], far_k: int) -> float:
    """norm(k_far) / norm(k=1) of the trained model's gradient-flow curve, k_far the probed k nearest far_k."""
    ks, norms = probe.get("ks") or [], probe.get("norm_trained") or []
    if not ks or len(norms) != len(ks):
        return math.nan
    near = min(range(len(ks)), key=lambda i: abs(ks[i] - far_k))
    first = min(range(len(ks)), key=lambda i: abs(ks[i] - 1))  # k = 1: the probe's curve starts at k = 0
    norms = [scalar(n) for n in norms]
    return norms[near] / norms[first] if norms[first] > 0 else math.nan


def spectral_rates(spectral: dict[str, Any] | None) -> dict[float, float]:
    """radius → per-step rate of the spectral check (its rates given per radius, as a list or a mapping)."""
    if not spectral:
        return {}
    rates = spectral.get("rates", {})
    if isinstance(rates, dict):
        return {float(r): scalar(v) for r, v in rates.items()}
    return {float(r): scalar(v) for r, v in zip(spectral.get("radii", []), rates)}


def measure_vanishing_gradient(ev: Evidence, m: schema.VanishingGradient) -> Measurement:
    subject = select(ev, m.study, {m.factor: m.subject})
    rates = probe_values(subject, ev.gradflow, lambda p: scalar(p.get("rate_trained")))
    found = spectral_rates(ev.spectral)
    spectral = {r: found[r] for r in m.radii if r in found}
    unclipped = select(ev, m.explode_study, m.explode_where, outcome=None)
    diverged = [r for r in unclipped if r["outcome"] == DIVERGED]
    norms = [r["metrics"].get("max_grad_norm", math.nan) for r in diverged]
    numbers = {"rate": median(list(rates.values())), "rate_seeds": rates, "spectral": spectral,
               "diverged": len(diverged), "unclipped": len(unclipped),
               "diverged_share": len(diverged) / len(unclipped) if unclipped else math.nan,
               "max_grad_norm": max(norms) if norms else math.nan}
    where = ",".join(f"{k.rpartition('.')[2]}={show(v)}" for k, v in m.explode_where.items())
    text = (f"trained {m.subject}'s per-step gradient rate: {fmt(numbers['rate'])} (median; "
            f"{seeds_of(rates) or 'no seed'}); spectral check, rate by radius: "
            + (", ".join(f"{r:g} → {fmt(v)}" for r, v in spectral.items()) or "not run")
            + f"; {m.explode_study} {where}: {len(diverged)}/{len(unclipped)} diverged"
            + (f", largest pre-clip norm {fmt(numbers['max_grad_norm'])}" if norms else ""))
    missing = None if rates else f"no gradient-flow probe of a trained {m.subject} run in study {m.study}"
    return Measurement(numbers, [r["run_id"] for r in subject + unclipped], text, missing)


def measure_lstm_memory(ev: Evidence, m: schema.LSTMMemory) -> Measurement:
    numbers: dict[str, Any] = {}
    runs, parts = [], []
    for role, cell in (("subject", m.subject), ("reference", m.reference)):
        records = select(ev, m.study, {m.factor: cell})
        runs += [r["run_id"] for r in records]
        far = probe_values(records, ev.gradflow, lambda p: far_ratio(p, m.far_k))
        rate = probe_values(records, ev.gradflow, lambda p: scalar(p.get("rate_trained")))
        k = probe_values(records, ev.context, lambda p: context_k(p, m.level))
        numbers.update({f"{role}_far": median(list(far.values())), f"{role}_rate": median(list(rate.values())),
                        f"{role}_k": median(list(k.values())), f"{role}_seeds": len(far)})
        parts.append(f"{cell}: rate {fmt(numbers[f'{role}_rate'])}, norm(k={m.far_k})/norm(k=1) "
                     f"{fmt(numbers[f'{role}_far'])} ({seeds_of(far) or 'no seed'}), {m.level} {fmt(numbers[f'{role}_k'])}")
    missing = next((f"no gradient-flow and context probes of a trained {cell} run in study {m.study}"
                    for role, cell in (("subject", m.subject), ("reference", m.reference))
                    if math.isnan(numbers[f"{role}_far"]) or math.isnan(numbers[f"{role}_k"])), None)
    return Measurement(numbers, runs, "; ".join(parts) + " (medians over seeds)", missing)


def settings_of(records: list[dict[str, Any]], factor: str) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by their other factors' values (the setting), in the records' order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        key = ",".join(f"{k.rpartition('.')[2]}={v}" for k, v in r["factors"].items() if k != factor) or "all"
        groups.setdefault(key, []).append(r)
    return groups


def measure_clipping(ev: Evidence, m: schema.Clipping) -> Measurement:
    records = select(ev, m.study, m.where, outcome=None)
    rows = {}
    for name, group in settings_of(records, m.factor).items():
        off = [r for r in group if setting(r, m.factor) == show(m.unclipped).lower()]
        on = [r for r in group if setting(r, m.factor) == show(m.clipped).lower()]
        rows[name] = {"off": sum(r["outcome"] == DIVERGED for r in off), "off_runs": len(off),
                         "on": sum(r["outcome"] == DIVERGED for r in on), "on_runs": len(on)}
    text = "; ".join(f"{s}: diverged unclipped {v['off']}/{v['off_runs']}, clipped at {show(m.clipped)} {v['on']}/{v['on_runs']}"
                     for s, v in rows.items())
    missing = None if any(v["off_runs"] and v["on_runs"] for v in rows.values()) else \
        f"study {m.study} has no setting with both unclipped and clipped runs"
    return Measurement({"settings": rows}, [r["run_id"] for r in records], text, missing)


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


def measure_residual_depth(ev: Evidence, m: schema.ResidualDepth) -> Measurement:
    rows, runs = {}, []
    for depth in m.deep:
        without = select(ev, m.study, {m.depth: depth, m.factor: False})
        with_ = select(ev, m.study, {m.depth: depth, m.factor: True})
        runs += [r["run_id"] for r in without + with_]
        ratio, pairs = paired_ratio(without, with_, m.metric)
        share_without = median([s for s in map(lowest_share, without) if not math.isnan(s)])
        share_with = median([s for s in map(lowest_share, with_) if not math.isnan(s)])
        rows[str(depth)] = {"ppl_ratio": ratio, "pairs": pairs, "share_without": share_without,
                            "share_with": share_with, "share_ratio": share_without / share_with
                            if share_with and not math.isnan(share_with) else math.nan}
    text = "; ".join(f"{d} layers: {m.metric} without/with residual ×{fmt(v['ppl_ratio'])} ({v['pairs']} paired seeds), "
                     f"lowest layer's share of the gradient norm {fmt(v['share_without'])} without vs "
                     f"{fmt(v['share_with'])} with" for d, v in rows.items())
    missing = None if any(v["pairs"] for v in rows.values()) else \
        f"no seed in which both the plain and the residual deep stack trained in study {m.study}"
    return Measurement({"depths": rows}, runs, text, missing)


def measure_bidirectional(ev: Evidence, m: schema.Bidirectional) -> Measurement:
    lm_config = m.lm_config  # the refusals are keyed by the config as the claims file names it
    records = select(ev, m.study, {})
    rows = {}
    for name, group in settings_of(records, m.factor).items():
        on = {r["seed"]: r["metrics"].get(m.metric, math.nan) for r in group if setting(r, m.factor) == "true"}
        off = {r["seed"]: r["metrics"].get(m.metric, math.nan) for r in group if setting(r, m.factor) == "false"}
        diffs = {s: on[s] - off[s] for s in on if s in off and not math.isnan(on[s] - off[s])}
        rows[name] = {"mean": sum(diffs.values()) / len(diffs) if diffs else math.nan, "pairs": len(diffs),
                         "up": sum(d > 0 for d in diffs.values()), "diffs": diffs}
    refused = ev.refusals.get(lm_config)
    text = (("; ".join(f"{s}: bidirectional − unidirectional {m.metric} {v['mean']:+.2f} (mean over {v['pairs']} "
                       f"paired seeds, higher in {v['up']})" for s, v in rows.items() if v["pairs"])
             or "no seed in which both encoders trained")
            + "; a bidirectional language model: " + ("refused" if refused else "accepted" if lm_config in ev.refusals
                                                       else "not tried"))
    missing = None if any(v["pairs"] for v in rows.values()) and lm_config in ev.refusals else \
        (f"no seed in which both encoders trained in study {m.study}" if lm_config in ev.refusals
         else "the bidirectional language model was not tried")
    return Measurement({"settings": rows, "refused": refused, "tried": lm_config in ev.refusals},
                       [r["run_id"] for r in records], text, missing)


def measure_perplexity_scale(ev: Evidence, m: schema.PerplexityScale) -> Measurement:
    records = [dict(r, study=s) for s in m.studies for r in select(ev, s, {m.factor: m.subject})
               if "valid_ppl" in r["metrics"]]
    best = min(records, key=lambda r: r["metrics"]["valid_ppl"]) if records else None
    numbers = {"best": best["metrics"]["valid_ppl"] if best else math.nan, "corpus": best["corpus"] if best else None,
               "study": best["study"] if best else None, "run_id": best["run_id"] if best else None,
               "by_corpus": {c: min(r["metrics"]["valid_ppl"] for r in records if r["corpus"] == c)
                             for c in sorted({r["corpus"] for r in records})}}
    text = (f"best trained {m.subject} valid perplexity measured here: {fmt(numbers['best'])} on {best['corpus']} "
            f"(study {best['study']}, {best['variant']}, seed {best['seed']})" if best else
            f"no trained {m.subject} in {', '.join(m.studies)}")
    return Measurement(numbers, [best["run_id"]] if best else [], text, None)


def measure(claim: schema.Claim, ev: Evidence) -> Measurement:
    return MEASURES[claim.measure.kind](ev, claim.measure)


MEASURES: dict[str, Callable] = {"effective_context": measure_effective_context,
                                 "vanishing_gradient": measure_vanishing_gradient, "lstm_memory": measure_lstm_memory,
                                 "clipping": measure_clipping, "residual_depth": measure_residual_depth,
                                 "perplexity_scale": measure_perplexity_scale,
                                 "bidirectional": measure_bidirectional}


# ---- the criteria: (verdict, one sentence with the numbers) ----

def combine(parts: list[tuple[str, str]]) -> Verdict:
    """Parts of one claim: any refuted → not supported; all supported → supported; else inconclusive."""
    for verdict in (NOT_SUPPORTED, INCONCLUSIVE):
        found = [why for v, why in parts if v == verdict]
        if found:
            others = [why for v, why in parts if v != verdict]
            return Verdict(verdict, "; ".join(found + others) + ".")
    return Verdict(SUPPORTED, "; ".join(why for _, why in parts) + ".")


def judge_effective_context(n: dict[str, Any], c: schema.ContextCriterion) -> Verdict:
    s, r, seeds = n["subject"], n["reference"], len(n["subject_seeds"])
    if seeds < c.min_seeds or math.isnan(r):
        return Verdict(INCONCLUSIVE, f"the subject was probed in {seeds} seed(s) (at least {c.min_seeds} needed) and "
                                     f"the reference's k is {fmt(r)}.")
    ratio = s / r if r > 0 else math.inf
    said = f"median k {fmt(s)} against the reference's {fmt(r)} (ratio {fmt(ratio)})"
    if c.supported_range.low <= s <= c.supported_range.high and ratio <= c.max_ratio:
        return Verdict(SUPPORTED, f"{said}: within [{c.supported_range.low:g}, {c.supported_range.high:g}] and at "
                                  f"most {c.max_ratio:g} × the reference.")
    if not c.refuted_outside.low <= s <= c.refuted_outside.high or ratio >= c.refuted_ratio:
        return Verdict(NOT_SUPPORTED, f"{said}: outside [{c.refuted_outside.low:g}, {c.refuted_outside.high:g}] or "
                                      f"not below {c.refuted_ratio:g} × the reference.")
    return Verdict(INCONCLUSIVE, f"{said}: between the supported and the refuted zones.")


def judge_vanishing_gradient(n: dict[str, Any], c: schema.VanishingCriterion) -> Verdict:
    parts = []
    rate, seeds = n["rate"], len(n["rate_seeds"])
    if seeds < c.min_seeds:
        parts.append((INCONCLUSIVE, f"the trained rate was probed in {seeds} seed(s), {c.min_seeds} needed"))
    elif rate <= c.max_rate:
        parts.append((SUPPORTED, f"the trained per-step rate {fmt(rate)} ≤ {c.max_rate:g}: the gradient shrinks "
                                 f"exponentially with distance"))
    elif rate >= c.refuted_rate:
        parts.append((NOT_SUPPORTED, f"the trained per-step rate {fmt(rate)} ≥ {c.refuted_rate:g}: no decay"))
    else:
        parts.append((INCONCLUSIVE, f"the trained per-step rate {fmt(rate)} is between {c.max_rate:g} and "
                                    f"{c.refuted_rate:g}"))
    below = {float(r): v for r, v in n["spectral"].items() if float(r) < 1}
    if not below:
        parts.append((INCONCLUSIVE, "the spectral check at a radius below 1 was not run"))
    elif all(v < 1 for v in below.values()):
        parts.append((SUPPORTED, "with every eigenvalue below 1 the gradient decays (rate "
                                 + ", ".join(f"{fmt(v)} at radius {r:g}" for r, v in below.items()) + ")"))
    else:
        parts.append((NOT_SUPPORTED, "with eigenvalues below 1 the gradient did not decay (rate "
                                     + ", ".join(f"{fmt(v)} at radius {r:g}" for r, v in below.items()) + ")"))
    share = n["diverged_share"]
    if math.isnan(share) or share < c.min_diverged_share:
        parts.append((INCONCLUSIVE, f"the exploding side was not observed: {n['diverged']}/{n['unclipped']} "
                                    f"unclipped runs diverged"))
    else:
        parts.append((SUPPORTED, f"unclipped, {n['diverged']}/{n['unclipped']} runs diverged (largest pre-clip "
                                 f"gradient norm {fmt(n['max_grad_norm'])})"))
    return combine(parts)


def judge_lstm_memory(n: dict[str, Any], c: schema.MemoryCriterion) -> Verdict:
    if min(n["subject_seeds"], n["reference_seeds"]) < c.min_seeds:
        return Verdict(INCONCLUSIVE, f"probed in {n['subject_seeds']} and {n['reference_seeds']} seed(s); "
                                     f"{c.min_seeds} needed for each.")
    gain = n["subject_far"] / n["reference_far"] if n["reference_far"] > 0 else math.inf
    ratio = n["subject_k"] / n["reference_k"] if n["reference_k"] > 0 else math.inf
    said = (f"the far gradient kept ×{fmt(gain)} as much as the reference's and the effective context is "
            f"×{fmt(ratio)} the reference's")
    if gain >= c.min_far_gain and ratio >= c.min_context_ratio:
        return Verdict(SUPPORTED, f"{said} (thresholds ×{c.min_far_gain:g} and ×{c.min_context_ratio:g}).")
    if gain <= 1 or ratio <= 1:
        return Verdict(NOT_SUPPORTED, f"{said}: no better than the reference on at least one.")
    return Verdict(INCONCLUSIVE, f"{said}: better, but below the thresholds ×{c.min_far_gain:g} and "
                                 f"×{c.min_context_ratio:g}.")


def judge_clipping(n: dict[str, Any], c: schema.ClippingCriterion) -> Verdict:
    exploding, rescued, unrescued = [], [], []
    for name, v in n["settings"].items():
        if not (v["off_runs"] and v["on_runs"]) or v["off"] / v["off_runs"] < c.exploded_share:
            continue
        exploding.append(name)
        drop = v["off"] / v["off_runs"] - v["on"] / v["on_runs"]
        (rescued if drop >= c.min_drop else unrescued if drop <= 0 else []).append(f"{name} ({v['off']}/{v['off_runs']} → {v['on']}/{v['on_runs']} diverged)")
    if not exploding:
        return Verdict(INCONCLUSIVE, f"in no setting did at least {c.exploded_share:.0%} of the unclipped runs "
                                     "diverge: there was no explosion to fix.")
    said = (f"rescued: {', '.join(rescued) or 'none'}; not rescued: {', '.join(unrescued) or 'none'} "
            f"(of {len(exploding)} setting(s) that exploded unclipped)")
    if (rescued and c.require == "any") or len(rescued) == len(exploding):
        return Verdict(SUPPORTED, f"{said}.")
    if (c.require == "all" and unrescued) or len(unrescued) == len(exploding):
        return Verdict(NOT_SUPPORTED, f"{said}.")
    return Verdict(INCONCLUSIVE, f"{said}: clipping lowered the divergence by less than {c.min_drop:.0%}.")


def judge_residual_depth(n: dict[str, Any], c: schema.ResidualCriterion) -> Verdict:
    rows = {d: v for d, v in n["depths"].items() if v["pairs"]}
    if not rows:
        return Verdict(INCONCLUSIVE, "no deep setting had a seed in which both stacks trained.")
    ratios = {d: v["ppl_ratio"] for d, v in rows.items()}
    shares = {d: v["share_ratio"] for d, v in rows.items()}
    said = "perplexity without/with " + ", ".join(f"×{fmt(v)} at {d} layers" for d, v in ratios.items())
    if all(v >= c.min_ppl_ratio for v in ratios.values()):
        ppl = (SUPPORTED, f"{said} (≥ ×{c.min_ppl_ratio:g})")
    elif all(v <= c.refuted_ppl_ratio for v in ratios.values()):
        ppl = (NOT_SUPPORTED, f"{said}: residual connections did not help")
    else:
        ppl = (INCONCLUSIVE, f"{said}: not ≥ ×{c.min_ppl_ratio:g} at every depth")
    if any(math.isnan(v) for v in shares.values()):
        grad = (INCONCLUSIVE, "the per-layer gradient norms are missing (runs that predate per-layer logging)")
    else:
        said = "lowest layer's gradient share without/with " + ", ".join(f"×{fmt(v)} at {d}" for d, v in shares.items())
        if all(v <= c.max_share_ratio for v in shares.values()):
            grad = (SUPPORTED, f"{said} (≤ ×{c.max_share_ratio:g}: the lower layers get less without)")
        elif all(v >= c.refuted_share_ratio for v in shares.values()):
            grad = (NOT_SUPPORTED, f"{said}: the lower layers do not get less without")
        else:
            grad = (INCONCLUSIVE, f"{said}: not ≤ ×{c.max_share_ratio:g} at every depth")
    return combine([ppl, grad])


def judge_bidirectional(n: dict[str, Any], c: schema.BidirectionalCriterion) -> Verdict:
    if not n["tried"]:
        lm = (INCONCLUSIVE, "the bidirectional language model was not tried")
    elif n["refused"]:
        lm = (SUPPORTED, "a bidirectional language model is refused before training (it would see the future)")
    else:
        lm = (NOT_SUPPORTED, "a bidirectional language model was accepted")
    rows = {s: v for s, v in n["settings"].items() if v["pairs"] >= c.min_pairs}
    if not rows:
        return combine([(INCONCLUSIVE, f"no setting had {c.min_pairs} seeds in which both encoders trained"), lm])
    helps = [s for s, v in rows.items() if v["mean"] >= c.min_gain]
    hurts = [s for s, v in rows.items() if v["mean"] <= -c.min_gain]
    said = "BLEU bidirectional − unidirectional " + ", ".join(f"{v['mean']:+.2f} with {s}" for s, v in rows.items())
    if hurts or all(v["mean"] <= 0 for v in rows.values()):
        mt = (NOT_SUPPORTED, f"{said}: no gain, or a loss of at least {c.min_gain:g}")
    elif (helps and c.require == "any") or len(helps) == len(rows):
        mt = (SUPPORTED, f"{said} (+{c.min_gain:g} needed in {c.require} setting(s))")
    else:
        mt = (INCONCLUSIVE, f"{said}: below +{c.min_gain:g} in {'every' if c.require == 'any' else 'some'} setting")
    return combine([mt, lm])


def judge_perplexity_scale(n: dict[str, Any], c: schema.ScaleCriterion) -> Verdict:
    claimed = f"{c.claimed.low:g}–{c.claimed.high:g}"
    testable = {k: v for k, v in n["by_corpus"].items() if k in c.testable_on}
    if not testable:
        nearest = (f"the nearest measured figure is {fmt(n['best'])} on {n['corpus']}" if n["corpus"] else
                   "no trained LSTM was measured")
        return Verdict(NOT_TESTABLE, f"{c.why_not_here} The claimed {claimed} applies to {', '.join(c.testable_on)}; "
                                     f"{nearest}.")
    best = min(testable.values())
    inside, near = (c.claimed.low * (1 - c.tolerance), c.claimed.high * (1 + c.tolerance)), \
        (c.claimed.low * (1 - 2 * c.tolerance), c.claimed.high * (1 + 2 * c.tolerance))
    if inside[0] <= best <= inside[1]:
        return Verdict(SUPPORTED, f"best valid perplexity {fmt(best)}, within {claimed} (±{c.tolerance:.0%}).")
    if not near[0] <= best <= near[1]:
        return Verdict(NOT_SUPPORTED, f"best valid perplexity {fmt(best)}, outside {claimed} by more than "
                                      f"{2 * c.tolerance:.0%}.")
    return Verdict(INCONCLUSIVE, f"best valid perplexity {fmt(best)}, near but not within {claimed} (±{c.tolerance:.0%}).")


JUDGES: dict[str, Callable] = {"effective_context": judge_effective_context,
                               "vanishing_gradient": judge_vanishing_gradient, "lstm_memory": judge_lstm_memory,
                               "clipping": judge_clipping, "residual_depth": judge_residual_depth,
                               "bidirectional": judge_bidirectional, "perplexity_scale": judge_perplexity_scale}


def judge(claim: schema.Claim, measured: Measurement) -> Verdict:
    """The claim's verdict by its criterion; missing data → inconclusive, with the reason."""
    if measured.missing and claim.measure.kind != "perplexity_scale":
        return Verdict(INCONCLUSIVE, f"{measured.missing}.")
    return JUDGES[claim.measure.kind](measured.numbers, claim.rule())


@dataclass(frozen=True)
class ClaimResult:
    claim: schema.Claim
    measurement: Measurement
    verdict: Verdict

    def row(self) -> dict[str, Any]:
        return {"id": self.claim.id, "quote": self.claim.quote, "verdict": self.verdict.verdict,
                "reason": self.verdict.reason, "measured": self.measurement.text, "runs": self.measurement.runs}


def evaluate(lecture_claims: list[schema.Claim], ev: Evidence) -> list[ClaimResult]:
    results = []
    for claim in lecture_claims:
        measured = measure(claim, ev)
        results.append(ClaimResult(claim, measured, judge(claim, measured)))
    return results
