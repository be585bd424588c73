"""The claims report, from what MLflow recorded and nothing else: the claims file and the evidence (runs and probe
results) logged on the claims' parent run; every measurement and verdict recomputed from them
(tasks/claims/verdicts.py), each claim's plots drawn by its kind (tasks/claim_kinds/).

A table (claim · measured · verdict · pre-registered · evidence), then one section per claim with its verdict, the
training level of the models it is judged on, the parts that hold by construction (shown, not counted), when its
criterion was committed against when its data was first recorded, its criterion, its verdict's meanings, its plot
and its runs. report.md with PNGs beside it and a self-contained report.html, byte-identical when
rebuilt from the same store (the study reports' writers: tasks/reporting/study_report.py, tasks/reporting/plots.py).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from rnnlab.schemas.config import load_yaml
from tasks.analysis.compare import md_table, read_text
from tasks.claim_kinds.base import REFERENCE_GAP, Evidence
from tasks.claims.claims_file import ClaimsConfig
from tasks.claims.registry import KINDS
from tasks.claims.verdicts import ClaimResult, claim_results
from tasks.record import tracking
from tasks.record.outcome import TRAINED, WORDS
from tasks.reporting.study_report import html, write_report


def claims_run(study: str, parent_run_id: str | None = None) -> Any:
    run = tracking.role_run(study, "claims", parent_run_id)
    if run is None:
        raise LookupError(
            f"no claims study '{study}' recorded in {tracking.tracking_uri()}"
            + (f" with run {parent_run_id}" if parent_run_id else "")
        )
    return run


def is_claims_study(study: str) -> bool:
    return tracking.role_run(study, "claims") is not None


def results_of(parent_run_id: str) -> tuple[ClaimsConfig, Evidence, list[ClaimResult]]:
    config = ClaimsConfig.model_validate(load_yaml(read_text(parent_run_id, "claims.yaml")))
    ev = Evidence.from_json(json.loads(read_text(parent_run_id, "evidence.json")))
    return config, ev, claim_results(config.claims, ev)


def figure(result: ClaimResult, ev: Evidence, out: Path) -> list[tuple[str, str]]:
    """The claim's plots, drawn by its kind: (file name, what it shows); none where its data is missing."""
    m = result.claim.measure
    return KINDS[m.kind].figures(result.claim.id, m, result.measurement.numbers, ev, out)


def not_probed(ev: Evidence, study: str) -> str:
    """Which runs of a study were left out of the probes, and why: only trained runs are probed."""
    left = [r for r in ev.runs.get(study, []) if r["outcome"] != TRAINED]
    if not left:
        return ""
    return (
        f" Not probed ({len(left)}, only trained runs are): "
        + ", ".join(f"`{r['variant']}` seed {r['seed']} ({WORDS.get(r['outcome'], r['outcome'])})" for r in left)
        + "."
    )


LEVEL_RULE = (
    f"a model the claim is judged on has a validation perplexity (median over its seeds) at or above the "
    f"unigram floor of its runs, or its reference model is more than {REFERENCE_GAP:.0%} worse than the "
    "subject (the lab's rule for every claim)"
)


def section(result: ClaimResult, ev: Evidence, out: Path) -> str:
    claim, meanings = result.claim, result.claim.verdicts
    words = [
        ("supported", meanings.supported),
        ("not supported", meanings.not_supported),
        ("inconclusive", meanings.inconclusive),
    ] + ([("not testable here", meanings.not_testable)] if meanings.not_testable else [])
    words.append(("not testable at this training level", LEVEL_RULE))
    criterion = ", ".join(f"{k} {json.dumps(v)}" for k, v in claim.rule().model_dump(mode="json").items())
    registration = result.registration
    text = [
        f"## {claim.id}: {claim.quote}\n",
        f"**Verdict: {result.verdict.verdict}.** {result.verdict.reason}\n",
        f"**Measured** ({claim.measure.kind}): {result.measurement.text}.",
        (not_probed(ev, claim.measure.study) if KINDS[claim.measure.kind].probes_runs else "") + "\n",
    ]
    if result.measurement.level:
        text.append(f"**Training level**: {result.measurement.level}.\n")
    if result.verdict.construction:
        text.append(f"**True by construction, not counted as support**: {result.verdict.construction}.\n")
    text += [
        f"**Pre-registered: {'yes' if registration.preregistered else 'no'}** ({registration.status}): "
        f"{registration.text}.\n",
        f"**Criterion**: {criterion}.\n",
        "\n".join(f"- *{v}*: {w}" for v, w in words) + "\n",
    ]
    if getattr(claim.measure, "literature", None):
        text.append(
            "From the literature, not measured here:\n\n" + "\n".join(f"- {x}" for x in claim.measure.literature) + "\n"
        )
    shown = figure(result, ev, out)
    text += [f"![{alt}]({name})\n" for name, alt in shown]
    if result.measurement.runs:
        text.append("Runs: " + ", ".join(f"`{r}`" for r in result.measurement.runs) + "\n")
    return "\n".join(text)


