"""The course's claims, measured: one function per measurement kind turning the studies' runs and the probes' results
into numbers (with the seeds and runs behind them), and one criterion evaluation per kind that returns the verdict
and one sentence with the numbers. The thresholds come from the claims file (rnnlab/schemas/claims_file.py); nothing
here is decided by hand.

Everything works on `Evidence`: plain records (JSON), gathered from MLflow, git and the probes by the claims flow and
logged with the claims study, so the report recomputes every verdict from what was recorded. Missing data (a probe
not run, runs that predate per-layer gradient logging, a study whose runs all diverged) gives "inconclusive" with
the reason, never an error.

Three rules hold for every claim, above its criterion:
- Training level. A claim judged on a model whose validation perplexity (median over its seeds that finished) is at
  or above the unigram floor of its runs (the run tag `data.unigram_ppl.valid`: the training split's word
  frequencies, no context), or whose reference model is more than 10% worse than the subject, is "not testable at
  this training level": such a model says how far its training got, not what its cell can do. Runs recorded before
  the floor was tagged have none: the floor is then unknown, not checked, and the claim says so.
- By construction. A part of a measurement that holds by construction (the claims file's `by_construction`) is
  shown and never counted as support; if one fails, the instrument is in question and the claim is inconclusive.
- Pre-registration. A claim is called pre-registered only where its criterion was committed (git) before the first
  of the data it judges was recorded (the runs' start times in MLflow, and the commits that published a study's
  results before this store's runs): `registration`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rnnlab.schemas import claims_file as schema
from rnnlab.schemas.config import ConfigError, load
from rnnlab.schemas.study import show
from tasks.analysis.compare import cell_results
from tasks.record.outcome import DIVERGED, TRAINED

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE, NOT_TESTABLE_LEVEL = schema.VERDICTS
LEVEL_METRIC, LEVEL_SPLIT = "valid_ppl", "valid"  # the training level: validation perplexity against its floor
REFERENCE_GAP = 0.10  # a reference model more than 10% worse (perplexity) than the subject: not a fair comparison
PREREGISTERED = "pre-registered"
CRITERION_AFTER = "not pre-registered: the criterion was committed after the data"
CRITERION_UNCOMMITTED = "not pre-registered: the criterion is not committed"
ORDER_UNKNOWN = "order unknown"
NO_DATA = "no data to judge"


@dataclass
class Evidence:
    """What the measurements read: per study, one record per finished cell run; the probes' results by run id; when
    each criterion was committed (tasks/claims_registration.timeline)."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # study → records (see run_records)
    context: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id → tasks.claims.probes.context_probe(...)
    gradflow: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id → gradient_flow_probe(...)
    spectral: dict[str, Any] | None = None  # tasks.claims.probes.spectral_check()
    refusals: dict[str, str | None] = field(default_factory=dict)  # config file → the refusal, None if accepted
    timeline: dict[str, Any] = field(default_factory=dict)  # {"criteria": {claim id: ...}, "published": {...}}

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        return cls(**data)


@dataclass(frozen=True)
class Measurement:
    numbers: dict[str, Any]  # the named figures the criterion reads
    runs: list[str]  # the run ids behind them
    text: str  # one line: what was measured, with its numbers and seeds
    missing: str | None = None  # why the data cannot decide (→ inconclusive)
    level: str = ""  # the training level of the models judged, in words
    untestable: str | None = None  # why the models are not trained enough to judge (→ not testable at this level)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str  # one sentence with the numbers
    construction: str = ""  # the parts that hold by construction: shown, not counted


@dataclass(frozen=True)
class Registration:
    status: str  # PREREGISTERED, CRITERION_AFTER, CRITERION_UNCOMMITTED, ORDER_UNKNOWN or NO_DATA
    criterion: str | None  # when the criterion was committed (ISO), None where it was not or git cannot say
    commit: str | None
    data: str | None  # when the first of the data it judges was recorded (ISO)
    text: str  # both, in words, with their sources

    @property
    def preregistered(self) -> bool:
        return self.status == PREREGISTERED


