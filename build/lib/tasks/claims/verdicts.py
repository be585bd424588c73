"""The course's claims, measured and judged: each claim's measurement and criterion come from its kind (one module
per kind in tasks/claim_kinds/, found through tasks/claims/registry.py); here the evidence is read from MLflow
(`run_records`), the rules that hold for every claim are applied above its criterion (`claim_verdict`), and whether
the criterion came before the data is computed (`registration`). The thresholds come from the claims file
(tasks/claims/claims_file.py); nothing here is decided by hand.

Three rules hold for every claim, above its criterion:
- Training level. A claim judged on a model whose validation perplexity (median over its seeds that finished) is at
  or above the unigram floor of its runs (the run tag `data.unigram_ppl.valid`: the training split's word
  frequencies, no context), or whose reference model is more than 10% worse than the subject, is "not testable at
  this training level": such a model says how far its training got, not what its cell can do. Runs recorded before
  the floor was tagged have none: the floor is then unknown, not checked, and the claim says so
  (tasks/claim_kinds/base.py: training_level).
- By construction. A part of a measurement that holds by construction (the claims file's `by_construction`) is
  shown and never counted as support; if one fails, the instrument is in question and the claim is inconclusive.
- Pre-registration. A claim is called pre-registered only where its criterion was committed (git) before the first
  of the data it judges was recorded (the runs' start times in MLflow, and the commits that published a study's
  results before this store's runs): `registration`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.analysis.compare import cell_results
from tasks.claim_kinds.base import INCONCLUSIVE, NOT_TESTABLE_LEVEL, Evidence, Measurement, Verdict
from tasks.claims.claims_file import Claim
from tasks.claims.registry import KINDS
from tasks.record.outcome import TRAINED

PREREGISTERED = "pre-registered"
CRITERION_AFTER = "not pre-registered: the criterion was committed after the data"
CRITERION_UNCOMMITTED = "not pre-registered: the criterion is not committed"
ORDER_UNKNOWN = "order unknown"
NO_DATA = "no data to judge"


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


# ---- the verdict: the rules for every claim, then the kind's criterion ----


def claim_verdict(claim: Claim, measured: Measurement) -> Verdict:
    """The claim's verdict: not testable at this training level where a model it is judged on has not learned
    enough (the reason names the numbers); else missing data → inconclusive, with the reason; else its criterion.
    The parts that hold by construction are shown whatever the verdict (they do not depend on training)."""
    kind, rule = KINDS[claim.measure.kind], claim.rule()
    built = kind.apply_criterion(measured.numbers, rule).construction if getattr(rule, "by_construction", None) else ""
    if measured.untestable:
        return Verdict(NOT_TESTABLE_LEVEL, f"{measured.untestable}.", built)
    if measured.missing and kind.missing_decides:
        return Verdict(INCONCLUSIVE, f"{measured.missing}.", built)
    return kind.apply_criterion(measured.numbers, rule)


# ---- pre-registration: did the criterion come before the data? ----


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def registration(claim: Claim, measured: Measurement, ev: Evidence) -> Registration:
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
    claim: Claim
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


def claim_results(claims: list[Claim], ev: Evidence) -> list[ClaimResult]:
    """Each claim measured by its kind, its verdict and whether its criterion was pre-registered."""
    results = []
    for claim in claims:
        measured = KINDS[claim.measure.kind].measure(ev, claim.measure)
        results.append(ClaimResult(claim, measured, claim_verdict(claim, measured), registration(claim, measured, ev)))
    return results
