"""A claims study (conf/studies/lecture.yaml): every named study through the study flow (finished cells reused) ─►
open the claims' parent run ─► probe the finished, trained runs the measurements need; date each criterion from git
(tasks/claims/registration.py) ─► measurements, verdicts and pre-registration (tasks/claims/verdicts.py) ─► the claims
report. Which probes a claim needs, its kind says (tasks/claim_kinds/). Composes, decides nothing else."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.study import run_study
from rnnlab.runtime.env import project_dir
from tasks.claim_kinds.base import CONTEXT, GRADIENT_FLOW, LM_REFUSAL, SPECTRAL, Evidence
from tasks.claim_kinds.bidirectional import refusal
from tasks.claims.claims_file import Lecture, load_claims
from tasks.claims.registration import timeline
from tasks.claims.registry import KINDS
from tasks.claims.report import build_claims_report
from tasks.claims.steps import probe_context, probe_gradient_flow, probe_spectral_check
from tasks.claims.verdicts import claim_results, run_records
from tasks.kinds.steps import prepare_study
from tasks.record import tracking
from tasks.record.outcome import TRAINED, StudyFailed


@task(name="open-claims-run")
def open_claims_run(lecture: Lecture, executions: dict[str, str | None], recorded: bool = False) -> str:
    run_id = tracking.open_run(
        lecture.name,
        f"claims {lecture.name}",
        {"claims.file": lecture.source},
        {
            "rnnlab.role": "claims",
            "rnnlab.claims.studies": "recorded" if recorded else "run",
            "rnnlab.study": lecture.name,
            "rnnlab.claims_file": lecture.source,
            "rnnlab.question": lecture.config.title,
            **({"mlflow.note.content": lecture.config.title} if lecture.config.title else {}),
            **{f"rnnlab.execution.{name}": run for name, run in executions.items() if run},
        },
    )
    tracking.log_text(run_id, Path(lecture.source).read_text(encoding="utf-8"), "claims.yaml")
    return run_id


@task(name="gather-evidence")
def gather_records(lecture: Lecture, executions: dict[str, str | None]) -> dict[str, list[dict[str, Any]]]:
    return {name: run_records(name, run) if run else [] for name, run in executions.items()}


def latest_execution(study: str) -> str | None:
    try:
        parent, _ = tracking.study_runs(study)
    except LookupError:
        return None
    return parent.info.run_id


@flow(name="claims", log_prints=False)
def claims_flow(
    claims_file: str, overrides: list[str] | None = None, force: bool = False, recorded: bool = False
) -> dict[str, Any]:
    """Run every study the claims file names (reusing finished cells), probe, measure, judge and report. With
    `recorded`, run no study: judge each one's latest execution in the store, whatever code recorded it (a cell is
    keyed by the code that trains it, so after any code change the studies would otherwise all train again; the
    report names each execution's code version)."""
    lecture = load_claims(claims_file, overrides or [])
    corpora = {} if recorded else prepare_study([c for study in lecture.studies.values() for c in study.cells])
    return judge_claims(lecture, corpora, force, recorded)


# validate_parameters=False: the claims file and the corpora are already validated objects; Prefect records them.
@flow(name="claims", log_prints=False, validate_parameters=False)
def run_claims(
    lecture: Lecture, corpora: dict[str, Any], force: bool = False, recorded: bool = False
) -> dict[str, Any]:
    """The loaded claims file, its studies' corpora prepared (by data key, once for all its studies): what the
    command line hands over, having checked them before anything starts."""
    return judge_claims(lecture, corpora, force, recorded)


def judge_claims(lecture: Lecture, corpora: dict[str, Any], force: bool, recorded: bool) -> dict[str, Any]:
    started = time.perf_counter()
    executions: dict[str, str | None] = {}
    failures: list[str] = []
    for name in lecture.studies:
        if recorded:
            executions[name] = latest_execution(name)
            if executions[name] is None:
                failures.append(f"{name}: no recorded execution in {tracking.tracking_uri()}")
            continue
        print(f"rnnlab: claims '{lecture.name}': study '{name}'", file=sys.stderr, flush=True)
        try:
            executions[name] = run_study(lecture.studies[name], corpora, force)["parent_run_id"]
        except StudyFailed as err:  # its other cells are recorded: the claims are judged on what there is
            failures.append(f"{name}: {err}")
            executions[name] = latest_execution(name)
    parent_run_id = open_claims_run(lecture, executions, recorded)
    with tracking.closing(parent_run_id):
        ids = [c.id for c in lecture.config.claims]
        ev = Evidence(
            runs=gather_records(lecture, executions), timeline=timeline(lecture.source, ids, lecture.config.published)
        )
        for claim in lecture.config.claims:
            m = claim.measure
            wanted = KINDS[m.kind].probes  # which probes its kind reads
            trained = [r["run_id"] for r in ev.runs.get(getattr(m, "study", ""), []) if r["outcome"] == TRAINED]
            for run_id in trained:  # diverged and failed-to-learn runs are not probed (the report says how many)
                if CONTEXT in wanted and run_id not in ev.context:
                    ev.context[run_id] = probe_context(run_id)
                if GRADIENT_FLOW in wanted and run_id not in ev.gradflow:
                    ev.gradflow[run_id] = probe_gradient_flow(run_id)
            if SPECTRAL in wanted and ev.spectral is None:
                ev.spectral = probe_spectral_check(list(m.radii))
            if LM_REFUSAL in wanted:
                ev.refusals[m.lm_config] = refusal(Path(lecture.source).parent / m.lm_config)
        tracking.log_text(
            parent_run_id, json.dumps(ev.as_json(), indent=1, sort_keys=True, default=str), "evidence.json"
        )
        results = claim_results(lecture.config.claims, ev)
        tracking.set_tags(
            parent_run_id,
            {f"rnnlab.verdict.{r.claim.id}": r.verdict.verdict for r in results}
            | {f"rnnlab.registration.{r.claim.id}": r.registration.status for r in results},
        )
        if failures:
            tracking.log_text(parent_run_id, "\n".join(failures) + "\n", "failures.txt")
        report = build_claims_report(lecture.name, parent_run_id, str(project_dir() / "reports" / lecture.name))
    return {
        "study": lecture.name,
        "parent_run_id": parent_run_id,
        "executions": executions,
        "failures": failures,
        "claims": [r.row() for r in results],
        "report": report,
        "seconds": time.perf_counter() - started,
    }