# ---- reading runs ----


def run_records(study: str, parent_run_id: str | None) -> list[dict[str, Any]]:
    """One record per finished cell run of a study execution: run id, variant, seed, outcome, factor values (as
    shown in tags), corpus, its summary metrics, when it started (ISO, UTC) and its unigram floor per split (the tags
    data.unigram_ppl.<split>; {} for runs recorded before them)."""
    _, grid, runs = cell_results(study, parent_run_id)
    factors = list(grid[0]["factors"]) if grid else []
    records = []
    for _, run in runs.iterrows():
        metrics = {
            c.removeprefix("metrics."): float(v)
            for c, v in run.items()
            if c.startswith("metrics.") and isinstance(v, (int, float)) and not math.isnan(v)
        }
        floor = {
            c.removeprefix("tags.data.unigram_ppl."): float(v)
            for c, v in run.items()
            if c.startswith("tags.data.unigram_ppl.") and isinstance(v, str) and v
        }
        records.append(
            {
                "run_id": run["run_id"],
                "variant": run["tags.rnnlab.cell"],
                "seed": int(run["params.seed"]),
                "outcome": run.get("tags.rnnlab.outcome") or TRAINED,
                "factors": {f: run[f"tags.factor.{f}"] for f in factors},
                "params": {
                    c.removeprefix("params."): str(v)
                    for c, v in run.items()
                    if c.startswith("params.") and isinstance(v, str)
                },
                "corpus": Path(str(run.get("params.data.corpus", ""))).name,
                "metrics": metrics,
                "start_time": iso_time(run.get("start_time")),
                "floor": floor,
            }
        )
    return sorted(records, key=lambda r: (r["variant"], r["seed"]))


def iso_time(value: Any) -> str | None:
    """A run's start time (a pandas Timestamp, a datetime or epoch milliseconds) as ISO 8601 in UTC."""
    if value is None or value != value:  # NaN and NaT are not equal to themselves
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, UTC).isoformat()
    stamp = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    if not isinstance(stamp, datetime):
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


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
    return [
        r
        for r in ev.runs.get(study, [])
        if all(setting(r, k) == v for k, v in wanted.items()) and (outcome is None or r["outcome"] == outcome)
    ]