def render(study: str, parent_run_id: str | None, out: Path) -> tuple[Path, str]:
    parent = claims_run(study, parent_run_id)
    run_id = parent.info.run_id
    config, ev, results = results_of(run_id)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(
        {
            "claim": [f"{r.claim.id}: {r.claim.quote}" for r in results],
            "measured": [r.measurement.text for r in results],
            "verdict": [f"**{r.verdict.verdict}**: {r.verdict.reason}" for r in results],
            "pre-registered": [
                ("yes" if r.registration.preregistered else "no") + f" ({r.registration.status})" for r in results
            ],
            "evidence": [f"[section](#{r.claim.id}) · {len(r.measurement.runs)} runs" for r in results],
        }
    )
    executions = {
        k.removeprefix("rnnlab.execution."): v
        for k, v in sorted(parent.data.tags.items())
        if k.startswith("rnnlab.execution.")
    }
    sections = [
        f"# Claims `{study}`: {config.title}\n" if config.title else f"# Claims `{study}`\n",
        "Each claim of the course notes, the measurement that tests it, and the verdict its criterion (in the "
        "claims file) gives on the data. Verdicts: *supported*, *not supported*, *inconclusive* (between the "
        "two, or data missing), *not testable here* (a scale the lab does not train at), *not testable at "
        "this training level* (a model judged has not learned beyond the unigram floor, or its reference is "
        f"more than {REFERENCE_GAP:.0%} worse than the subject). Parts true by construction are shown, never "
        "counted as support. *Pre-registered* only where the criterion was committed (git) before the first "
        "of the data it judges was recorded (MLflow start times, and commits that published a study's "
        "results).\n",
        md_table(table),
    ]
    sections += [section(r, ev, out) for r in results]
    judged = (
        "Judged on each study's latest recorded execution, as recorded: no study was run (`--recorded`); "
        "the executions may come from different code versions.\n"
        if parent.data.tags.get("rnnlab.claims.studies") == "recorded"
        else "Each study was run (its finished cells reused) before the claims were judged.\n"
    )
    sections += [
        "## Studies\n",
        judged,
        md_table(
            pd.DataFrame(
                [(name, f"`{run}`", *code_of(run), f"`rnnlab report {name}`") for name, run in executions.items()],
                columns=["study", "execution (parent run)", "code version", "git commit", "its own report"],
            )
        )
        if executions
        else "none recorded\n",
    ]
    sections += [
        "## Reproduce\n",
        f"Rebuild this report from the store: `rnnlab report {study} --parent-run {run_id}`. "
        "Rerun (finished cells and probes reused): "
        f"`rnnlab study {parent.data.tags.get('rnnlab.claims_file', 'claims.yaml')}`.\n",
    ]
    text = "\n".join(sections)
    (out / "report.md").write_text(text, encoding="utf-8")
    (out / "report.html").write_text(html(text, out, study), encoding="utf-8")
    return out / "report.md", run_id


def code_of(run_id: str) -> tuple[str, str]:
    """(code version, short git commit) that an execution's parent run recorded."""
    try:
        tags = tracking.get_run(run_id).data.tags
    except LookupError:
        return "–", "–"
    commit = tags.get("git.commit", "–")
    dirty = " (uncommitted changes)" if tags.get("git.dirty") == "true" else ""
    return f"`{tags.get('rnnlab.code_version', '–')}`", f"`{commit[:8]}`{dirty}"


def terminal_table(rows: list[dict[str, Any]]) -> str:
    """claim · verdict · measured, one claim per paragraph, for a terminal."""
    lines = []
    for row in rows:
        lines.append(
            textwrap.fill(
                f"{row['id']:<14} {row['verdict'].upper():<18} {row['measured']}", width=118, subsequent_indent=" " * 34
            )
        )
    return "\n".join(lines)


@task(name="claims-report")
def build_claims_report(study: str, parent_run_id: str, out: str) -> str:
    return write_report(render, study, parent_run_id, out)
