"""What every claim kind is and shares: the verdicts, the evidence a measurement reads (`Evidence`), what it gives
(`Measurement`) and what a criterion gives (`Verdict`); `ClaimKind`, the interface one module per kind fills (its
schemas, `measure`, `apply_criterion`, its figures and the probes it needs; registered in tasks/claims/registry.py);
and the helpers several kinds use: selecting runs, the training level, effective contexts, combining parts.

Everything works on `Evidence`: plain records (JSON), gathered from MLflow, git and the probes by the claims flow and
logged with the claims study, so the report recomputes every verdict from what was recorded. Missing data (a probe
not run, runs that predate per-layer gradient logging, a study whose runs all diverged) gives "inconclusive" with
the reason, never an error.

Imports stay light (pydantic, the standard library, the project's schemas): the claims file is validated with these
modules before anything trains. A figure imports the plotting module inside its function.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import model_validator

from rnnlab.schemas.config import Section
from rnnlab.schemas.study import show
from tasks.record.outcome import DIVERGED, TRAINED

# "not testable here": the claim is about a scale the lab does not train at (a criterion's verdict); "not testable at
# this training level": a model it is judged on learned no more than word frequencies, or its reference model is
# more than 10% worse than the subject (the lab's rule for every claim on trained models: `training_level`)
VERDICTS = ("supported", "not supported", "inconclusive", "not testable here", "not testable at this training level")
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE, NOT_TESTABLE_LEVEL = VERDICTS
LEVEL_METRIC, LEVEL_SPLIT = "valid_ppl", "valid"  # the training level: validation perplexity against its floor
REFERENCE_GAP = 0.10  # a reference model more than 10% worse (perplexity) than the subject: not a fair comparison

# What a kind asks the claims flow (flows/claims.py) to gather into the evidence: the context and gradient-flow
# probes of the trained runs of its `study`, the spectral check at its `radii`, the refusal of its `lm_config`
CONTEXT, GRADIENT_FLOW, SPECTRAL, LM_REFUSAL = "context", "gradflow", "spectral", "lm_refusal"
RUN_PROBES = (CONTEXT, GRADIENT_FLOW)


@dataclass
class Evidence:
    """What the measurements read: per study, one record per finished cell run; the probes' results by run id; when
    each criterion was committed (tasks/claims/registration.py: timeline)."""

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


# ---- the schemas: a measurement names its kind; the criterion's thresholds are the kind's own model ----


class KindMeasure(Section):
    """A claim's `measure:` (a kind's measurement model sets `kind` to its name as a Literal)."""

    def studies_read(self) -> list[str]:
        """The studies (by name) whose runs it reads: each must be one the claims file names."""
        return getattr(self, "studies", None) or [self.study]

    def files_read(self) -> dict[str, str]:
        """key → a file it reads, relative to the claims file: each must exist."""
        return {}


class Range(Section):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low <= self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        return self


# ---- the interface ----

Figures = Callable[[str, Any, dict[str, Any], Evidence, Path], list[tuple[str, str]]]


def no_figures(claim_id: str, m: Any, numbers: dict[str, Any], ev: Evidence, out: Path) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True)
class ClaimKind:
    """One kind of claim, as its module defines it. `measure(evidence, measurement)` gives the numbers and the text;
    `apply_criterion(numbers, criterion)` the verdict and one sentence with the numbers; `figures(claim id,
    measurement, numbers, evidence, folder)` writes the report's plots and gives (file name, what it shows)."""

    name: str  # the `kind:` of a claims file's measure
    measurement: type[KindMeasure]
    criterion: type[Section]
    measure: Callable[[Evidence, Any], Measurement]
    apply_criterion: Callable[[dict[str, Any], Any], Verdict]
    figures: Figures = no_figures
    probes: tuple[str, ...] = ()  # what the claims flow gathers for it (CONTEXT, GRADIENT_FLOW, SPECTRAL, LM_REFUSAL)
    missing_decides: bool = True  # missing data → inconclusive; False: the criterion judges it (perplexity_scale)

    def __post_init__(self) -> None:
        if get_args(self.measurement.model_fields["kind"].annotation) != (self.name,):
            raise TypeError(f"claim kind {self.name}: its measurement's `kind` is not Literal[{self.name!r}]")

    @property
    def probes_runs(self) -> bool:
        """Whether it probes its study's trained runs (the report then says which runs were left out)."""
        return any(p in RUN_PROBES for p in self.probes)


# ---- reading the evidence ----


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


# ---- effective contexts (effective_context, lstm_memory) ----


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


def settings_of(records: list[dict[str, Any]], factor: str) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by their other factors' values (the setting), in the records' order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        key = ",".join(f"{k.rpartition('.')[2]}={v}" for k, v in r["factors"].items() if k != factor) or "all"
        groups.setdefault(key, []).append(r)
    return groups


# ---- criteria in parts: (verdict, one sentence with the numbers) ----

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


# ---- figures several kinds draw ----


def probes_by_cell(ev: Evidence, probes: dict[str, dict], study: str, factor: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in ev.runs.get(study, []):
        if record["run_id"] in probes:
            found.setdefault(setting(record, factor) or "?", []).append(probes[record["run_id"]])
    return found


def context_figure(claim_id: str, m: Any, ev: Evidence, out: Path) -> list[tuple[str, str]]:
    """The context probes' curves, by cell; none where no run was probed."""
    from tasks.reporting import plots  # lazy: matplotlib, which validating a claims file never needs

    curves = probes_by_cell(ev, ev.context, m.study, m.factor)
    if not curves:
        return []
    return [
        (
            plots.context_by_cell(curves, out / f"{claim_id}_context.png").name,
            "perplexity vs context kept, relative to the full context",
        )
    ]


def gradient_flow_figure(claim_id: str, m: Any, ev: Evidence, out: Path) -> list[tuple[str, str]]:
    """The gradient-flow probes' curves, by cell; none where no run was probed."""
    from tasks.reporting import plots  # lazy: matplotlib, which validating a claims file never needs

    curves = probes_by_cell(ev, ev.gradflow, m.study, m.factor)
    if not curves:
        return []
    return [
        (
            plots.gradient_flow_by_cell(curves, out / f"{claim_id}_gradient_flow.png").name,
            "gradient norm vs distance, trained and at initialisation",
        )
    ]