def finished(ev: Evidence, study: str, where: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs that finished their budget, trained or failed to learn (not diverged): a model's training level."""
    return [r for r in select(ev, study, where, outcome=None) if r["outcome"] != DIVERGED]


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


def interval95(draws: list[float]) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap draws, as order statistics (draws may be inf: never reached; NaN
    draws, an undefined ratio, are left out)."""
    ordered = sorted(d for d in draws if not math.isnan(d))
    if not ordered:
        return math.nan, math.nan
    return ordered[round(0.025 * (len(ordered) - 1))], ordered[round(0.975 * (len(ordered) - 1))]


def shown_interval(bounds: tuple[float, float]) -> str:
    return "" if math.isnan(bounds[0]) else f" [{fmt(bounds[0])}, {fmt(bounds[1])}]"


def context_k(probe: dict[str, Any], level: str) -> float:
    """An effective context (`k_5pct`, `order_k_1pct`, ...) of a context probe; inf where no k tried reached the
    tolerance (the probe then gives the largest k tried and marks it `<level>_reached: False`)."""
    if probe.get(f"{level}_reached") is False:
        return math.inf
    return scalar(probe.get(level))


def context_draws(probe: dict[str, Any], level: str) -> list[float] | None:
    """The bootstrap draws of an effective context (inf where a draw never reached it); None for probes recorded
    before the probe drew them (version 1)."""
    draws = probe.get(f"{level}_draws")
    return None if draws is None else [math.inf if d is None else float(d) for d in draws]


def median_draws(probes: list[dict[str, Any]], level: str) -> list[float] | None:
    """Draw by draw, the median over runs (seeds): the bootstrap of the median, over the positions. The probes of
    one corpus resample the same positions in the same order (one seed), so draw b of every run is one resample."""
    found = [context_draws(p, level) for p in probes]
    if not found or any(d is None for d in found) or len({len(d) for d in found}) != 1:
        return None
    return [statistics.median(column) for column in zip(*found)]


def ratio(a: float, b: float) -> float:
    if math.isinf(a) and math.isinf(b):
        return math.nan  # neither reached within the probed range: no ratio
    return a / b if b > 0 else math.inf


def probe_values(records: list[dict[str, Any]], probes: dict[str, dict], pick: Callable) -> dict[int, float]:
    return {r["seed"]: pick(probes[r["run_id"]]) for r in records if r["run_id"] in probes}


def probed(records: list[dict[str, Any]], probes: dict[str, dict]) -> list[dict[str, Any]]:
    return [probes[r["run_id"]] for r in records if r["run_id"] in probes]


# ---- the training level: which models can be judged at all ----


def level_of(records: list[dict[str, Any]]) -> tuple[float, float | None]:
    """(median validation perplexity over the runs, their unigram floor on that split or None where no run has it)."""
    ppl = median([r["metrics"][LEVEL_METRIC] for r in records if LEVEL_METRIC in r["metrics"]])
    floors = [float(r["floor"][LEVEL_SPLIT]) for r in records if (r.get("floor") or {}).get(LEVEL_SPLIT) is not None]
    return ppl, (median(floors) if floors else None)


def training_level(
    subjects: dict[str, list[dict[str, Any]]], references: dict[str, list[dict[str, Any]]] | None = None
) -> tuple[str, str | None]:
    """(the models' training level in words, why they are not trained enough to judge or None). Subjects and
    references: label → their finished runs. Each is checked against its unigram floor; each reference against the
    subjects' perplexity (a reference more than REFERENCE_GAP worse makes the comparison one of training, not of
    the models)."""
    said, problems, unknown, subject_ppl = [], [], [], []
    for role, models in (("subject", subjects), ("reference", references or {})):
        for label, records in models.items():
            ppl, floor = level_of(records)
            if math.isnan(ppl):
                said.append(f"{label}: no {LEVEL_METRIC}")
                continue
            words = f"{label} {fmt(ppl)}"
            if floor is None:
                unknown.append(label)
            else:
                words += f" (×{ppl / floor:.2f} the unigram floor {fmt(floor)})"
                if ppl >= floor:
                    problems.append(
                        f"{label}'s {LEVEL_METRIC} {fmt(ppl)} is at or above the unigram floor "
                        f"{fmt(floor)}: it learned no more than word frequencies"
                    )
            if role == "subject":
                subject_ppl.append(ppl)
            elif subject_ppl:
                gap = ppl / median(subject_ppl)
                words += f", ×{gap:.2f} the subject's"
                if gap > 1 + REFERENCE_GAP:
                    problems.append(
                        f"the reference {label} ({fmt(ppl)}) is ×{gap:.2f} the subject's "
                        f"{fmt(median(subject_ppl))}, more than {REFERENCE_GAP:.0%} worse: the comparison "
                        "would measure how far its training got, not the model"
                    )
            said.append(words)
    if not said:
        return "", None
    text = f"{LEVEL_METRIC} (median over the seeds that finished): " + "; ".join(said)
    if unknown:
        text += (
            f"; the unigram floor of {', '.join(unknown)} is unknown (runs recorded before they carried "
            f"data.unigram_ppl.{LEVEL_SPLIT}): not checked"
        )
    return text, "; ".join(problems) if problems else None


# ---- the measurements, one per kind ----


def other_level(level: str) -> str:
    return "k_1pct" if level == "k_5pct" else "k_5pct"


def context_figures(ev: Evidence, subject: list[dict], reference: list[dict], level: str) -> dict[str, Any]:
    """The effective contexts of two cells at `level`, medians over seeds, with 95% bootstrap intervals over the
    positions for each and for their ratio; the other level beside them."""
    s = probe_values(subject, ev.context, lambda p: context_k(p, level))
    r = probe_values(reference, ev.context, lambda p: context_k(p, level))
    probes_s, probes_r = probed(subject, ev.context), probed(reference, ev.context)
    draws_s, draws_r = median_draws(probes_s, level), median_draws(probes_r, level)
    keys = {p.get("positions_key") for p in probes_s + probes_r}
    both = draws_s is not None and draws_r is not None and len(draws_s) == len(draws_r)
    other = other_level(level)
    return {
        "subject": median(list(s.values())),
        "reference": median(list(r.values())),
        "subject_seeds": s,
        "reference_seeds": r,
        "ratio": ratio(median(list(s.values())), median(list(r.values()))) if s and r else math.nan,
        "subject_interval": interval95(draws_s) if draws_s else (math.nan, math.nan),
        "reference_interval": interval95(draws_r) if draws_r else (math.nan, math.nan),
        "ratio_interval": interval95([ratio(a, b) for a, b in zip(draws_s, draws_r)]) if both else (math.nan, math.nan),
        "paired": len(keys) == 1 and None not in keys,
        "positions": median([p.get("positions", math.nan) for p in probes_s + probes_r]),
        "other_level": other,
        "subject_other": median(list(probe_values(subject, ev.context, lambda p: context_k(p, other)).values())),
        "reference_other": median(list(probe_values(reference, ev.context, lambda p: context_k(p, other)).values())),
    }


def context_text(n: dict[str, Any], level: str, subject: str, reference: str) -> str:
    intervals = (
        ""
        if math.isnan(n["subject_interval"][0])
        else (
            f"; 95% bootstrap intervals over the {fmt(n['positions'])} positions"
            + (", paired (the same positions in every run)" if n["paired"] else "")
        )
    )
    return (
        f"{level} of {subject}: {fmt(n['subject'])}{shown_interval(n['subject_interval'])} (median; "
        f"{seeds_of(n['subject_seeds']) or 'no seed'}); of {reference}: {fmt(n['reference'])}"
        f"{shown_interval(n['reference_interval'])} ({seeds_of(n['reference_seeds']) or 'no seed'}); ratio "
        f"{fmt(n['ratio'])}{shown_interval(n['ratio_interval'])}{intervals}; beside it, {n['other_level']}: "
        f"{subject} {fmt(n['subject_other'])}, {reference} {fmt(n['reference_other'])}"
    )


def measure_effective_context(ev: Evidence, m: schema.EffectiveContext) -> Measurement:
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


def non_normal_text(n: dict[str, Any]) -> str:
    nn, contracted = n.get("non_normal"), n.get("contracted")
    if not nn or not contracted:
        return "non-normal check: not run"
    return (
        f"non-normal check: every eigenvalue {fmt(nn['eigenvalue'])}, σ₁ {fmt(nn['sigma'])}: ×{fmt(nn['peak'])} "
        f"at k = {nn['peak_k']}, ×{fmt(nn['last'])} at k = {nn['ks'][-1]}; scaled to σ₁ "
        f"{fmt(contracted['sigma'])}: at most ×{fmt(contracted['largest_step'])} per step"
    )


def measure_vanishing_gradient(ev: Evidence, m: schema.VanishingGradient) -> Measurement:
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


def measure_lstm_memory(ev: Evidence, m: schema.LSTMMemory) -> Measurement:
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


def settings_of(records: list[dict[str, Any]], factor: str) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by their other factors' values (the setting), in the records' order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        key = ",".join(f"{k.rpartition('.')[2]}={v}" for k, v in r["factors"].items() if k != factor) or "all"
        groups.setdefault(key, []).append(r)
    return groups


def measure_clipping(ev: Evidence, m: schema.Clipping) -> Measurement:
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


def measure_bidirectional(ev: Evidence, m: schema.Bidirectional) -> Measurement:
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


def measure_perplexity_scale(ev: Evidence, m: schema.PerplexityScale) -> Measurement:
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


def measure(claim: schema.Claim, ev: Evidence) -> Measurement:
    return MEASURES[claim.measure.kind](ev, claim.measure)


MEASURES: dict[str, Callable] = {
    "effective_context": measure_effective_context,
    "vanishing_gradient": measure_vanishing_gradient,
    "lstm_memory": measure_lstm_memory,
    "clipping": measure_clipping,
    "residual_depth": measure_residual_depth,
    "perplexity_scale": measure_perplexity_scale,
    "bidirectional": measure_bidirectional,
}


# ---- the criteria: (verdict, one sentence with the numbers) ----

Part = tuple[str, str, str]  # (the part's name, as `by_construction` names it; its verdict; why, with the numbers)


def combine(parts: list[Part], by_construction: list[str] | tuple[str, ...] = ()) -> Verdict:
    """Parts of one claim: any refuted → not supported; all supported → supported; else inconclusive. A part that
    holds by construction is shown beside the verdict, never counted; if one fails, the instrument is in question:
    inconclusive."""
    built = [(v, why) for name, v, why in parts if name in by_construction]
    counted = [(v, why) for name, v, why in parts if name not in by_construction]
    construction = "; ".join(why for _, why in built)
    broken = [why for v, why in built if v == NOT_SUPPORTED]
    if broken:
        return Verdict(
            INCONCLUSIVE,
            "a check that holds by construction failed, so the instrument is in question: " + "; ".join(broken) + ".",
            construction,
        )
    if not counted:
        return Verdict(
            INCONCLUSIVE, "every part holds by construction: nothing about the claim was measured.", construction
        )
    for verdict in (NOT_SUPPORTED, INCONCLUSIVE):
        found = [why for v, why in counted if v == verdict]
        if found:
            others = [why for v, why in counted if v != verdict]
            return Verdict(verdict, "; ".join(found + others) + ".", construction)
    return Verdict(SUPPORTED, "; ".join(why for _, why in counted) + ".", construction)


def judge_effective_context(n: dict[str, Any], c: schema.ContextCriterion) -> Verdict:
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


def judge_vanishing_gradient(n: dict[str, Any], c: schema.VanishingCriterion) -> Verdict:
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


def judge_lstm_memory(n: dict[str, Any], c: schema.MemoryCriterion) -> Verdict:
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


def judge_clipping(n: dict[str, Any], c: schema.ClippingCriterion) -> Verdict:
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


def judge_residual_depth(n: dict[str, Any], c: schema.ResidualCriterion) -> Verdict:
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


def judge_bidirectional(n: dict[str, Any], c: schema.BidirectionalCriterion) -> Verdict:
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


def judge_perplexity_scale(n: dict[str, Any], c: schema.ScaleCriterion) -> Verdict:
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


JUDGES: dict[str, Callable] = {
    "effective_context": judge_effective_context,
    "vanishing_gradient": judge_vanishing_gradient,
    "lstm_memory": judge_lstm_memory,
    "clipping": judge_clipping,
    "residual_depth": judge_residual_depth,
    "bidirectional": judge_bidirectional,
    "perplexity_scale": judge_perplexity_scale,
}


def judge(claim: schema.Claim, measured: Measurement) -> Verdict:
    """The claim's verdict: not testable at this training level where a model it is judged on has not learned
    enough (the reason names the numbers); else missing data → inconclusive, with the reason; else its criterion.
    The parts that hold by construction are shown whatever the verdict (they do not depend on training)."""
    rule = claim.rule()
    built = (
        JUDGES[claim.measure.kind](measured.numbers, rule).construction
        if getattr(rule, "by_construction", None)
        else ""
    )
    if measured.untestable:
        return Verdict(NOT_TESTABLE_LEVEL, f"{measured.untestable}.", built)
    if measured.missing and claim.measure.kind != "perplexity_scale":
        return Verdict(INCONCLUSIVE, f"{measured.missing}.", built)
    return JUDGES[claim.measure.kind](measured.numbers, rule)


# ---- pre-registration: did the criterion come before the data? ----


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def registration(claim: schema.Claim, measured: Measurement, ev: Evidence) -> Registration:
    """When the claim's criterion was committed (ev.timeline, from git) against when the first of the data it judges
    was recorded: the earliest start time of the runs behind the measurement (MLflow), or an earlier commit that
    published one of their studies' results. Pre-registered only where both are known and the criterion came
    first."""
    criterion = (ev.timeline.get("criteria") or {}).get(claim.id)
    behind = set(measured.runs)
    records = [(study, r) for study, found in ev.runs.items() for r in found if r["run_id"] in behind]
    starts = [parse_time(r.get("start_time")) for _, r in records]
    published = [
        (p["commit"], parse_time(p.get("date")))
        for study in sorted({s for s, _ in records})
        for p in (ev.timeline.get("published") or {}).get(study, [])
    ]
    sources = []
    if records:
        sources.append(
            (min(starts), f"the first of its {len(records)} runs started")
            if all(starts)
            else (None, f"{sum(s is None for s in starts)} of its {len(records)} runs have no start time")
        )
    sources += [
        (
            date,
            f"commit {commit[:7]} published its study's results"
            if date
            else f"commit {commit[:7]} published its study's results, but this checkout does not know when",
        )
        for commit, date in published
    ]
    known = [(t, why) for t, why in sources if t is not None]
    first = min(known, key=lambda tw: tw[0]) if known and all(t is not None for t, _ in sources) else None
    data = (
        f"{first[1]} {first[0].isoformat()}"
        if first
        else ("no run is behind it" if not sources else "unknown: " + "; ".join(why for t, why in sources if t is None))
    )
    if criterion is None or criterion.get("status") == "unknown":
        why = criterion["why"] if criterion else "the evidence has no record of when the criterion was committed"
        return Registration(ORDER_UNKNOWN, None, None, first[0].isoformat() if first else None, f"{why}; data: {data}")
    if criterion.get("status") == "uncommitted":
        return Registration(
            CRITERION_UNCOMMITTED,
            None,
            None,
            first[0].isoformat() if first else None,
            f"{criterion['why']}; data: {data}",
        )
    committed = parse_time(criterion.get("date"))
    said = f"criterion committed {committed.isoformat()} (commit {criterion['commit'][:7]}); data: {data}"
    if not sources:
        return Registration(NO_DATA, committed.isoformat(), criterion["commit"], None, said)
    if first is None:
        return Registration(ORDER_UNKNOWN, committed.isoformat(), criterion["commit"], None, said)
    status = PREREGISTERED if committed < first[0] else CRITERION_AFTER
    return Registration(status, committed.isoformat(), criterion["commit"], first[0].isoformat(), said)


@dataclass(frozen=True)
class ClaimResult:
    claim: schema.Claim
    measurement: Measurement
    verdict: Verdict
    registration: Registration

    def row(self) -> dict[str, Any]:
        return {
            "id": self.claim.id,
            "quote": self.claim.quote,
            "verdict": self.verdict.verdict,
            "reason": self.verdict.reason,
            "measured": self.measurement.text,
            "runs": self.measurement.runs,
            "by_construction": self.verdict.construction,
            "level": self.measurement.level,
            "registration": self.registration.status,
            "registration_text": self.registration.text,
        }


def evaluate(lecture_claims: list[schema.Claim], ev: Evidence) -> list[ClaimResult]:
    results = []
    for claim in lecture_claims:
        measured = measure(claim, ev)
        results.append(ClaimResult(claim, measured, judge(claim, measured), registration(claim, measured, ev)))
    return results
